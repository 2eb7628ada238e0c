package healthchecker

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"time"

	"github.com/mrlb/mrlb/services/healthchecker/rendezvous"
	"github.com/mrlb/mrlb/services/healthchecker/schedule"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// loop is the scheduler: one goroutine owns membership, assignment and the
// queue of due checks; checks themselves run in jobs that report back on
// done.
type loop struct {
	s   *Service
	ctx context.Context

	regionsCh chan kvEvent
	membersCh chan kvEvent
	done      chan jobDone

	members       map[string]memberSeen
	live          []string // sorted ids of live members, self included
	regionsLoaded bool
	membersLoaded bool
	entries       map[string]*entry
	q             schedule.Queue
	gen           uint64
	primeSem      chan struct{}
}

type memberSeen struct {
	seen      time.Time
	deadAfter time.Duration
}

// entry is a region this replica owns.
type entry struct {
	item     *schedule.Item
	gen      uint64
	phase    time.Duration
	primed   bool // its state was read since it became ours
	inflight bool
	forceNow bool // changed while a job ran: check when it ends
}

type jobDone struct {
	name    string
	gen     uint64
	checked bool      // a probe ran (else: a prime)
	lastAt  time.Time // when it was last checked, zero if never
	err     error     // prime failed
}

func newLoop(s *Service, ctx context.Context) *loop {
	return &loop{
		s:         s,
		ctx:       ctx,
		regionsCh: make(chan kvEvent),
		membersCh: make(chan kvEvent),
		done:      make(chan jobDone, 64),
		members:   map[string]memberSeen{},
		live:      []string{s.id},
		entries:   map[string]*entry{},
		primeSem:  make(chan struct{}, 32),
	}
}

func (l *loop) ready() bool { return l.regionsLoaded && l.membersLoaded }

func (l *loop) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sweep := time.NewTicker(l.s.heartbeat)
	defer sweep.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case ev := <-l.regionsCh:
			l.onRegions(ev)
		case ev := <-l.membersCh:
			l.onMembers(ev)
		case d := <-l.done:
			l.onDone(d)
		case <-sweep.C:
			l.refreshLive()
		case <-timer.C:
			l.fire()
		}
		if next := l.q.Peek(); next != nil {
			timer.Reset(time.Until(l.wakeAt(next.Due)))
		} else {
			timer.Reset(time.Hour)
		}
	}
}

// batchQuantum is the granularity of wake-ups: checks due within one
// quantum start together, so the loop wakes at most 1/quantum times a
// second and the NATS writes of a batch share syscalls. It bounds the
// lateness this adds (20 ms at most, 2% of the interval).
func batchQuantum(interval time.Duration) time.Duration {
	return min(max(interval/50, time.Millisecond), 20*time.Millisecond)
}

// wakeAt rounds due up to the next quantum boundary.
func (l *loop) wakeAt(due time.Time) time.Time {
	q := int64(batchQuantum(l.s.interval))
	ns := due.UnixNano()
	if r := ns % q; r != 0 {
		ns += q - r
	}
	return time.Unix(0, ns)
}

// ---- regions ----

func decodeRegion(name string, data []byte) (model.Region, bool) {
	var r model.Region
	if err := json.Unmarshal(data, &r); err != nil || model.ValidateRegionName(name) != nil {
		return r, false
	}
	r.Region = name
	return r, true
}

func sameSpec(a, b model.Region) bool {
	return a.Endpoint == b.Endpoint && a.HealthPath == b.HealthPath && reflect.DeepEqual(a.ExpectedStatus, b.ExpectedStatus)
}

