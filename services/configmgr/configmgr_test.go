package configmgr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// replica is one running configmgr with its own NATS connection.
type replica struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop stops the replica once and checks that Run returned cleanly.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("configmgr did not stop")
		}
		r.nc.Close()
	})
}

func startReplica(t *testing.T, url string, seed config.Seed) *replica {
	t.Helper()
	cfg := configmgr.DefaultConfig()
	cfg.URL = url
	cfg.Seed = seed
	if cfg.Seed.Strategy == "" {
		cfg.Seed.Strategy = model.StrategyRoundRobin
	}
	cfg.Replicas = 1
	cfg.RequestTimeout = config.Duration(5 * time.Second)
	require.NoError(t, cfg.Validate())
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	svc, err := configmgr.New(context.Background(), nc, cfg, logging.Discard(), prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	// Ready once the micro service answers.
	poll.Until(t, 10*time.Second, "condition", func() error {
		err := bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "probe-not-there"}, nil)
		if errors.Is(err, model.ErrRegionNotFound) {
			return nil
		}
		return fmt.Errorf("not ready: %v", err)
	})
	return r
}

func client(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func regions(t *testing.T, js jetstream.JetStream) map[string]model.Region {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bus.BucketRegions)
	require.NoError(t, err)
	out := map[string]model.Region{}
	lister, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(t, err)
		var r model.Region
		require.NoError(t, json.Unmarshal(e.Value(), &r))
		out[k] = r
	}
	return out
}

func strategy(t *testing.T, js jetstream.JetStream) model.StrategyConfig {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bus.BucketConfig)
	require.NoError(t, err)
	e, err := kv.Get(context.Background(), bus.KeyStrategy)
	require.NoError(t, err)
	var sc model.StrategyConfig
	require.NoError(t, json.Unmarshal(e.Value(), &sc))
	return sc
}

// events returns every event kept by LB_EVENTS on lb.events.config.
func events(t *testing.T, js jetstream.JetStream) []model.Event {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []model.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if m.Subject != bus.SubjectEventsConfig {
			continue
		}
		var ev model.Event
		require.NoError(t, json.Unmarshal(m.Data, &ev))
		out = append(out, ev)
	}
	return out
}

func TestSeedOnceAndNeverOverwrite(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	seed := config.Seed{RegionalEndpoints: "us-east:http://127.0.0.1:9001,eu-west:https://eu.example.com/api", Strategy: model.StrategyWeighted}
	r1 := startReplica(t, ns.ClientURL(), seed)
	nc, js := client(t, ns.ClientURL())

	got := regions(t, js)
	require.Len(t, got, 2)
	require.Equal(t, "https://eu.example.com/api", got["eu-west"].Endpoint)
	require.Equal(t, 1.0, got["us-east"].Weight)
	require.Equal(t, model.StrategyWeighted, strategy(t, js).Strategy)

	// Change things through the commands, then restart with the same seed.
	w := 7.0
	var upd model.Region
	require.NoError(t, bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "us-east", Weight: &w}, &upd))
	require.Equal(t, 7.0, upd.Weight)
	require.NoError(t, bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "eu-west"}, nil))
	require.NoError(t, bus.Request(context.Background(), nc, bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: model.StrategyLeastLatency}, nil))
	r1.stop(t)

	startReplica(t, ns.ClientURL(), seed)
	got = regions(t, js)
	require.Len(t, got, 1, "a removed region must not be seeded again")
	require.Equal(t, 7.0, got["us-east"].Weight)
	require.Equal(t, model.StrategyLeastLatency, strategy(t, js).Strategy)

	// Even a registry emptied through the API is not seeded again.
	require.NoError(t, bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "us-east"}, nil))
	startReplica(t, ns.ClientURL(), seed)
	require.Empty(t, regions(t, js))
}

