// Package table is the router's routing table: the control plane keeps the
// last state of the KV buckets here, and every change builds a new immutable
// Snapshot that the data plane loads with one atomic read per request.
package table

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrlb/mrlb/services/router/strategy"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// Snapshot is one immutable routing decision table. Nothing in it changes
// after it is published, except the atomics of the upstreams and pickers.
type Snapshot struct {
	// Strategy is the strategy in force.
	Strategy string
	// Candidates are the upstreams the picker chooses from: the regions in
	// rotation and not ejected, or in panic mode every region not ejected.
	Candidates []*Upstream
	// Panic is true when no region is in rotation.
	Panic bool
	// Regions is the number of known regions.
	Regions int
	picker  strategy.Picker
}

// Pick returns the upstream for the next request, or nil when there is none.
// It takes no lock and does not allocate.
func (s *Snapshot) Pick() *Upstream {
	i := s.picker.Pick()
	if i < 0 {
		return nil
	}
	return s.Candidates[i]
}

// Alternative returns a candidate for a retry that is not in tried and not
// ejected, or nil.
func (s *Snapshot) Alternative(tried []*Upstream) *Upstream {
	n := len(s.Candidates)
	if n == 0 {
		return nil
	}
	// A scan from a random start: asking the policy would shift its
	// sequence for every other request.
	start := int(rand.Uint64N(uint64(n)))
	for i := range n {
		u := s.Candidates[(start+i)%n]
		if !u.Ejected() && !slices.Contains(tried, u) {
			return u
		}
	}
	return nil
}

// Event is an outlier ejection or return for the service to publish.
type Event struct {
	Type   string // model.EventOutlierEjected or model.EventOutlierReturned
	Region string
	For    time.Duration
	At     time.Time
}

// Options configure a Table.
type Options struct {
	// NewUpstream builds the upstream (pool, metrics) of a region.
	NewUpstream func(name, endpoint string) (*Upstream, error)
	// Log receives rebuild problems and ejections.
	Log *slog.Logger
	// OnChange is called (without the lock) after the state changed.
	OnChange func()
	// Events receives ejections and returns; sends never block.
	Events chan<- Event
	// OnSnapshot is called after every rebuild (metrics).
	OnSnapshot func(*Snapshot)
}

// Table owns the state and builds snapshots. Its methods are safe for
// concurrent use; the control plane serialises on one mutex, the data plane
// only calls Snapshot.
type Table struct {
	opts    Options
	cur     atomic.Pointer[Snapshot]
	mu      sync.Mutex
	state   State
	ups     map[string]*Upstream
	ejected map[string]ejection
	count   map[string]int // ejections so far, for the growing ejection time
	prevKey string
	prev    strategy.Picker
}

// New returns a table with an empty state.
func New(opts Options) *Table {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	t := &Table{opts: opts, state: NewState(), ups: map[string]*Upstream{}, ejected: map[string]ejection{}, count: map[string]int{}}
	t.cur.Store(&Snapshot{Strategy: model.StrategyRoundRobin, picker: strategy.NewRoundRobin(nil)})
	return t
}

// Snapshot returns the snapshot in force.
func (t *Table) Snapshot() *Snapshot { return t.cur.Load() }

// State returns a copy of the current state.
func (t *Table) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state.clone()
}

// Replace swaps the whole state (boot from the state file).
func (t *Table) Replace(s State) {
	t.mu.Lock()
	t.state = s.clone()
	t.rebuildLocked()
	t.mu.Unlock()
	t.changed()
}

// ReplaceBucket replaces every key of one bucket (a watch's initial values),
// so keys deleted while this router was away disappear too.
func (t *Table) ReplaceBucket(bucket string, entries map[string][]byte) {
	t.ReplaceBuckets(map[string]map[string][]byte{bucket: entries})
}

// ReplaceBuckets replaces several buckets with one rebuild, so a router that
// loads its state never routes from a table that has the regions but not yet
// their health or failovers.
func (t *Table) ReplaceBuckets(contents map[string]map[string][]byte) {
	t.mu.Lock()
	for bucket, entries := range contents {
		switch bucket {
		case bus.BucketRegions:
			t.state.Regions = map[string]model.Region{}
		case bus.BucketConfig:
			t.state.Strategy = nil
		case bus.BucketHealth:
			t.state.Health = map[string]model.Health{}
		case bus.BucketFailover:
			t.state.Failover = map[string]model.Failover{}
		}
		for k, v := range entries {
			t.putLocked(bucket, k, v)
		}
	}
	t.rebuildLocked()
	t.mu.Unlock()
	t.changed()
}

// Put applies one KV update.
func (t *Table) Put(bucket, key string, value []byte) {
	t.mu.Lock()
	t.putLocked(bucket, key, value)
	t.rebuildLocked()
	t.mu.Unlock()
	t.changed()
}

