package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/services/failover/decide"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// errStarting answers commands that arrive before Run has bound the buckets.
var errStarting = model.Unavailable("failover manager is starting")

// casAttempts bounds the read-check-write loop of one command under
// contention.
const casAttempts = 20

// publishTimeout bounds the retries of one event publish; a change whose
// event could not be published is announced later by the leader's
// reconciliation.
const publishTimeout = 10 * time.Second

// apply writes one decided change with a compare-and-swap on the revision
// the decision was based on, then announces it.
func (s *Service) apply(ctx context.Context, c decide.Change, rev uint64) error {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout.D())
	defer cancel()
	switch c.Kind {
	case decide.End:
		if err := s.kvFailover.Delete(wctx, c.Region, jetstream.LastRevision(rev)); err != nil {
			return fmt.Errorf("end failover of %s: %w", c.Region, err)
		}
		s.cache.wrote(c.Region, nil, rev)
		s.m.ended.WithLabelValues(c.Before.Reason, c.Why).Inc()
		s.log.Info("failover ended", "from_region", c.Region, "to_region", c.Before.ToRegion, "reason", c.Before.Reason, "cause", c.Why)
		s.announce(ctx, model.EventFailoverEnded, c.Before.Failover, endedID(c.Region, rev))
		return nil
	default:
		data, err := json.Marshal(c.After)
		if err != nil {
			return fmt.Errorf("encode failover: %w", err)
		}
		var newRev uint64
		if c.Kind == decide.Start {
			newRev, err = s.kvFailover.Create(wctx, c.Region, data)
		} else {
			newRev, err = s.kvFailover.Update(wctx, c.Region, data, rev)
		}
		if err != nil {
			return fmt.Errorf("%s failover of %s: %w", c.Kind, c.Region, err)
		}
		after := *c.After
		s.cache.wrote(c.Region, &after, newRev)
		switch c.Kind {
		case decide.Start:
			s.m.started.WithLabelValues(after.Reason).Inc()
			s.log.Info("failover started", "from_region", c.Region, "to_region", after.ToRegion, "reason", after.Reason)
		case decide.Retarget:
			s.m.retargeted.WithLabelValues(after.Reason).Inc()
			s.log.Info("failover re-targeted", "from_region", c.Region, "from_target", c.Before.ToRegion, "to_region", after.ToRegion, "reason", after.Reason)
		}
		if decide.Announced(c.Before, c.After) {
			s.announce(ctx, model.EventFailoverStarted, after.Failover, startedID(c.Region, newRev))
		}
		return nil
	}
}

// Event ids are derived from the key and the revision of the change, so a
// retried publish, a command and the leader's reconciliation announcing the
// same change all collapse into one message in LB_EVENTS.
func startedID(key string, rev uint64) string { return fmt.Sprintf("failover:started:%s:%d", key, rev) }

// endedID uses the revision of the record that was deleted.
func endedID(key string, rev uint64) string { return fmt.Sprintf("failover:ended:%s:%d", key, rev) }

// announce publishes a failover event, retrying for a while.
func (s *Service) announce(ctx context.Context, typ string, f model.Failover, id string) {
	ev := model.Event{Type: typ, At: time.Now().UTC(), FromRegion: f.FromRegion, ToRegion: f.ToRegion, Reason: f.Reason}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	err := bus.Retry(pctx, func(ctx context.Context) error {
		return bus.PublishEvent(ctx, s.js, bus.FailoverEventsSubject(f.FromRegion), ev, id)
	})
	if err != nil {
		s.m.eventsLost.Inc()
		s.log.Error("failover event not published; the leader will republish it", "type", typ, "from_region", f.FromRegion, "err", err)
	}
}