func (l *loop) onRegions(ev kvEvent) {
	s := l.s
	if ev.snapshot {
		next := make(map[string]model.Region, len(ev.entries))
		for _, e := range ev.entries {
			if bus.IsDelete(e) {
				continue
			}
			if r, ok := decodeRegion(e.Key(), e.Value()); ok {
				next[e.Key()] = r
			} else {
				s.log.Warn("ignoring unreadable region", "region", e.Key())
			}
		}
		s.mu.Lock()
		old := s.regions
		s.regions = next
		s.mu.Unlock()
		wasLoaded := l.regionsLoaded
		l.regionsLoaded = true
		for name := range old {
			if _, ok := next[name]; !ok {
				l.removed(name)
			}
		}
		if !wasLoaded {
			l.becameReady()
			return
		}
		for name, r := range next {
			if o, ok := old[name]; !ok || !sameSpec(o, r) {
				l.upserted(name)
			}
		}
		l.publishAssignment()
		return
	}
	for _, e := range ev.entries {
		name := e.Key()
		r, ok := decodeRegion(name, e.Value())
		if bus.IsDelete(e) || !ok {
			if !bus.IsDelete(e) {
				s.log.Warn("ignoring unreadable region", "region", name)
			}
			s.mu.Lock()
			_, had := s.regions[name]
			delete(s.regions, name)
			s.mu.Unlock()
			if had {
				l.removed(name)
			}
			continue
		}
		s.mu.Lock()
		o, had := s.regions[name]
		s.regions[name] = r
		s.mu.Unlock()
		if !had || !sameSpec(o, r) {
			l.upserted(name)
		}
	}
	l.publishAssignment()
}

// upserted handles a region added or changed after start-up: if it is ours
// it is checked at once.
func (l *loop) upserted(name string) {
	if !l.ready() {
		return
	}
	if rendezvous.Owner(name, l.live) != l.s.id {
		l.drop(name)
		return
	}
	e := l.entries[name]
	if e == nil {
		e = l.add(name)
	}
	e.primed = true // a check loads the state itself
	if e.inflight {
		e.forceNow = true
		return
	}
	l.q.Set(e.item, time.Now())
}

// removed handles a region deleted from the registry.
func (l *loop) removed(name string) {
	s := l.s
	s.mu.Lock()
	delete(s.records, name)
	s.mu.Unlock()
	owned := l.entries[name] != nil
	l.drop(name)
	if owned || (l.ready() && rendezvous.Owner(name, l.live) == s.id) {
		s.spawn(func() {
			ctx, cancel := context.WithTimeout(l.ctx, 2*s.cfg.RequestTimeout.D())
			defer cancel()
			s.deleteHealth(ctx, name)
		})
	}
}

// ---- membership ----

func (l *loop) onMembers(ev kvEvent) {
	now := time.Now()
	if ev.snapshot {
		l.members = map[string]memberSeen{}
	}
	for _, e := range ev.entries {
		id := e.Key()
		if bus.IsDelete(e) {
			delete(l.members, id)
			continue
		}
		var rec memberRecord
		_ = json.Unmarshal(e.Value(), &rec)
		seen := now
		if ev.snapshot {
			// The entry may be old: judge it by when it was written.
			seen = minTime(e.Created(), now)
		}
		dead := time.Duration(rec.DeadAfterMS) * time.Millisecond
		if dead <= 0 {
			dead = l.s.deadAfter
		}
		l.members[id] = memberSeen{seen: seen, deadAfter: dead}
	}
	if ev.snapshot && !l.membersLoaded {
		l.membersLoaded = true
		l.live = l.liveMembers(now)
		l.s.m.members.Set(float64(len(l.live)))
		l.becameReady()
		return
	}
	l.refreshLive()
}

func (l *loop) liveMembers(now time.Time) []string {
	live := []string{l.s.id}
	for id, m := range l.members {
		if id != l.s.id && now.Sub(m.seen) <= m.deadAfter {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	return live
}

// refreshLive drops members whose heartbeats stopped and re-assigns when
// the set of live members changed.
func (l *loop) refreshLive() {
	now := time.Now()
	for id, m := range l.members {
		if id != l.s.id && now.Sub(m.seen) > 3*m.deadAfter {
			delete(l.members, id) // long gone; keep the map small
		}
	}
	live := l.liveMembers(now)
	if slices.Equal(live, l.live) {
		return
	}
	l.s.log.Info("members changed", "members", live)
	l.live = live
	l.s.m.members.Set(float64(len(live)))
	if l.ready() {
		l.rebalance()
	}
}

// ---- assignment ----

func (l *loop) becameReady() {
	if !l.ready() {
		return
	}
	l.rebalance()
	live := slices.Clone(l.live)
	s := l.s
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
		defer cancel()
		s.reconcile(ctx, func(name string) bool { return rendezvous.Owner(name, live) == s.id })
	})
}

