package strategy

import "sync/atomic"

// RoundRobin gives every candidate equal shares in a fixed order. A candidate
// that took over a failed-over region's share appears once per share,
// interleaved smoothly.
type RoundRobin struct {
	seq []int32
	n   int
	ctr atomic.Uint64
}

// NewRoundRobin builds the policy; shares[i] >= 1 is candidate i's number of
// shares.
func NewRoundRobin(shares []int) *RoundRobin {
	all1 := true
	for _, s := range shares {
		if s != 1 {
			all1 = false
			break
		}
	}
	r := &RoundRobin{n: len(shares)}
	if !all1 {
		w := make([]int64, len(shares))
		for i, s := range shares {
			w[i] = int64(s)
		}
		r.seq = smoothSequence(w)
	}
	return r
}

// Pick implements Picker.
func (r *RoundRobin) Pick() int {
	if r.n == 0 {
		return -1
	}
	i := r.ctr.Add(1) - 1
	if r.seq == nil {
		return int(i % uint64(r.n))
	}
	return int(r.seq[i%uint64(len(r.seq))])
}