// Trigger starts (or replaces) a manual failover. It answers 400 for a
// missing or bad field or the same region twice, 404 for an unknown region,
// 409 for an unhealthy target without force or a failed-over target, and
// 503 when NATS is not reachable. Any replica serves it: it reads the
// current state from KV, not from its cache, and writes with a
// compare-and-swap.
func (s *Service) Trigger(ctx context.Context, req model.FailoverTriggerRequest) (model.Failover, error) {
	if !s.opened.Load() {
		return model.Failover{}, errStarting
	}
	for _, name := range []string{req.FromRegion, req.ToRegion} {
		if err := model.ValidateRegionName(name); err != nil {
			return model.Failover{}, err
		}
	}
	ttl, err := req.ParseTTL()
	if err != nil {
		return model.Failover{}, err
	}
	if req.FromRegion == req.ToRegion {
		return model.Failover{}, decide.ErrSameRegion
	}
	for range casAttempts {
		st, prev, rev, err := s.readTrigger(ctx, req.FromRegion, req.ToRegion)
		if err != nil {
			return model.Failover{}, err
		}
		if err := decide.CheckTrigger(st, req.FromRegion, req.ToRegion, req.Force); err != nil {
			return model.Failover{}, err
		}
		rec := decide.Manual(prev, req.FromRegion, req.ToRegion, ttl, time.Now().UTC())
		data, _ := json.Marshal(rec)
		var newRev uint64
		if prev == nil {
			newRev, err = s.kvFailover.Create(ctx, req.FromRegion, data)
		} else {
			newRev, err = s.kvFailover.Update(ctx, req.FromRegion, data, rev)
		}
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			return model.Failover{}, bus.Unavailable(err)
		}
		s.cache.wrote(req.FromRegion, &rec, newRev)
		if decide.Announced(prev, &rec) {
			s.m.started.WithLabelValues(model.ReasonManual).Inc()
			s.log.Info("manual failover", "from_region", rec.FromRegion, "to_region", rec.ToRegion, "ttl", req.TTL, "force", req.Force)
			s.announce(ctx, model.EventFailoverStarted, rec.Failover, startedID(req.FromRegion, newRev))
		}
		return rec.Failover, nil
	}
	return model.Failover{}, model.ErrConflict
}

// readTrigger reads what a trigger depends on straight from KV: both
// regions, the target's health and failover, and the source's failover
// with its revision.
func (s *Service) readTrigger(ctx context.Context, from, to string) (decide.State, *decide.Record, uint64, error) {
	st := decide.State{Regions: map[string]*model.Health{}, Failovers: map[string]decide.Record{}}
	for _, name := range []string{from, to} {
		ok, err := exists(ctx, s.kvRegions, name)
		if err != nil {
			return st, nil, 0, err
		}
		if !ok {
			return st, nil, 0, model.NotFound(name)
		}
		st.Regions[name] = nil
	}
	var h model.Health
	if found, _, err := getJSON(ctx, s.kvHealth, to, &h); err != nil {
		return st, nil, 0, err
	} else if found {
		st.Regions[to] = &h
	}
	var target decide.Record
	if found, _, err := getJSON(ctx, s.kvFailover, to, &target); err != nil {
		return st, nil, 0, err
	} else if found {
		st.Failovers[to] = target
	}
	var cur decide.Record
	found, rev, err := getJSON(ctx, s.kvFailover, from, &cur)
	if err != nil || !found {
		return st, nil, 0, err
	}
	return st, &cur, rev, nil
}

// Clear ends the failover of a region, whatever its reason (an automatic
// failover of a region that is still sick starts again at the leader's next
// decision). It answers 404 region_not_found for an unknown region without
// a failover and 404 failover_not_found for a known region without one.
func (s *Service) Clear(ctx context.Context, req model.FailoverClearRequest) (struct{}, error) {
	if !s.opened.Load() {
		return struct{}{}, errStarting
	}
	if err := model.ValidateRegionName(req.FromRegion); err != nil {
		return struct{}{}, err
	}
	for range casAttempts {
		var cur decide.Record
		found, rev, err := getJSON(ctx, s.kvFailover, req.FromRegion, &cur)
		if err != nil {
			return struct{}{}, err
		}
		if !found {
			known, err := exists(ctx, s.kvRegions, req.FromRegion)
			if err != nil {
				return struct{}{}, err
			}
			if !known {
				return struct{}{}, model.NotFound(req.FromRegion)
			}
			return struct{}{}, &model.Error{Status: decide.ErrNoFailover.Status, Code: decide.ErrNoFailover.Code,
				Message: fmt.Sprintf("region %q has no active failover", req.FromRegion)}
		}
		err = s.kvFailover.Delete(ctx, req.FromRegion, jetstream.LastRevision(rev))
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			return struct{}{}, bus.Unavailable(err)
		}
		s.cache.wrote(req.FromRegion, nil, rev)
		s.m.ended.WithLabelValues(cur.Reason, decide.WhyCleared).Inc()
		s.log.Info("failover cleared", "from_region", req.FromRegion, "to_region", cur.ToRegion, "reason", cur.Reason)
		if cur.FromRegion == "" {
			cur.FromRegion = req.FromRegion
		}
		s.announce(ctx, model.EventFailoverEnded, cur.Failover, endedID(req.FromRegion, rev))
		return struct{}{}, nil
	}
	return struct{}{}, model.ErrConflict
}

