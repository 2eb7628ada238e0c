package healthchecker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/services/healthchecker/probe"
	"github.com/mrlb/mrlb/services/healthchecker/state"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// maxWriteAttempts bounds the compare-and-set loop on lb_health.
const maxWriteAttempts = 5

// checkNow probes r and records the result like any other check. When ctx
// ends during the probe (shutdown) the result says nothing about the region
// and is dropped.
func (s *Service) checkNow(ctx context.Context, r model.Region) (model.CheckResult, error) {
	res := s.prober.Check(ctx, r)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("check %s: %w", r.Region, err)
	}
	s.m.checks.WithLabelValues(r.Region, probe.Outcome(res)).Inc()
	if res.StatusCode > 0 {
		s.m.latency.Observe(res.LatencyMS / 1000)
	}
	// Recording outlives a cancelled caller: the probe happened, and a
	// half-recorded transition would lose its event.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*s.cfg.RequestTimeout.D())
	defer cancel()
	if err := s.record(rctx, res); err != nil && !errors.Is(err, errRegionGone) {
		s.m.recordErrors.Inc()
		if s.errLog.allow() {
			s.log.Warn("record check result", "region", r.Region, "err", err)
		}
		return res, err
	}
	return res, nil
}

// record publishes res on the results stream and applies it to the
// region's state with a revision-checked write.
func (s *Service) record(ctx context.Context, res model.CheckResult) error {
	name := res.Region
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if _, err := s.js.PublishAsync(bus.HealthResultsSubject(name), data); err != nil {
		s.m.publishErrors.Inc()
		if s.errLog.allow() {
			s.log.Warn("publish check result", "region", name, "err", err)
		}
	}

	rec := s.recordFor(name)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for range maxWriteAttempts {
		if !rec.loaded {
			if err := s.load(ctx, name, rec); err != nil {
				return err
			}
		}
		if _, ok := s.region(name); !ok {
			return errRegionGone
		}
		var prev model.Health
		if rec.health != nil {
			prev = *rec.health
		}
		next, tr := state.Apply(prev, res, s.th)
		doc, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode health: %w", err)
		}
		var rev uint64
		if rec.rev == 0 {
			rev, err = s.kvHealth.Create(ctx, name, doc)
		} else {
			rev, err = s.kvHealth.Update(ctx, name, doc, rec.rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.m.conflicts.Inc()
			rec.loaded = false
			continue
		}
		if err != nil {
			rec.loaded = false
			return fmt.Errorf("write %s health: %w", name, err)
		}
		rec.health, rec.rev = &next, rev
		if tr != nil {
			s.announce(ctx, name, tr, rev, res.CheckedAt)
		}
		return nil
	}
	return fmt.Errorf("write %s health: %d revision conflicts in a row", name, maxWriteAttempts)
}

// load reads the region's state into rec; a missing key is a region never
// checked (revision 0, so the next write creates it).
func (s *Service) load(ctx context.Context, name string, rec *record) error {
	e, err := s.kvHealth.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rec.health, rec.rev = nil, 0
	case err != nil:
		return fmt.Errorf("read %s health: %w", name, err)
	default:
		rec.rev = e.Revision()
		var h model.Health
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			s.log.Warn("unreadable health entry, starting over", "region", name, "err", err)
			rec.health = nil
		} else {
			rec.health = &h
		}
	}
	rec.loaded = true
	return nil
}

// prime refreshes the cached state of a region this replica starts to own
// and returns when it was last checked (by anyone).
func (s *Service) prime(ctx context.Context, name string) (time.Time, error) {
	rec := s.recordFor(name)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if err := s.load(ctx, name, rec); err != nil {
		return time.Time{}, err
	}
	if rec.health == nil || rec.health.Last == nil {
		return time.Time{}, nil
	}
	return rec.health.Last.CheckedAt, nil
}

// announce publishes the transition once: the message id is derived from
// the revision of the write that made it, so retries are de-duplicated.
func (s *Service) announce(ctx context.Context, name string, tr *state.Transition, rev uint64, at time.Time) {
	s.m.transitions.WithLabelValues(tr.To).Inc()
	s.log.Info("health changed", "region", name, "from", tr.From, "to", tr.To, "reason", tr.Reason)
	ev := model.Event{Type: model.EventHealthChanged, At: at, Region: name, From: tr.From, To: tr.To, Reason: tr.Reason}
	id := fmt.Sprintf("health-%s-%d", name, rev)
	wait := 50 * time.Millisecond
	for {
		err := bus.PublishEvent(ctx, s.js, bus.HealthEventsSubject(name), ev, id)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			s.m.publishErrors.Inc()
			s.log.Error("health.changed not published", "region", name, "from", tr.From, "to", tr.To, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// deleteHealth removes the state of a removed region, unless it was added
// back meanwhile.
func (s *Service) deleteHealth(ctx context.Context, name string) {
	if _, ok := s.region(name); ok {
		return
	}
	if err := s.kvHealth.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		s.log.Warn("delete health of removed region", "region", name, "err", err)
		return
	}
	// Its history goes too, so a region added again under the same name
	// does not show the old endpoint's results.
	if st, err := s.js.Stream(ctx, bus.StreamHealth); err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSubject(bus.HealthResultsSubject(name)))
		if err != nil {
			s.log.Warn("purge history of removed region", "region", name, "err", err)
		}
	}
	s.log.Info("region removed, health and history deleted", "region", name)
}

// reconcile deletes health entries of regions that no longer exist and that
// this replica owns, for removals that happened while no replica ran.
func (s *Service) reconcile(ctx context.Context, owns func(string) bool) {
	lister, err := s.kvHealth.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			s.log.Warn("list health keys", "err", err)
		}
		return
	}
	var stale []string
	for k := range lister.Keys() {
		if _, ok := s.region(k); !ok && owns(k) {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		s.deleteHealth(ctx, k)
	}
}
