package configmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
)

// keySeeded marks lb_config once the registry was seeded, so that a registry
// emptied through the API is not seeded again on the next start.
const keySeeded = "seeded"

// casAttempts bounds the read-modify-write loop of one update under contention.
const casAttempts = 50

// kv is the part of jetstream.KeyValue the store uses.
type kv interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error)
}

// Store applies the config commands to the buckets with revision-checked
// writes and publishes an event after each committed change.
type Store struct {
	regions        kv
	config         kv
	events         bus.Publisher
	allowPlaintext bool
	log            *slog.Logger
	now            func() time.Time
}

// OpenStore binds the store to the buckets, which must exist.
func OpenStore(ctx context.Context, js jetstream.JetStream, allowPlaintext bool, log *slog.Logger) (*Store, error) {
	regions, err := js.KeyValue(ctx, bus.BucketRegions)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", bus.BucketRegions, err)
	}
	cfg, err := js.KeyValue(ctx, bus.BucketConfig)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", bus.BucketConfig, err)
	}
	return &Store{regions: regions, config: cfg, events: js, allowPlaintext: allowPlaintext, log: log, now: func() time.Time { return time.Now().UTC() }}, nil
}

// Seed writes REGIONAL_ENDPOINTS and LOAD_BALANCING_STRATEGY into buckets
// that were never seeded. It only ever creates keys, so it cannot overwrite
// what the API changed, and two replicas seeding at once agree.
func (s *Store) Seed(ctx context.Context, seed config.Seed) error {
	if _, err := s.config.Get(ctx, keySeeded); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("seed: %w", err)
	}
	eps, err := seed.Endpoints()
	if err != nil {
		return &config.VarError{Var: "REGIONAL_ENDPOINTS", Err: err}
	}
	for _, ep := range eps {
		r := model.Region{Region: ep.Region, Endpoint: ep.Endpoint, Weight: model.DefaultWeight}
		if _, err := s.createRegion(ctx, r); err != nil && !errors.Is(err, model.ErrRegionExists) {
			return fmt.Errorf("seed region %s: %w", ep.Region, err)
		}
	}
	if _, err := s.createStrategy(ctx, seed.Strategy); err != nil {
		return fmt.Errorf("seed strategy: %w", err)
	}
	if _, err := s.config.Create(ctx, keySeeded, []byte(fmt.Sprintf("%q", s.now().Format(time.RFC3339)))); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("seed marker: %w", err)
	}
	s.log.Info("registry seeded", "regions", len(eps), "strategy", seed.Strategy)
	return nil
}

func (s *Store) createStrategy(ctx context.Context, strategy string) (bool, error) {
	params, err := model.NormalizeStrategy(strategy, nil)
	if err != nil {
		return false, err
	}
	doc := model.StrategyConfig{Strategy: strategy, Parameters: params, UpdatedAt: s.now()}
	data, _ := json.Marshal(doc)
	rev, err := s.config.Create(ctx, bus.KeyStrategy, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, bus.Unavailable(err)
	}
	s.publish(ctx, model.Event{Type: model.EventStrategyChanged, Strategy: &doc}, bus.KeyStrategy, rev)
	return true, nil
}

// AddRegion creates a region; it answers 409 if the name is taken.
func (s *Store) AddRegion(ctx context.Context, req model.AddRegionRequest) (model.Region, error) {
	r := model.Region{
		Region:         req.Region,
		Endpoint:       req.Endpoint,
		Weight:         model.DefaultWeight,
		HealthPath:     req.HealthPath,
		ExpectedStatus: req.ExpectedStatus,
	}
	if req.Weight != nil {
		r.Weight = *req.Weight
	}
	if err := model.ValidateRegion(r, s.allowPlaintext); err != nil {
		return model.Region{}, err
	}
	return s.createRegion(ctx, r)
}

func (s *Store) createRegion(ctx context.Context, r model.Region) (model.Region, error) {
	r.CreatedAt = s.now()
	r.UpdatedAt = r.CreatedAt
	data, _ := json.Marshal(r)
	rev, err := s.regions.Create(ctx, r.Region, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return model.Region{}, model.Conflict(model.ErrRegionExists.Code, "region %q already exists", r.Region)
	}
	if err != nil {
		return model.Region{}, bus.Unavailable(err)
	}
	s.publish(ctx, model.Event{Type: model.EventRegionAdded, Region: r.Region, RegionDoc: &r}, r.Region, rev)
	return r, nil
}