// publishSettings stores the effective policy in lb_config so that the API
// reports what the leader actually does.
func (s *Service) publishSettings(ctx context.Context) {
	want := model.FailoverSettings{Enabled: s.policy.Enabled, Threshold: s.policy.Threshold}
	data, _ := json.Marshal(want)
	for range casAttempts {
		var cur model.FailoverSettings
		found, rev, err := getJSON(ctx, s.kvConfig, bus.KeyFailoverSettings, &cur)
		if err != nil {
			s.log.Warn("read failover settings", "err", err)
			return
		}
		if found && cur == want {
			return
		}
		if found {
			_, err = s.kvConfig.Update(ctx, bus.KeyFailoverSettings, data, rev)
		} else {
			_, err = s.kvConfig.Create(ctx, bus.KeyFailoverSettings, data)
		}
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			s.log.Warn("publish failover settings", "err", err)
		}
		return
	}
}

// reconcileGrace leaves recent changes to the replica that wrote them: it
// is still publishing their events. A variable for tests.
var reconcileGrace = 3 * time.Second

// reconcileEvents makes "exactly once per change" hold across crashes: a
// replica that dies between its write to lb_failover and its publish leaves
// a change that nobody announced. The leader compares each region's last
// failover event in LB_EVENTS with lb_failover and publishes what is
// missing, with the same message id the writer would have used, so that a
// writer that was merely slow is de-duplicated by the stream.
func (s *Service) reconcileEvents(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout.D())
	defer cancel()
	stream, err := s.js.Stream(rctx, bus.StreamEvents)
	if err != nil {
		s.log.Warn("reconcile events: stream", "err", err)
		return
	}
	last := func(region string) (*model.Event, error) {
		msg, err := stream.GetLastMsgForSubject(rctx, bus.FailoverEventsSubject(region))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var ev model.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			return nil, nil // an undecodable event is as good as none
		}
		return &ev, nil
	}
	cutoff := time.Now().Add(-reconcileGrace)
	active := s.cache.active()
	for key, e := range active {
		if e.created.After(cutoff) {
			continue
		}
		ev, err := last(key)
		if err != nil {
			s.log.Warn("reconcile events", "region", key, "err", err)
			return
		}
		if ev != nil && ev.Type == model.EventFailoverStarted && ev.ToRegion == e.rec.ToRegion && ev.Reason == e.rec.Reason {
			continue
		}
		if cur, ok := s.cache.entry(key); !ok || cur.rev != e.rev {
			continue
		}
		s.log.Warn("announcing a failover change that was not announced", "from_region", key, "revision", e.rev)
		s.announce(ctx, model.EventFailoverStarted, e.rec.Failover, startedID(key, e.rev))
	}
	info, err := stream.Info(rctx, jetstream.WithSubjectFilter(bus.SubjectEventsFailoverAll))
	if err != nil {
		s.log.Warn("reconcile events: stream info", "err", err)
		return
	}
	for subject := range info.State.Subjects {
		key := strings.TrimPrefix(subject, bus.SubjectEventsFailoverPrefix)
		if _, ok := active[key]; ok {
			continue
		}
		ev, err := last(key)
		if err != nil || ev == nil || ev.Type != model.EventFailoverStarted {
			continue
		}
		rev, ok := s.deletedRevision(rctx, key, cutoff)
		if !ok {
			continue
		}
		s.log.Warn("announcing a failover end that was not announced", "from_region", key, "revision", rev)
		s.announce(ctx, model.EventFailoverEnded, model.Failover{FromRegion: key, ToRegion: ev.ToRegion, Reason: ev.Reason}, endedID(key, rev))
	}
}

// deletedRevision finds, in the key's history, the revision of the record
// whose deletion is the key's latest change, if that deletion is older than
// cutoff.
func (s *Service) deletedRevision(ctx context.Context, key string, cutoff time.Time) (uint64, bool) {
	hist, err := s.kvFailover.History(ctx, key)
	if err != nil || len(hist) == 0 {
		return 0, false
	}
	lastEntry := hist[len(hist)-1]
	if !bus.IsDelete(lastEntry) || lastEntry.Created().After(cutoff) {
		return 0, false
	}
	if len(hist) >= 2 && !bus.IsDelete(hist[len(hist)-2]) {
		return hist[len(hist)-2].Revision(), true
	}
	return 0, false
}

// getJSON reads key into v; found is false when the key does not exist.
func getJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (bool, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, bus.Unavailable(err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return false, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, e.Revision(), nil
}

func exists(ctx context.Context, kv jetstream.KeyValue, key string) (bool, error) {
	_, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, bus.Unavailable(err)
	}
	return true, nil
}