// Delete applies one KV delete or purge.
func (t *Table) Delete(bucket, key string) {
	t.mu.Lock()
	switch bucket {
	case bus.BucketRegions:
		delete(t.state.Regions, key)
	case bus.BucketConfig:
		if key == bus.KeyStrategy {
			t.state.Strategy = nil
		}
	case bus.BucketHealth:
		delete(t.state.Health, key)
	case bus.BucketFailover:
		delete(t.state.Failover, key)
	}
	t.rebuildLocked()
	t.mu.Unlock()
	t.changed()
}

func (t *Table) putLocked(bucket, key string, value []byte) {
	var err error
	switch bucket {
	case bus.BucketRegions:
		var r model.Region
		if err = json.Unmarshal(value, &r); err == nil {
			if r.Region == "" {
				r.Region = key
			}
			t.state.Regions[key] = r
		}
	case bus.BucketConfig:
		if key != bus.KeyStrategy {
			return
		}
		var c model.StrategyConfig
		if err = json.Unmarshal(value, &c); err == nil {
			t.state.Strategy = &c
		}
	case bus.BucketHealth:
		var h model.Health
		if err = json.Unmarshal(value, &h); err == nil {
			t.state.Health[key] = h
			t.onHealthLocked(key, h)
		}
	case bus.BucketFailover:
		var f model.Failover
		if err = json.Unmarshal(value, &f); err == nil {
			if f.FromRegion == "" {
				f.FromRegion = key
			}
			t.state.Failover[key] = f
		}
	}
	if err != nil {
		t.opts.Log.Warn("ignoring malformed KV value", "bucket", bucket, "key", key, "err", err)
	}
}

// onHealthLocked feeds the check latency into the estimate and returns an
// ejected region early when a check after its ejection passed.
func (t *Table) onHealthLocked(name string, h model.Health) {
	up := t.ups[name]
	if up != nil && h.Last != nil && h.Last.Healthy && h.LatencyMS > 0 {
		up.Latency.ObserveMS(h.LatencyMS)
	}
	if e, ok := t.ejected[name]; ok && h.Status == model.StatusHealthy && h.Last != nil && h.Last.Healthy && h.Last.CheckedAt.After(e.since) {
		t.returnLocked(name, "health check passed")
	}
}

func (t *Table) changed() {
	if t.opts.OnChange != nil {
		t.opts.OnChange()
	}
}

func (t *Table) emit(ev Event) {
	if t.opts.Events == nil {
		return
	}
	select {
	case t.opts.Events <- ev:
	default:
		t.opts.Log.Warn("outlier event dropped: publisher is behind", "type", ev.Type, "region", ev.Region)
	}
}

// Eject removes u from this router's rotation for base·2^(n-1) (capped at
// maxD) where n counts its ejections. It refuses when u is not a candidate
// or is the last one, and reports whether it ejected.
func (t *Table) Eject(u *Upstream, base, maxD time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	snap := t.cur.Load()
	if t.ups[u.Name] != u || u.Ejected() || !slices.Contains(snap.Candidates, u) {
		u.failures.Store(0)
		return false
	}
	live := 0
	for _, c := range snap.Candidates {
		if !c.Ejected() {
			live++
		}
	}
	if live <= 1 {
		u.failures.Store(0)
		return false
	}
	t.count[u.Name]++
	d := base << min(t.count[u.Name]-1, 20)
	if d > maxD || d <= 0 {
		d = maxD
	}
	now := time.Now()
	t.ejected[u.Name] = ejection{since: now, until: now.Add(d)}
	u.ejected.Store(true)
	u.failures.Store(0)
	if u.Metrics != nil {
		u.Metrics.Ejections.Inc()
	}
	t.opts.Log.Warn("region ejected by outlier detection", "region", u.Name, "for", d.String(), "ejections", t.count[u.Name])
	t.emit(Event{Type: model.EventOutlierEjected, Region: u.Name, For: d, At: now})
	t.rebuildLocked()
	return true
}

// ReturnExpired brings back every ejected region whose time is up.
func (t *Table) ReturnExpired(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	returned := false
	for name, e := range t.ejected {
		if !now.Before(e.until) {
			t.returnLocked(name, "ejection time elapsed")
			returned = true
		}
	}
	if returned {
		t.rebuildLocked()
	}
}

func (t *Table) returnLocked(name, why string) {
	delete(t.ejected, name)
	if up := t.ups[name]; up != nil {
		up.ejected.Store(false)
		up.failures.Store(0)
	}
	t.opts.Log.Info("ejected region returns", "region", name, "reason", why)
	t.emit(Event{Type: model.EventOutlierReturned, Region: name, At: time.Now()})
}

// Upstreams returns every known upstream sorted by name.
func (t *Table) Upstreams() []*Upstream {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Upstream, 0, len(t.ups))
	for _, u := range t.ups {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *Upstream) int { return cmpString(a.Name, b.Name) })
	return out
}

