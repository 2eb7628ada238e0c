package proxy

import (
	"sync/atomic"
	"time"
)

// Budget caps retries at Ratio of the requests of the last Window plus a
// floor, so a failing region cannot multiply the load on the others. It is
// lock-free: one-second buckets in a ring, reset by whoever first sees a new
// second (counts racing that reset may be lost, which only makes the budget
// a little more generous or strict for that second).
type Budget struct {
	ratio   float64
	floor   int64
	buckets []budgetBucket
}

type budgetBucket struct {
	sec     atomic.Int64
	reqs    atomic.Int64
	retries atomic.Int64
	_       [40]byte // keep buckets on separate cache lines
}

// NewBudget returns a budget of ratio (0.2 = 20 %) over window, plus floor
// retries per window.
func NewBudget(ratio float64, floor int, window time.Duration) *Budget {
	n := max(int(window/time.Second), 1)
	return &Budget{ratio: ratio, floor: int64(floor), buckets: make([]budgetBucket, n)}
}

func (b *Budget) bucket(sec int64) *budgetBucket {
	bk := &b.buckets[sec%int64(len(b.buckets))]
	if old := bk.sec.Load(); old != sec && bk.sec.CompareAndSwap(old, sec) {
		bk.reqs.Store(0)
		bk.retries.Store(0)
	}
	return bk
}

// Request counts one original request.
func (b *Budget) Request(now time.Time) { b.bucket(now.Unix()).reqs.Add(1) }

// Allow reports whether one more retry fits, and counts it if so.
func (b *Budget) Allow(now time.Time) bool {
	sec := now.Unix()
	cur := b.bucket(sec)
	var reqs, retries int64
	for i := range b.buckets {
		bk := &b.buckets[i]
		if s := bk.sec.Load(); s > sec-int64(len(b.buckets)) && s <= sec {
			reqs += bk.reqs.Load()
			retries += bk.retries.Load()
		}
	}
	if float64(retries) >= float64(b.floor)+b.ratio*float64(reqs) {
		return false
	}
	cur.retries.Add(1)
	return true
}