func TestCommandsValidateAndAnswerTypedErrors(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	startReplica(t, ns.ClientURL(), config.Seed{})
	nc, _ := client(t, ns.ClientURL())
	ctx := context.Background()
	w := func(f float64) *float64 { return &f }
	str := func(s string) *string { return &s }

	var r model.Region
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "us-east", Endpoint: "http://127.0.0.1:9001"}, &r))
	require.Equal(t, model.DefaultWeight, r.Weight)
	require.False(t, r.CreatedAt.IsZero())

	cases := []struct {
		desc    string
		subject string
		req     any
		status  int
		code    string
	}{
		{"duplicate", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "us-east", Endpoint: "http://127.0.0.1:9002"}, 409, "region_exists"},
		{"bad name", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "US_East", Endpoint: "http://127.0.0.1:9002"}, 400, "invalid_region"},
		{"missing name", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Endpoint: "http://127.0.0.1:9002"}, 400, "missing_region"},
		{"relative url", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "/x"}, 400, "invalid_endpoint"},
		{"ftp url", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "ftp://x.example.com"}, 400, "invalid_endpoint"},
		{"plaintext public", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "http://example.com"}, 400, "plaintext_not_allowed"},
		{"weight high", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "https://example.com", Weight: w(1000.5)}, 400, "invalid_weight"},
		{"weight negative", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "https://example.com", Weight: w(-1)}, 400, "invalid_weight"},
		{"health path", bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "a", Endpoint: "https://example.com", HealthPath: "health"}, 400, "invalid_health_path"},
		{"update unknown", bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "nope", Weight: w(2)}, 404, "region_not_found"},
		{"update empty", bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "us-east"}, 400, "empty_update"},
		{"update bad endpoint", bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "us-east", Endpoint: str("nope")}, 400, "invalid_endpoint"},
		{"remove unknown", bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "nope"}, 404, "region_not_found"},
		{"strategy unknown", bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: "random"}, 400, "invalid_strategy"},
		{"strategy missing", bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{}, 400, "missing_strategy"},
		{"strategy params", bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: model.StrategyRoundRobin, Parameters: json.RawMessage(`{"x":1}`)}, 400, "invalid_parameters"},
		{"exploration", bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: model.StrategyLeastLatency, Parameters: json.RawMessage(`{"exploration":0.9}`)}, 400, "invalid_parameters"},
		{"unknown field", bus.SubjectCmdConfigStrategySet, map[string]any{"strategy": "weighted", "bogus": 1}, 400, "invalid_json"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			err := bus.Request(ctx, nc, tc.subject, tc.req, nil)
			e := model.AsError(err)
			require.Equal(t, tc.status, e.Status, "error: %v", err)
			require.Equal(t, tc.code, e.Code)
			require.NotEmpty(t, e.Message)
		})
	}

	// The failed commands changed nothing.
	var sc model.StrategyConfig
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: model.StrategyLeastLatency, Parameters: json.RawMessage(`{"exploration":0.1}`)}, &sc))
	require.JSONEq(t, `{"exploration":0.1}`, string(sc.Parameters))
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "us-east", HealthPath: str("/ready")}, &r))
	require.Equal(t, "/ready", r.HealthPath)
	require.Equal(t, "http://127.0.0.1:9001", r.Endpoint)
}

