package router_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
}

type env struct {
	ns    *embeddednats.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	svc   *router.Service
	url   string
	state string
	stop  func()
}

// startEnv runs a router against ns (nil: an unreachable NATS URL) with its
// state file at statePath.
func startEnv(t *testing.T, ns *embeddednats.Server, statePath string, tune func(*router.Config)) *env {
	t.Helper()
	url := "nats://127.0.0.1:1"
	if ns != nil {
		url = ns.ClientURL()
	}
	ctx, cancel := context.WithCancel(context.Background())
	nc, err := bus.Connect(ctx, "router-test", url, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cfg := router.DefaultConfig()
	cfg.URL = url
	cfg.Addr = "127.0.0.1:0"
	cfg.MetricsAddr = "off"
	cfg.StateFile = statePath
	cfg.ID = "test-router"
	cfg.PresenceInterval = 200 * 1e6
	if tune != nil {
		tune(&cfg)
	}
	svc, err := router.New(ctx, nc, cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e := &env{ns: ns, nc: nc, js: js, svc: svc, url: "http://" + svc.Addr(), state: statePath}
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		nc.Close()
	}
	t.Cleanup(e.stop)
	return e
}

func (e *env) kv(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, e.js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	kv, err := e.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func put(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if _, err := kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

func region(name, url string, w float64) model.Region {
	return model.Region{Region: name, Endpoint: url, Weight: w, CreatedAt: time.Now(), UpdatedAt: time.Now()}
}

func named(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, name)
	}))
}

var httpc = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-LB-Region")
}

func TestRegionAddedInKVGetsTrafficWithin1s(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), nil)
	regions := e.kv(t, bus.BucketRegions)
	<-e.svc.Synced()
	if code, _ := get(t, e.url+"/"); code != 503 {
		t.Fatalf("no region yet: got %d, want 503", code)
	}
	srv := named("us-east")
	defer srv.Close()
	start := time.Now()
	put(t, regions, "us-east", region("us-east", srv.URL, 1))
	poll.True(t, time.Second, "traffic on the new region", func() bool {
		_, r := get(t, e.url+"/")
		return r == "us-east"
	})
	t.Logf("new region served after %v", time.Since(start))
}

func TestStrategySwitchTakesEffectAtOnce(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), nil)
	regions, cfgKV := e.kv(t, bus.BucketRegions), e.kv(t, bus.BucketConfig)
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	put(t, regions, "a", region("a", a.URL, 1))
	put(t, regions, "b", region("b", b.URL, 0))
	put(t, cfgKV, bus.KeyStrategy, model.StrategyConfig{Strategy: model.StrategyWeighted, Parameters: json.RawMessage(`{}`)})
	poll.True(t, 2*time.Second, "weighted in force", func() bool { return e.svc.Table().Snapshot().Strategy == model.StrategyWeighted })
	for range 20 {
		if _, r := get(t, e.url+"/"); r != "a" {
			t.Fatalf("weighted with b=0 routed to %q", r)
		}
	}
	put(t, cfgKV, bus.KeyStrategy, model.StrategyConfig{Strategy: model.StrategyRoundRobin, Parameters: json.RawMessage(`{}`)})
	poll.True(t, time.Second, "round robin in force", func() bool { return e.svc.Table().Snapshot().Strategy == model.StrategyRoundRobin })
	seen := map[string]int{}
	for range 10 {
		_, r := get(t, e.url+"/")
		seen[r]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("round robin after the switch: %v", seen)
	}
}

func TestHealthAndFailoverKeys(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), nil)
	regions, health, failover := e.kv(t, bus.BucketRegions), e.kv(t, bus.BucketHealth), e.kv(t, bus.BucketFailover)
	a, b, c := named("a"), named("b"), named("c")
	defer a.Close()
	defer b.Close()
	defer c.Close()
	put(t, regions, "a", region("a", a.URL, 1))
	put(t, regions, "b", region("b", b.URL, 1))
	put(t, regions, "c", region("c", c.URL, 1))
	poll.True(t, 2*time.Second, "three regions", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 3 })

	put(t, health, "a", model.Health{Region: "a", Status: model.StatusUnhealthy})
	poll.True(t, time.Second, "a out of rotation", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 2 })
	for range 10 {
		if _, r := get(t, e.url+"/"); r == "a" {
			t.Fatal("unhealthy region got traffic")
		}
	}
	_ = health.Purge(context.Background(), "a")
	// a fails over to c: c serves two shares of three.
	put(t, failover, "a", model.Failover{FromRegion: "a", ToRegion: "c", Reason: model.ReasonManual, Since: time.Now()})
	poll.True(t, time.Second, "failover in force", func() bool {
		s := e.svc.Table().Snapshot()
		return len(s.Candidates) == 2 && !s.Panic
	})
	seen := map[string]int{}
	for range 30 {
		_, r := get(t, e.url+"/")
		seen[r]++
	}
	if seen["a"] != 0 || seen["c"] != 20 || seen["b"] != 10 {
		t.Fatalf("failed-over share did not go to its target: %v", seen)
	}
}