// UpdateRegion applies a partial update with compare-and-swap, re-reading
// and re-applying on a concurrent write so no update is lost.
func (s *Store) UpdateRegion(ctx context.Context, req model.UpdateRegionRequest) (model.Region, error) {
	if err := model.ValidateRegionName(req.Region); err != nil {
		return model.Region{}, err
	}
	if req.Endpoint == nil && req.Weight == nil && req.HealthPath == nil && req.ExpectedStatus == nil {
		return model.Region{}, model.Invalid("empty_update", "nothing to update: give endpoint, weight, health_path or expected_status")
	}
	for range casAttempts {
		cur, rev, err := s.getRegion(ctx, req.Region)
		if err != nil {
			return model.Region{}, err
		}
		next := cur
		if req.Endpoint != nil {
			next.Endpoint = *req.Endpoint
		}
		if req.Weight != nil {
			next.Weight = *req.Weight
		}
		if req.HealthPath != nil {
			next.HealthPath = *req.HealthPath
		}
		if req.ExpectedStatus != nil {
			next.ExpectedStatus = req.ExpectedStatus
		}
		if err := model.ValidateRegion(next, s.allowPlaintext); err != nil {
			return model.Region{}, err
		}
		next.UpdatedAt = s.now()
		data, _ := json.Marshal(next)
		newRev, err := s.regions.Update(ctx, req.Region, data, rev)
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			return model.Region{}, bus.Unavailable(err)
		}
		s.publish(ctx, model.Event{Type: model.EventRegionUpdated, Region: next.Region, RegionDoc: &next}, next.Region, newRev)
		return next, nil
	}
	return model.Region{}, model.ErrConflict
}

// RemoveRegion deletes a region (404 if it does not exist).
func (s *Store) RemoveRegion(ctx context.Context, req model.RemoveRegionRequest) (struct{}, error) {
	if err := model.ValidateRegionName(req.Region); err != nil {
		return struct{}{}, err
	}
	for range casAttempts {
		cur, rev, err := s.getRegion(ctx, req.Region)
		if err != nil {
			return struct{}{}, err
		}
		err = s.regions.Delete(ctx, req.Region, jetstream.LastRevision(rev))
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			return struct{}{}, bus.Unavailable(err)
		}
		s.publish(ctx, model.Event{Type: model.EventRegionRemoved, Region: cur.Region, RegionDoc: &cur}, cur.Region, rev)
		return struct{}{}, nil
	}
	return struct{}{}, model.ErrConflict
}

// SetStrategy validates and stores the strategy and its parameters.
func (s *Store) SetStrategy(ctx context.Context, req model.SetStrategyRequest) (model.StrategyConfig, error) {
	params, err := model.NormalizeStrategy(req.Strategy, req.Parameters)
	if err != nil {
		return model.StrategyConfig{}, err
	}
	doc := model.StrategyConfig{Strategy: req.Strategy, Parameters: params}
	for range casAttempts {
		doc.UpdatedAt = s.now()
		data, _ := json.Marshal(doc)
		var rev uint64
		e, err := s.config.Get(ctx, bus.KeyStrategy)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err = s.config.Create(ctx, bus.KeyStrategy, data)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
		case err != nil:
			return model.StrategyConfig{}, bus.Unavailable(err)
		default:
			rev, err = s.config.Update(ctx, bus.KeyStrategy, data, e.Revision())
		}
		if bus.IsWrongRevision(err) {
			continue
		}
		if err != nil {
			return model.StrategyConfig{}, bus.Unavailable(err)
		}
		s.publish(ctx, model.Event{Type: model.EventStrategyChanged, Strategy: &doc}, bus.KeyStrategy, rev)
		return doc, nil
	}
	return model.StrategyConfig{}, model.ErrConflict
}

func (s *Store) getRegion(ctx context.Context, name string) (model.Region, uint64, error) {
	e, err := s.regions.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return model.Region{}, 0, model.NotFound(name)
	}
	if err != nil {
		return model.Region{}, 0, bus.Unavailable(err)
	}
	var r model.Region
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return model.Region{}, 0, fmt.Errorf("decode region %s: %w", name, err)
	}
	return r, e.Revision(), nil
}

// publish announces a committed change. The message id is derived from the
// event type, the key and the revision written (for a removal: the revision
// removed), so a retried publish is de-duplicated
// by LB_EVENTS and subscribers see each change once.
func (s *Store) publish(ctx context.Context, ev model.Event, key string, rev uint64) {
	ev.At = s.now()
	id := fmt.Sprintf("config:%s:%s:%d", ev.Type, key, rev)
	err := bus.Retry(ctx, func(ctx context.Context) error {
		return bus.PublishEvent(ctx, s.events, bus.SubjectEventsConfig, ev, id)
	})
	if err != nil {
		s.log.Error("event not published", "type", ev.Type, "key", key, "err", err)
	}
}
