// Package schedule decides when each region is checked and keeps the due
// checks in a min-heap, so one goroutine with one timer can drive thousands
// of regions without a ticker per region.
//
// Checks are aligned to wall-clock slots: region R is due at every instant t
// with (t - Phase(R)) mod interval == 0, where Phase is a hash of the name.
// The hash spreads regions uniformly over the interval (a deterministic
// jitter: no burst at the top of the interval), and because every replica
// computes the same slots, a region handed from one replica to another keeps
// its cadence: it is neither probed twice nor skipped in that interval.
package schedule

import (
	"container/heap"
	"hash/fnv"
	"time"
)

// Phase is the region's offset within the interval, in [0, interval).
func Phase(key string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return time.Duration(mix(h.Sum64()) % uint64(interval))
}

// NextSlot is the first slot at or after t.
func NextSlot(t time.Time, interval, phase time.Duration) time.Time {
	if interval <= 0 {
		return t
	}
	ns := t.UnixNano() - int64(phase)
	rem := ns % int64(interval)
	if rem < 0 {
		rem += int64(interval)
	}
	if rem == 0 {
		return t
	}
	return t.Add(time.Duration(int64(interval) - rem))
}

// mix is the splitmix64 finaliser; FNV alone clusters short similar keys.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Item is one region in the queue.
type Item struct {
	Key   string
	Due   time.Time
	index int // -1 when not queued
}

// Queued reports whether the item is in a queue.
func (it *Item) Queued() bool { return it.index >= 0 }

// Queue is a min-heap of items by due time. It is not safe for concurrent
// use: the scheduler loop owns it.
type Queue struct{ h itemHeap }

// NewItem returns an item that is not queued yet.
func NewItem(key string) *Item { return &Item{Key: key, index: -1} }

// Len is the number of queued items.
func (q *Queue) Len() int { return len(q.h) }

// Set queues it at due, or moves it there if it is already queued.
func (q *Queue) Set(it *Item, due time.Time) {
	it.Due = due
	if it.index >= 0 {
		heap.Fix(&q.h, it.index)
		return
	}
	heap.Push(&q.h, it)
}

// Remove takes it out of the queue; removing an unqueued item is a no-op.
func (q *Queue) Remove(it *Item) {
	if it.index >= 0 {
		heap.Remove(&q.h, it.index)
	}
}

// Peek returns the earliest item, or nil.
func (q *Queue) Peek() *Item {
	if len(q.h) == 0 {
		return nil
	}
	return q.h[0]
}

// PopDue removes and returns the earliest item if it is due at now.
func (q *Queue) PopDue(now time.Time) *Item {
	if len(q.h) == 0 || q.h[0].Due.After(now) {
		return nil
	}
	return heap.Pop(&q.h).(*Item)
}

type itemHeap []*Item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].Due.Before(h[j].Due) }
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *itemHeap) Push(x any) {
	it := x.(*Item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *itemHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	it.index = -1
	*h = old[:n-1]
	return it
}
