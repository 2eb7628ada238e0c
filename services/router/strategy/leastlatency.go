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

// RankRefresh is how old the cached ranking of a LeastLatency may get before
// a pick rebuilds it from the live estimates. Estimates change with every
// proxied request; scanning them on every pick would make a pick O(regions).
const RankRefresh = 50 * time.Millisecond

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
//
// The ranking (the indices tied for the lowest estimate) is computed by one
// O(regions) scan and cached; a pick reads the cache, so it is O(1) and does
// not allocate. It is rebuilt when the routing table rebuilds (Refresh: a
// health update with a new check latency), by a pick that finds it older
// than RankRefresh (one at a time; the others keep using the previous
// ranking; about one pick in 16 looks at the clock), and by the pick that
// lands on a region that had no estimate yet once it has one, so a new
// region is not flooded until the next refresh.
type LeastLatency struct {
	lat         []*Latency
	exploration float64
	rank        atomic.Pointer[ranking]
	building    atomic.Bool
}

// ranking is one immutable result of the scan.
type ranking struct {
	best    []int32 // candidates within TieTolerance of the lowest estimate
	unknown bool    // the lowest estimate is 0: best are unmeasured regions
	built   int64   // monotonic nanoseconds (since clockBase)
}

var clockBase = time.Now()

// nanotime is a cheap monotonic clock.
func nanotime() int64 { return int64(time.Since(clockBase)) }

// NewLeastLatency builds the policy; exploration is the share (0..0.5) of
// picks spread uniformly over all candidates.
func NewLeastLatency(lat []*Latency, exploration float64) *LeastLatency {
	p := &LeastLatency{lat: lat, exploration: exploration}
	p.rank.Store(p.scan(nanotime()))
	return p
}

// scan ranks the current estimates.
func (p *LeastLatency) scan(now int64) *ranking {
	best := math.Inf(1)
	for _, l := range p.lat {
		if v := l.MS(); v < best {
			best = v
		}
	}
	r := &ranking{unknown: best == 0, built: now}
	limit := best * (1 + TieTolerance)
	for i, l := range p.lat {
		if l.MS() <= limit {
			r.best = append(r.best, int32(i))
		}
	}
	if len(r.best) == 0 { // estimates moved between the two passes
		r.best = append(r.best, 0)
	}
	return r
}

// refresh rebuilds the ranking unless another pick is already doing it.
func (p *LeastLatency) refresh(now int64) {
	if p.building.CompareAndSwap(false, true) {
		p.rank.Store(p.scan(now))
		p.building.Store(false)
	}
}

// Refresh ranks the current estimates now.
func (p *LeastLatency) Refresh() { p.rank.Store(p.scan(nanotime())) }

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
	rk := p.rank.Load()
	// One pick in 16 (by bits of r the exploration draw does not use) reads
	// the clock, so the age check costs a fraction of a clock read per pick.
	if r&15 == 0 {
		if now := nanotime(); now-rk.built >= int64(RankRefresh) {
			p.refresh(now)
			rk = p.rank.Load()
		}
	}
	i := int(rk.best[0])
	if len(rk.best) > 1 {
		i = int(rk.best[rand.Uint64N(uint64(len(rk.best)))])
	}
	if rk.unknown && p.lat[i].MS() != 0 {
		// The first estimate of a new region arrived: rank again now.
		p.refresh(nanotime())
	}
	return i
}