// Two replicas take 2x50 concurrent updates of one region's weight and 2x25
// region creations: none is lost and each change is announced exactly once.
func TestConcurrentReplicasLoseNothing(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	startReplica(t, ns.ClientURL(), config.Seed{RegionalEndpoints: "hot:http://127.0.0.1:9001"})
	startReplica(t, ns.ClientURL(), config.Seed{RegionalEndpoints: "hot:http://127.0.0.1:9001"})
	_, js := client(t, ns.ClientURL())
	before := len(events(t, js))

	const perClient = 50
	var wg sync.WaitGroup
	errs := make(chan error, 4*perClient)
	for c := range 2 {
		nc, _ := client(t, ns.ClientURL())
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range perClient {
				w := float64(c*perClient + i)
				// Each update also carries a distinct health path, so the final
				// document must come from exactly one of the updates.
				hp := fmt.Sprintf("/h%d", c*perClient+i)
				errs <- bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionUpdate,
					model.UpdateRegionRequest{Region: "hot", Weight: &w, HealthPath: &hp}, nil)
			}
		}()
		go func() {
			defer wg.Done()
			for i := range perClient / 2 {
				errs <- bus.Request(context.Background(), nc, bus.SubjectCmdConfigRegionAdd,
					model.AddRegionRequest{Region: fmt.Sprintf("r-%d-%d", c, i), Endpoint: "http://127.0.0.1:9100"}, nil)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	got := regions(t, js)
	require.Len(t, got, 1+perClient, "every created region is there")
	hot := got["hot"]
	require.Equal(t, fmt.Sprintf("/h%d", int(hot.Weight)), hot.HealthPath, "the final document is one whole update")

	// Every update committed as its own change: one region.updated event for
	// each of the 100 distinct weights, and one region.added per creation.
	weights := map[float64]int{}
	var added int
	poll.Until(t, 5*time.Second, "condition", func() error {
		clear(weights)
		added = 0
		for _, ev := range events(t, js)[before:] {
			switch ev.Type {
			case model.EventRegionUpdated:
				weights[ev.RegionDoc.Weight]++
			case model.EventRegionAdded:
				added++
			}
		}
		if len(weights) != 2*perClient || added != perClient {
			return fmt.Errorf("events: %d distinct updates, %d added", len(weights), added)
		}
		return nil
	})
	for w, n := range weights {
		require.Equal(t, 1, n, "weight %v announced %d times", w, n)
	}
}

func TestEventsExactlyOncePerChange(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	nc, js := client(t, ns.ClientURL())
	// A live subscriber sees what an operator running `nats sub` would see.
	live := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(bus.SubjectEventsConfig, live)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()

	startReplica(t, ns.ClientURL(), config.Seed{RegionalEndpoints: "us-east:http://127.0.0.1:9001"})
	ctx := context.Background()
	w := 3.0
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: "eu-west", Endpoint: "https://eu.example.com"}, nil))
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionUpdate, model.UpdateRegionRequest{Region: "eu-west", Weight: &w}, nil))
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigStrategySet, model.SetStrategyRequest{Strategy: model.StrategyWeighted}, nil))
	require.NoError(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "eu-west"}, nil))
	// A failed command announces nothing.
	require.Error(t, bus.Request(ctx, nc, bus.SubjectCmdConfigRegionRemove, model.RemoveRegionRequest{Region: "eu-west"}, nil))

	want := []string{
		model.EventRegionAdded + "/us-east", model.EventStrategyChanged + "/",
		model.EventRegionAdded + "/eu-west", model.EventRegionUpdated + "/eu-west",
		model.EventStrategyChanged + "/", model.EventRegionRemoved + "/eu-west",
	}
	var stored []string
	poll.Until(t, 5*time.Second, "condition", func() error {
		stored = stored[:0]
		for _, ev := range events(t, js) {
			stored = append(stored, ev.Type+"/"+ev.Region)
		}
		if len(stored) < len(want) {
			return fmt.Errorf("only %d events", len(stored))
		}
		return nil
	})
	require.Equal(t, want, stored)

	var seen []string
	for len(seen) < len(want) {
		select {
		case m := <-live:
			var ev model.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			require.False(t, ev.At.IsZero())
			seen = append(seen, ev.Type+"/"+ev.Region)
		case <-time.After(5 * time.Second):
			t.Fatalf("live subscriber saw only %v", seen)
		}
	}
	require.Equal(t, want, seen)
	select {
	case m := <-live:
		t.Fatalf("unexpected extra event %s", m.Data)
	case <-time.After(300 * time.Millisecond):
	}
}

// configmgr started before NATS comes up connects and serves by itself.
func TestStartsBeforeNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	url := "nats://" + addr

	cfg := configmgr.DefaultConfig()
	cfg.URL = url
	cfg.Seed.Strategy = model.StrategyRoundRobin
	cfg.Seed.RegionalEndpoints = "a:http://127.0.0.1:1,b:http://127.0.0.1:2"
	require.NoError(t, cfg.Validate())

	nc, err := bus.Connect(context.Background(), "test", url, logging.Discard())
	require.NoError(t, err)
	defer nc.Close()
	svc, err := configmgr.New(context.Background(), nc, cfg, logging.Discard(), prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: addr})
	require.NoError(t, err)
	defer ns.Shutdown()
	_, js := client(t, ns.ClientURL())
	poll.Until(t, 15*time.Second, "condition", func() error {
		kv, err := js.KeyValue(context.Background(), bus.BucketRegions)
		if err != nil {
			return err
		}
		l, err := kv.ListKeys(context.Background())
		if err != nil {
			return err
		}
		var keys []string
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if fmt.Sprint(keys) != "[a b]" {
			return fmt.Errorf("keys %v", keys)
		}
		return nil
	})
	cancel()
	require.NoError(t, <-done)
}