// rebalance takes the regions this replica owns under the current members
// and lets go of the others.
func (l *loop) rebalance() {
	s := l.s
	s.mu.RLock()
	names := make([]string, 0, len(s.regions))
	for name := range s.regions {
		names = append(names, name)
	}
	s.mu.RUnlock()
	mine := make(map[string]bool, len(names))
	for _, name := range names {
		if rendezvous.Owner(name, l.live) == s.id {
			mine[name] = true
			if l.entries[name] == nil {
				e := l.add(name)
				l.q.Set(e.item, time.Now()) // prime
			}
		}
	}
	for name := range l.entries {
		if !mine[name] {
			l.drop(name)
		}
	}
	l.publishAssignment()
}

func (l *loop) add(name string) *entry {
	l.gen++
	e := &entry{item: schedule.NewItem(name), gen: l.gen, phase: schedule.Phase(name, l.s.interval)}
	l.entries[name] = e
	return e
}

func (l *loop) drop(name string) {
	e := l.entries[name]
	if e == nil {
		return
	}
	l.q.Remove(e.item)
	delete(l.entries, name)
	l.s.mu.Lock()
	delete(l.s.records, name) // another replica writes it now: the cache goes stale
	l.s.mu.Unlock()
}

func (l *loop) publishAssignment() {
	owned := make([]string, 0, len(l.entries))
	for name := range l.entries {
		owned = append(owned, name)
	}
	slices.Sort(owned)
	l.s.mu.Lock()
	l.s.owned = owned
	l.s.mu.Unlock()
	l.s.m.assigned.WithLabelValues(l.s.id).Set(float64(len(owned)))
}

// ---- dispatch ----

func (l *loop) fire() {
	now := time.Now()
	for it := l.q.PopDue(now); it != nil; it = l.q.PopDue(now) {
		if e := l.entries[it.Key]; e != nil {
			l.dispatch(it.Key, e, it.Due)
		}
	}
}

func (l *loop) dispatch(name string, e *entry, due time.Time) {
	s := l.s
	e.inflight = true
	gen := e.gen
	report := func(d jobDone) {
		d.name, d.gen = name, gen
		select {
		case l.done <- d:
		case <-l.ctx.Done():
		}
	}
	var job func()
	if !e.primed {
		job = func() {
			select {
			case l.primeSem <- struct{}{}:
			case <-l.ctx.Done():
				return
			}
			defer func() { <-l.primeSem }()
			ctx, cancel := context.WithTimeout(l.ctx, 2*s.cfg.RequestTimeout.D())
			defer cancel()
			last, err := s.prime(ctx, name)
			report(jobDone{lastAt: last, err: err})
		}
	} else {
		job = func() {
			r, ok := s.region(name)
			if !ok {
				report(jobDone{checked: true, lastAt: time.Now()})
				return
			}
			late := time.Since(due)
			s.m.lateness.Observe(late.Seconds())
			if s.opts.lateness != nil {
				s.opts.lateness(late)
			}
			res, err := s.checkNow(l.ctx, r)
			if err != nil && l.ctx.Err() != nil {
				return
			}
			report(jobDone{checked: true, lastAt: res.CheckedAt})
		}
	}
	if !s.spawn(job) {
		e.inflight = false
	}
}

func (l *loop) onDone(d jobDone) {
	e := l.entries[d.name]
	if e == nil || e.gen != d.gen {
		return // no longer ours
	}
	e.inflight = false
	now := time.Now()
	interval := l.s.interval
	if d.err != nil {
		if l.s.errLog.allow() {
			l.s.log.Warn("read region health failed, retrying", "region", d.name, "err", d.err)
		}
		l.q.Set(e.item, now.Add(min(interval, time.Second)))
		return
	}
	var due time.Time
	switch {
	case e.forceNow:
		e.forceNow = false
		e.primed = true
		due = now
	case !d.checked:
		e.primed = true
		if d.lastAt.IsZero() || now.Sub(d.lastAt) >= interval {
			// Never checked or overdue (its checker died): soon, but spread.
			due = now.Add(rand.N(min(interval/4, 2*time.Second) + 1))
		} else {
			due = schedule.NextSlot(maxTime(d.lastAt.Add(interval/2), now), interval, e.phase)
		}
	default:
		due = schedule.NextSlot(maxTime(d.lastAt.Add(interval/2), now), interval, e.phase)
	}
	l.q.Set(e.item, due)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