func TestStaticStabilityWhenNATSGoesAway(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	state := filepath.Join(t.TempDir(), "state.json")
	e := startEnv(t, ns, state, nil)
	regions := e.kv(t, bus.BucketRegions)
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	put(t, regions, "a", region("a", a.URL, 1))
	put(t, regions, "b", region("b", b.URL, 1))
	poll.True(t, 2*time.Second, "two regions", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 2 })
	poll.True(t, 5*time.Second, "state file with both regions", func() bool {
		data, err := os.ReadFile(state)
		return err == nil && strings.Contains(string(data), `"a"`) && strings.Contains(string(data), `"b"`)
	})

	ns.Shutdown()
	poll.True(t, 5*time.Second, "client sees NATS gone", func() bool { return !e.nc.IsConnected() })
	for i := range 200 {
		if code, _ := get(t, e.url+"/"); code != 200 {
			t.Fatalf("request %d after NATS went away: %d", i, code)
		}
	}

	// A fresh router while NATS is still down boots from the state file.
	e.stop()
	e2 := startEnv(t, nil, state, nil)
	seen := map[string]int{}
	for i := range 100 {
		code, r := get(t, e2.url+"/")
		if code != 200 {
			t.Fatalf("request %d from the state file: %d", i, code)
		}
		seen[r]++
	}
	if seen["a"] != 50 || seen["b"] != 50 {
		t.Fatalf("state file routing: %v", seen)
	}
}

func TestWatchesReopenAfterNATSRestart(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), nil)
	regions := e.kv(t, bus.BucketRegions)
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	put(t, regions, "a", region("a", a.URL, 1))
	poll.True(t, 2*time.Second, "region a", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 1 })
	ns2 := embeddednats.RestartForTest(t, ns)
	_ = ns2
	poll.True(t, 15*time.Second, "reconnected", e.nc.IsConnected)
	var kv jetstream.KeyValue
	poll.True(t, 10*time.Second, "bucket reachable", func() bool {
		var err error
		kv, err = e.js.KeyValue(context.Background(), bus.BucketRegions)
		return err == nil
	})
	put(t, kv, "b", region("b", b.URL, 1))
	poll.True(t, 10*time.Second, "region b after restart", func() bool {
		_, r := get(t, e.url+"/")
		return r == "b"
	})
}

func TestOutlierEventsAndPresence(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), func(c *router.Config) {
		c.OutlierConsecutive = 2
		c.OutlierBaseEjection = 200 * 1e6
	})
	regions, routers := e.kv(t, bus.BucketRegions), e.kv(t, bus.BucketRouters)
	var failing atomic.Bool
	failing.Store(true)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(500)
		}
	}))
	defer bad.Close()
	good := named("good")
	defer good.Close()
	sub, err := e.nc.SubscribeSync(bus.HealthEventsSubject("bad"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, regions, "bad", region("bad", bad.URL, 1))
	put(t, regions, "good", region("good", good.URL, 1))
	poll.True(t, 2*time.Second, "two regions", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 2 })
	for range 6 {
		get(t, e.url+"/")
	}
	failing.Store(false)
	var types []string
	for len(types) < 2 {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("events so far %v: %v", types, err)
		}
		var ev model.Event
		_ = json.Unmarshal(msg.Data, &ev)
		if ev.RouterID != "test-router" || ev.Region != "bad" {
			t.Fatalf("event %+v", ev)
		}
		types = append(types, ev.Type)
	}
	if types[0] != model.EventOutlierEjected || types[1] != model.EventOutlierReturned {
		t.Fatalf("events %v", types)
	}
	poll.True(t, 5*time.Second, "presence record", func() bool {
		entry, err := routers.Get(context.Background(), "test-router")
		if err != nil {
			return false
		}
		var info model.RouterInfo
		return json.Unmarshal(entry.Value(), &info) == nil && info.Address != "" && len(info.Regions) == 2
	})
}

// A router starting against a registry with an active failover never sends
// traffic to the failed-over region, not even while it loads the buckets:
// their first contents are applied together. Ready follows the load.
func TestStartingRouterNeverRoutesFromHalfLoadedTable(t *testing.T) {
	ns := embeddednats.StartForTest(t)
	a, b := named("a"), named("b")
	defer a.Close()
	defer b.Close()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	for bucket, kvs := range map[string]map[string]any{
		bus.BucketRegions:  {"a": region("a", a.URL, 1), "b": region("b", b.URL, 1)},
		bus.BucketFailover: {"a": model.Failover{FromRegion: "a", ToRegion: "b", Reason: model.ReasonManual, Since: time.Now()}},
	} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range kvs {
			put(t, kv, k, v)
		}
	}

	for range 5 { // several cold starts, each racing its own load
		e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), nil)
		served := map[string]int{}
		for {
			code, reg := get(t, e.url+"/")
			if code == 200 {
				served[reg]++
			}
			if served["b"] >= 20 {
				break
			}
		}
		if served["a"] != 0 {
			t.Fatalf("failed-over region a served %d requests during start-up", served["a"])
		}
		if err := e.svc.Ready(context.Background()); err != nil {
			t.Fatalf("ready after load: %v", err)
		}
		e.stop()
	}
}
