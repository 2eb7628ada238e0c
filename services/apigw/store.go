package apigw

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// store is apigw's read side: KV buckets and streams read directly, never
// through another service, so reads work while that service is down.
type store struct {
	js  jetstream.JetStream
	log *slog.Logger
	// healthPath is the default health path shown for regions without one.
	healthPath string

	mu  sync.Mutex
	kvs map[string]jetstream.KeyValue
}

func newStore(js jetstream.JetStream, healthPath string, log *slog.Logger) *store {
	return &store{js: js, log: log, healthPath: healthPath, kvs: make(map[string]jetstream.KeyValue)}
}

// unavailable turns a JetStream failure into the 503 that clients see; the
// cause is logged, not sent, since it may name internals.
func (s *store) unavailable(what string, err error) error {
	s.log.Warn("jetstream read failed", "what", what, "err", err)
	return model.Unavailable("cannot read %s: NATS or JetStream is not reachable", what)
}

// bucket returns a handle of a bucket, cached after the first lookup (a
// handle is only names, so it stays valid across reconnects).
func (s *store) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	s.mu.Lock()
	kv, ok := s.kvs[name]
	s.mu.Unlock()
	if ok {
		return kv, nil
	}
	kv, err := s.js.KeyValue(ctx, name)
	if err != nil {
		return nil, s.unavailable(name, err)
	}
	s.mu.Lock()
	s.kvs[name] = kv
	s.mu.Unlock()
	return kv, nil
}

// getJSON reads one JSON value; found is false when the key does not exist.
func getJSON[T any](ctx context.Context, s *store, bucket, key string) (v T, found bool, err error) {
	kv, err := s.bucket(ctx, bucket)
	if err != nil {
		return v, false, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, false, nil
	}
	if err != nil {
		return v, false, s.unavailable(bucket+"/"+key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, false, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return v, true, nil
}

// allJSON reads every live value of a bucket with one watcher (one
// round trip, however many keys), keyed by KV key. Values that do not
// decode are skipped and logged, so one bad entry does not break a listing.
func allJSON[T any](ctx context.Context, s *store, bucket string) (map[string]T, error) {
	kv, err := s.bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, s.unavailable(bucket, err)
	}
	defer stopWatcher(w)
	out := make(map[string]T)
	for {
		select {
		case <-ctx.Done():
			return nil, s.unavailable(bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, s.unavailable(bucket, errors.New("watcher closed"))
			}
			if e == nil {
				return out, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(out, e.Key())
				continue
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				s.log.Warn("skipping undecodable KV value", "bucket", bucket, "key", e.Key(), "err", err)
				continue
			}
			out[e.Key()] = v
		}
	}
}

// stopWatcher stops w and drains what it may still deliver, so its
// delivery goroutine never blocks on a full channel after we left.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// sortedValues returns the values of m ordered by key.
func sortedValues[T any](m map[string]T) []T {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]T, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// lastMessages returns the data of the newest limit messages of stream
// on subject (wildcards allowed), newest first. It reads with a short-lived
// ephemeral consumer up to the messages pending when it was created, so
// messages published meanwhile do not make it wait; memory stays bounded
// by limit whatever the stream holds.
func (s *store) lastMessages(ctx context.Context, stream, subject string, limit int) ([][]byte, error) {
	cons, err := s.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, s.unavailable(stream, err)
	}
	defer func() {
		// Within the request's budget only: if it is spent, the server drops
		// the consumer after InactiveThreshold anyway.
		if ctx.Err() == nil {
			_ = s.js.DeleteConsumer(ctx, stream, cons.CachedInfo().Name)
		}
	}()
	pending := cons.CachedInfo().NumPending
	ring := make([][]byte, 0, min(uint64(limit), pending))
	next := 0 // index of the oldest entry once ring is full
	var got uint64
	for got < pending {
		batch, err := cons.Fetch(int(min(pending-got, 512)), jetstream.FetchContext(ctx))
		if err != nil {
			return nil, s.unavailable(stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if len(ring) < limit {
				ring = append(ring, m.Data())
			} else {
				ring[next] = m.Data()
				next = (next + 1) % limit
			}
		}
		if err := batch.Error(); err != nil {
			return nil, s.unavailable(stream, err)
		}
		if n == 0 { // messages expired meanwhile: nothing more will come
			break
		}
		got += uint64(n)
	}
	out := make([][]byte, 0, len(ring))
	for i := range ring {
		out = append(out, ring[(next+len(ring)-1-i)%len(ring)])
	}
	return out, nil
}

// regionState is the three buckets a region view joins: registry, health
// and failover, each keyed by region.
type regionState struct {
	regions   map[string]model.Region
	health    map[string]model.Health
	failovers map[string]model.Failover
}

func (st regionState) views(defaultPath string) []model.RegionView {
	out := make([]model.RegionView, 0, len(st.regions))
	for _, r := range sortedValues(st.regions) {
		out = append(out, st.view(r, defaultPath))
	}
	return out
}

func (st regionState) view(r model.Region, defaultPath string) model.RegionView {
	var h *model.Health
	if v, ok := st.health[r.Region]; ok {
		h = &v
	}
	var f *model.Failover
	if v, ok := st.failovers[r.Region]; ok {
		f = &v
	}
	return model.NewRegionView(r, h, f, defaultPath)
}

// loadState reads the three buckets a region view needs, in parallel.
func (s *store) loadState(ctx context.Context) (regionState, error) {
	var st regionState
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() { st.regions, errs[0] = allJSON[model.Region](ctx, s, bus.BucketRegions) })
	wg.Go(func() { st.health, errs[1] = allJSON[model.Health](ctx, s, bus.BucketHealth) })
	wg.Go(func() { st.failovers, errs[2] = allJSON[model.Failover](ctx, s, bus.BucketFailover) })
	wg.Wait()
	return st, firstErr(errs...)
}

// loadRegion reads one region with its health and failover; found is false
// when the region is not registered.
func (s *store) loadRegion(ctx context.Context, name string) (model.RegionView, bool, error) {
	return s.loadRegionWith(ctx, name, nil)
}

// loadRegionWith is loadRegion; a non-nil known skips reading the registry
// (the caller just got the stored region from configmgr).
func (s *store) loadRegionWith(ctx context.Context, name string, known *model.Region) (model.RegionView, bool, error) {
	var (
		r        model.Region
		h        model.Health
		f        model.Failover
		rOK      = known != nil
		hOK, fOK bool
		wg       sync.WaitGroup
		errs     = make([]error, 3)
	)
	if known != nil {
		r = *known
	} else {
		wg.Go(func() { r, rOK, errs[0] = getJSON[model.Region](ctx, s, bus.BucketRegions, name) })
	}
	wg.Go(func() { h, hOK, errs[1] = getJSON[model.Health](ctx, s, bus.BucketHealth, name) })
	wg.Go(func() { f, fOK, errs[2] = getJSON[model.Failover](ctx, s, bus.BucketFailover, name) })
	wg.Wait()
	if err := firstErr(errs...); err != nil {
		return model.RegionView{}, false, err
	}
	if !rOK {
		return model.RegionView{}, false, nil
	}
	st := regionState{regions: map[string]model.Region{name: r}}
	if hOK {
		st.health = map[string]model.Health{name: h}
	}
	if fOK {
		st.failovers = map[string]model.Failover{name: f}
	}
	return st.view(r, s.healthPath), true, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// byID orders router presence records.
func byID(a, b model.RouterInfo) int { return cmp.Compare(a.ID, b.ID) }
