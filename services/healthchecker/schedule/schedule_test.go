package schedule

import (
	"fmt"
	"testing"
	"time"
)

func TestNextSlot(t *testing.T) {
	t.Parallel()
	iv := time.Second
	base := time.Unix(1000, 0)
	tests := []struct {
		desc  string
		t     time.Time
		phase time.Duration
		want  time.Time
	}{
		{"on a slot", base.Add(250 * time.Millisecond), 250 * time.Millisecond, base.Add(250 * time.Millisecond)},
		{"just after a slot", base.Add(251 * time.Millisecond), 250 * time.Millisecond, base.Add(1250 * time.Millisecond)},
		{"before the phase", base, 250 * time.Millisecond, base.Add(250 * time.Millisecond)},
		{"zero phase", base.Add(time.Nanosecond), 0, base.Add(time.Second)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if got := NextSlot(tc.t, iv, tc.phase); !got.Equal(tc.want) {
				t.Fatalf("NextSlot = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPhaseSpreadsEvenly(t *testing.T) {
	t.Parallel()
	const n, buckets = 10000, 10
	iv := time.Second
	var counts [buckets]int
	for i := range n {
		p := Phase(fmt.Sprintf("region-%d", i), iv)
		if p < 0 || p >= iv {
			t.Fatalf("phase %v out of range", p)
		}
		counts[p*buckets/iv]++
	}
	for i, c := range counts {
		if c < n/buckets*8/10 || c > n/buckets*12/10 {
			t.Fatalf("bucket %d has %d of %d phases: %v", i, c, n, counts)
		}
	}
}

func TestQueueOrder(t *testing.T) {
	t.Parallel()
	var q Queue
	base := time.Unix(0, 0)
	a, b, c := NewItem("a"), NewItem("b"), NewItem("c")
	q.Set(a, base.Add(3))
	q.Set(b, base.Add(1))
	q.Set(c, base.Add(2))
	q.Set(a, base) // move to the front
	q.Remove(c)
	q.Remove(c) // no-op
	if c.Queued() {
		t.Fatal("removed item still queued")
	}
	if it := q.PopDue(base.Add(-1)); it != nil {
		t.Fatalf("popped %s before due", it.Key)
	}
	var got []string
	for it := q.PopDue(base.Add(10)); it != nil; it = q.PopDue(base.Add(10)) {
		got = append(got, it.Key)
	}
	if fmt.Sprint(got) != "[a b]" || q.Len() != 0 {
		t.Fatalf("order %v, len %d", got, q.Len())
	}
}
