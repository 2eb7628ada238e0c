package failover

import (
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/services/failover/decide"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// foEntry is one key of lb_failover as this replica knows it: the record
// (nil once deleted) and the revision it was last written or deleted at.
type foEntry struct {
	rec     *decide.Record
	rev     uint64
	created time.Time
}

// cache mirrors lb_regions, lb_health and lb_failover from KV watches. Every
// replica keeps it, so a standby that becomes leader decides at once from
// the state in KV.
type cache struct {
	mu        sync.Mutex
	regions   map[string]bool
	health    map[string]*model.Health
	failovers map[string]foEntry
	loaded    map[string]bool
	changed   chan struct{}
	onChange  func(active map[string]int)
}

func newCache(onChange func(active map[string]int)) *cache {
	return &cache{
		regions:   map[string]bool{},
		health:    map[string]*model.Health{},
		failovers: map[string]foEntry{},
		loaded:    map[string]bool{},
		changed:   make(chan struct{}, 1),
		onChange:  onChange,
	}
}

// notify wakes the decision loop; called with mu held.
func (c *cache) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
	if c.onChange != nil {
		active := map[string]int{}
		for _, e := range c.failovers {
			if e.rec != nil {
				active[e.rec.Reason]++
			}
		}
		c.onChange(active)
	}
}

func (c *cache) applyRegions(snapshot bool, entries []jetstream.KeyValueEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if snapshot {
		c.regions = map[string]bool{}
		c.loaded["regions"] = true
	}
	for _, e := range entries {
		if bus.IsDelete(e) {
			delete(c.regions, e.Key())
		} else {
			c.regions[e.Key()] = true
		}
	}
	c.notify()
}

func (c *cache) applyHealth(snapshot bool, entries []jetstream.KeyValueEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if snapshot {
		c.health = map[string]*model.Health{}
		c.loaded["health"] = true
	}
	for _, e := range entries {
		if bus.IsDelete(e) {
			delete(c.health, e.Key())
			continue
		}
		var h model.Health
		if json.Unmarshal(e.Value(), &h) != nil {
			continue
		}
		c.health[e.Key()] = &h
	}
	c.notify()
}

func (c *cache) applyFailovers(snapshot bool, entries []jetstream.KeyValueEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if snapshot {
		// Keys missing from a snapshot were deleted or purged meanwhile.
		seen := map[string]bool{}
		for _, e := range entries {
			seen[e.Key()] = true
		}
		for k, e := range c.failovers {
			if !seen[k] && e.rec != nil {
				delete(c.failovers, k)
			}
		}
		c.loaded["failover"] = true
	}
	for _, e := range entries {
		c.putLocked(e.Key(), e)
	}
	c.notify()
}

// putLocked applies one watched entry unless this replica already knows a
// newer revision of the key (from its own write).
func (c *cache) putLocked(key string, e jetstream.KeyValueEntry) {
	if cur, ok := c.failovers[key]; ok && e.Revision() <= cur.rev {
		return
	}
	next := foEntry{rev: e.Revision(), created: e.Created()}
	if !bus.IsDelete(e) {
		var r decide.Record
		if json.Unmarshal(e.Value(), &r) == nil {
			if r.FromRegion == "" {
				r.FromRegion = key
			}
			next.rec = &r
		}
	}
	c.failovers[key] = next
}

// wrote records this replica's own write (rec nil: a delete of revision
// rev) so that decisions do not wait for the watch to catch up.
func (c *cache) wrote(key string, rec *decide.Record, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.failovers[key]; ok && rev < cur.rev {
		return
	}
	c.failovers[key] = foEntry{rec: rec, rev: rev, created: time.Now()}
	c.notify()
}

// state returns the decision input, and false until every bucket was read
// once (deciding on a partial registry would end failovers of regions that
// only seem to be missing).
func (c *cache) state(now time.Time) (decide.State, map[string]uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded["regions"] || !c.loaded["health"] || !c.loaded["failover"] {
		return decide.State{}, nil, false
	}
	s := decide.State{Now: now, Regions: map[string]*model.Health{}, Failovers: map[string]decide.Record{}}
	for name := range c.regions {
		s.Regions[name] = c.health[name]
	}
	revs := map[string]uint64{}
	for k, e := range c.failovers {
		revs[k] = e.rev
		if e.rec != nil {
			s.Failovers[k] = *e.rec
		}
	}
	return s, revs, true
}

// entry returns the cached entry of key.
func (c *cache) entry(key string) (foEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.failovers[key]
	return e, ok
}

// active returns a copy of the active failovers with their entries.
func (c *cache) active() map[string]foEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.failovers)
	for k, e := range out {
		if e.rec == nil {
			delete(out, k)
		}
	}
	return out
}
