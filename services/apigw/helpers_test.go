package apigw

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp refreshes its Date header from one process-wide goroutine.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// fasthttp's worker-pool cleaner sees Stop only after its idle sleep
		// (10s); it exits on its own after Serve has returned.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

const (
	testKey  = "test-key-0123456789"
	otherKey = "other-key-9876543210"
	// testTimeout is NATS_REQUEST_TIMEOUT in tests: short, so 503s are quick.
	testTimeout = time.Second
)

// env is one embedded NATS server, an apigw on a random loopback port and
// an HTTP client.
type env struct {
	t      *testing.T
	ns     *embeddednats.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	api    *Service
	base   string
	client *http.Client
	key    string
	logs   *syncBuffer
	stop   func() error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func testConfig(url string) Config {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Addr = "127.0.0.1:0"
	cfg.MetricsAddr = "off"
	cfg.RequestTimeout = config.Duration(testTimeout)
	cfg.Keys = []string{testKey, otherKey}
	cfg.RateLimit = 1000
	cfg.RateBurst = 1000
	return cfg
}

// newEnv starts NATS with the buckets and streams, and an apigw whose
// config mutate may change.
func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	return newEnvWith(t, mutate, nil)
}

// newEnvWith is newEnv with a hook that runs between New and Run.
func newEnvWith(t *testing.T, mutate func(*Config), beforeRun func(*Service)) *env {
	t.Helper()
	ns := embeddednats.StartForTest(t)
	e := &env{t: t, ns: ns, key: testKey, logs: &syncBuffer{}}
	e.nc = connect(t, ns.ClientURL())
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, e.js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(ns.ClientURL())
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.api, err = New(context.Background(), e.nc, cfg, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.base = e.api.URL()
	if beforeRun != nil {
		beforeRun(e.api)
	}
	e.stop = runService(t, e.api)
	tr := &http.Transport{}
	e.client = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return e
}

// runService runs svc until the test ends; the returned func stops it
// early and returns Run's error.
func runService(t *testing.T, svc interface{ Run(context.Context) error }) func() error {
	t.Helper()
	stop, _ := runServiceExited(t, svc)
	return stop
}

// runServiceExited is runService that also returns a channel closed when
// Run returns on its own (a start-up failure).
func runServiceExited(t *testing.T, svc interface{ Run(context.Context) error }) (func() error, <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- svc.Run(ctx); close(exited) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = fmt.Errorf("service did not stop")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop, exited
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), "test", url, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startConfigMgr runs the real configmgr on its own connection and waits
// until it answers.
func (e *env) startConfigMgr() {
	e.t.Helper()
	cfg := configmgr.DefaultConfig()
	cfg.URL = e.ns.ClientURL()
	cfg.MetricsAddr = "off"
	cfg.Replicas = 1
	cfg.RequestTimeout = config.Duration(5 * time.Second)
	cfg.Strategy = model.StrategyRoundRobin
	nc := connect(e.t, e.ns.ClientURL())
	svc, err := configmgr.New(context.Background(), nc, cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	_, exited := runServiceExited(e.t, svc)
	poll.Until(e.t, 10*time.Second, "configmgr answers", func() error {
		select {
		case <-exited:
			e.t.Fatal("configmgr stopped during start-up")
		default:
		}
		_, err := nc.Request("$SRV.PING."+bus.ServiceConfigMgr, nil, 200*time.Millisecond)
		return err
	})
}

// serveFake answers subject on NATS with fn, standing in for a service
// that a later issue builds (healthchecker, failover).
func serveFake[Req, Resp any](t *testing.T, nc *nats.Conn, subject string, fn bus.HandlerFunc[Req, Resp]) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{Name: "fake", Version: "0.0.1", QueueGroup: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AddEndpoint("fake", bus.Handle(10*time.Second, fn), micro.WithEndpointSubject(subject)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
}

// response is a decoded HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// errorBody decodes a contract error and checks that it has exactly the
// fields error and code.
func (r response) apiError(t *testing.T) errorBody {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	if len(m) != 2 || m["error"] == nil || m["code"] == nil {
		t.Fatalf("error body %s is not {error, code}", r.body)
	}
	var e errorBody
	r.json(t, &e)
	if e.Error == "" || e.Code == "" {
		t.Fatalf("empty error fields in %s", r.body)
	}
	return e
}

// do sends a request with the env's key; body may be nil, a string (sent
// as is) or a value (sent as JSON).
func (e *env) do(method, path string, body any) response {
	e.t.Helper()
	return e.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + e.key})
}

func (e *env) doWith(method, path string, body any, headers map[string]string) response {
	e.t.Helper()
	r, err := e.try(method, path, body, headers)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (e *env) try(method, path string, body any, headers map[string]string) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		return response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// expect checks the status and, for errors, the contract's error shape and
// code; it returns the response for further checks.
func (e *env) expect(r response, status int, code string) response {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); status != http.StatusNoContent && !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("Content-Type %q, want JSON; body %s", ct, r.body)
	}
	if code != "" {
		if got := r.apiError(e.t); got.Code != code {
			e.t.Fatalf("code %q, want %q; body %s", got.Code, code, r.body)
		}
	}
	return r
}

// putKV writes a JSON document into a bucket, as the owning service would.
func (e *env) putKV(bucket, key string, v any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	data, _ := json.Marshal(v)
	if _, err := kv.Put(ctx, key, data); err != nil {
		e.t.Fatal(err)
	}
}

// publish publishes a JSON document on a stream subject.
func (e *env) publish(subject string, v any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	data, _ := json.Marshal(v)
	if _, err := e.js.Publish(ctx, subject, data); err != nil {
		e.t.Fatal(err)
	}
}