// Close drops every pooled connection.
func (t *Table) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range t.ups {
		if u.Client != nil {
			u.Client.CloseIdleConnections()
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// rebuildLocked derives a new snapshot from the state and publishes it.
func (t *Table) rebuildLocked() {
	// Keep one upstream per region, replaced when its endpoint changes.
	for name, r := range t.state.Regions {
		if u, ok := t.ups[name]; ok && u.Endpoint == r.Endpoint {
			continue
		}
		u, err := t.opts.NewUpstream(name, r.Endpoint)
		if err != nil {
			t.opts.Log.Error("cannot route to region", "region", name, "err", err)
			if old := t.ups[name]; old != nil && old.Client != nil {
				old.Client.CloseIdleConnections()
			}
			delete(t.ups, name)
			continue
		}
		if old := t.ups[name]; old != nil {
			u.Latency.ObserveMS(old.Latency.MS())
			if old.Client != nil {
				defer old.Client.CloseIdleConnections()
			}
		}
		t.ups[name] = u
		delete(t.ejected, name)
	}
	for name, u := range t.ups {
		if _, ok := t.state.Regions[name]; !ok {
			if u.Client != nil {
				defer u.Client.CloseIdleConnections()
			}
			delete(t.ups, name)
			delete(t.ejected, name)
			delete(t.count, name)
		}
	}

	names := make([]string, 0, len(t.ups))
	for name := range t.ups {
		names = append(names, name)
	}
	slices.Sort(names)

	strategyName := model.StrategyRoundRobin
	var params json.RawMessage
	if t.state.Strategy != nil && t.state.Strategy.Strategy != "" {
		strategyName, params = t.state.Strategy.Strategy, t.state.Strategy.Parameters
	}
	if _, err := model.NormalizeStrategy(strategyName, params); err != nil {
		t.opts.Log.Error("invalid strategy in lb_config; using round_robin", "strategy", strategyName, "err", err)
		strategyName, params = model.StrategyRoundRobin, nil
	}

	inRot := map[string]bool{}
	for _, name := range names {
		h, hasH := t.state.Health[name]
		f, hasF := t.state.Failover[name]
		var hp *model.Health
		var fp *model.Failover
		if hasH {
			hp = &h
		}
		if hasF {
			fp = &f
		}
		if model.InRotation(hp, fp) && !t.ups[name].Ejected() {
			inRot[name] = true
		}
	}

	snap := &Snapshot{Strategy: strategyName, Regions: len(names)}
	idx := map[string]int{}
	var cands []strategy.Candidate
	add := func(name string) {
		u := t.ups[name]
		idx[name] = len(cands)
		snap.Candidates = append(snap.Candidates, u)
		cands = append(cands, strategy.Candidate{Shares: 1, Weight: t.state.Regions[name].Weight, Latency: &u.Latency})
	}
	for _, name := range names {
		if inRot[name] {
			add(name)
		}
	}
	if len(cands) == 0 && len(names) > 0 {
		// Panic routing: nothing is in rotation, so try every region not
		// ejected here (or every region if all are), with equal shares.
		snap.Panic = true
		strategyName, params = model.StrategyRoundRobin, nil
		for _, name := range names {
			if !t.ups[name].Ejected() {
				add(name)
			}
		}
		if len(cands) == 0 {
			for _, name := range names {
				add(name)
			}
		}
	} else {
		// A failed-over region's share follows its to_region (through
		// chains); with no live target it is spread over the rest.
		for _, name := range names {
			f, ok := t.state.Failover[name]
			if !ok {
				continue
			}
			target := f.ToRegion
			for hops := 0; target != "" && hops < len(names); hops++ {
				if _, live := idx[target]; live {
					break
				}
				next, ok := t.state.Failover[target]
				if !ok {
					target = ""
					break
				}
				target = next.ToRegion
			}
			if i, live := idx[target]; live && target != "" {
				cands[i].Shares++
				cands[i].Weight += t.state.Regions[name].Weight
			}
		}
		if strategyName == model.StrategyWeighted {
			// Weight 0 is never picked, not even for retries.
			keep := snap.Candidates[:0:0]
			var kc []strategy.Candidate
			for i, c := range cands {
				if c.Weight > 0 {
					keep = append(keep, snap.Candidates[i])
					kc = append(kc, c)
				}
			}
			snap.Candidates, cands = keep, kc
		}
	}

	// Reuse the picker when nothing it depends on changed, so a health
	// update does not reset round-robin positions or rebuild long cycles.
	key := fmt.Sprintf("%s|%s|%v", strategyName, params, snap.Panic)
	for i, c := range cands {
		key += fmt.Sprintf("|%p:%d:%g", snap.Candidates[i], c.Shares, c.Weight)
	}
	if key == t.prevKey && t.prev != nil {
		snap.picker = t.prev
		if r, ok := t.prev.(interface{ Refresh() }); ok {
			r.Refresh() // e.g. least_latency ranks the new check latencies
		}
	} else {
		p, err := strategy.New(strategyName, params, cands)
		if err != nil {
			t.opts.Log.Error("strategy build failed; using round_robin", "err", err)
			p, _ = strategy.New(model.StrategyRoundRobin, nil, cands)
		}
		snap.picker, t.prev, t.prevKey = p, p, key
	}
	snap.Strategy = strategyName
	t.cur.Store(snap)
	if t.opts.OnSnapshot != nil {
		t.opts.OnSnapshot(snap)
	}
}
