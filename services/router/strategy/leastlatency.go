package strategy

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Alpha is the weight of a new observation in the latency estimate.
const Alpha = 0.2

// TieTolerance makes estimates within this fraction of the best count as a
// tie, so that regions of practically equal latency share traffic.
const TieTolerance = 0.05

// Latency is a region's decayed latency estimate in milliseconds, fed by
// health checks and by the requests this router proxies. It lives on the
// region, not on a snapshot, so it survives snapshot swaps; zero value =
// no estimate yet (which ranks first, so a new region gets measured).
type Latency struct {
	bits atomic.Uint64 // float64 bits; 0 = no estimate
}

// Observe folds one latency into the estimate (lock-free).
func (l *Latency) Observe(d time.Duration) { l.ObserveMS(float64(d) / float64(time.Millisecond)) }

// ObserveMS is Observe in milliseconds.
func (l *Latency) ObserveMS(ms float64) {
	if math.IsNaN(ms) || ms < 0 {
		return
	}
	ms = max(ms, 1e-3) // 0 means "unknown"
	for {
		old := l.bits.Load()
		next := ms
		if old != 0 {
			prev := math.Float64frombits(old)
			next = prev + Alpha*(ms-prev)
		}
		if l.bits.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// MS is the current estimate in milliseconds (0: unknown).
func (l *Latency) MS() float64 { return math.Float64frombits(l.bits.Load()) }

// LeastLatency sends traffic to the region with the lowest estimate; ties are
// spread evenly and an exploration share goes to a random candidate so that
// no estimate goes stale.
type LeastLatency struct {
	lat         []*Latency
	exploration float64
}

// NewLeastLatency builds the policy; exploration is the share (0..0.5) of
// picks spread uniformly over all candidates.
func NewLeastLatency(lat []*Latency, exploration float64) *LeastLatency {
	return &LeastLatency{lat: lat, exploration: exploration}
}

// Pick implements Picker.
func (p *LeastLatency) Pick() int {
	n := len(p.lat)
	switch n {
	case 0:
		return -1
	case 1:
		return 0
	}
	r := rand.Uint64()
	if p.exploration > 0 && float64(r>>11)/(1<<53) < p.exploration {
		return int(rand.Uint64N(uint64(n)))
	}
	// One pass: keep the best so far, and pick among estimates within
	// TieTolerance of it by reservoir sampling (a cheap xorshift per tie).
	best, bestIdx, ties := math.Inf(1), 0, 0
	x := r | 1
	for i, l := range p.lat {
		v := l.MS()
		switch {
		case v*(1+TieTolerance) < best:
			best, bestIdx, ties = v, i, 1
		case v <= best*(1+TieTolerance):
			ties++
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			if x%uint64(ties) == 0 {
				bestIdx = i
			}
			best = min(best, v)
		}
	}
	return bestIdx
}
