package healthchecker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The HTTP test servers' and transports' keep-alive goroutines end
		// shortly after Close; goleak retries, these only show on slow runs.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// regionServer is one HTTP server answering for many regions: region R is
// reached at <url>/R and its health at /R/health. It counts probes.
type regionServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string][]time.Time
	mode map[string]string // "" or "ok": 200; "fail": 503; "slow": no answer until the client gives up
}

func newRegionServer(t *testing.T, tlsServer bool) *regionServer {
	t.Helper()
	rs := &regionServer{hits: map[string][]time.Time{}, mode: map[string]string{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		rs.mu.Lock()
		rs.hits[name] = append(rs.hits[name], time.Now())
		mode := rs.mode[name]
		rs.mu.Unlock()
		switch mode {
		case "fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	rs.Server = httptest.NewUnstartedServer(h)
	rs.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake failures are expected
	if tlsServer {
		rs.StartTLS()
	} else {
		rs.Start()
	}
	t.Cleanup(rs.Close)
	return rs
}

func (rs *regionServer) setMode(name, mode string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.mode[name] = mode
}

func (rs *regionServer) count(name string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.hits[name])
}

// countBetween counts probes of name in [from, to).
func (rs *regionServer) countBetween(name string, from, to time.Time) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, h := range rs.hits[name] {
		if !h.Before(from) && h.Before(to) {
			n++
		}
	}
	return n
}

// firstAfter is the first probe of name after t.
func (rs *regionServer) firstAfter(name string, t time.Time) (time.Time, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, h := range rs.hits[name] {
		if h.After(t) {
			return h, true
		}
	}
	return time.Time{}, false
}

// env is one embedded NATS with the contract's buckets and streams.
type env struct {
	t   *testing.T
	ns  *embeddednats.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	ns := embeddednats.StartForTest(t)
	cfg.URL = ns.ClientURL()
	e := &env{t: t, ns: ns, cfg: cfg}
	e.nc = e.connect("test-client")
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &Service{cfg: cfg}
	if err := bus.EnsureInfra(ctx, js, s.infra()); err != nil {
		t.Fatal(err)
	}
	return e
}

// connect opens a connection that reconnects forever, as services do.
func (e *env) connect(name string) *nats.Conn {
	e.t.Helper()
	nc, err := bus.Connect(context.Background(), name, e.ns.ClientURL(), logging.Discard(),
		nats.ReconnectWait(20*time.Millisecond), nats.CustomReconnectDelay(func(int) time.Duration { return 20 * time.Millisecond }))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// testConfig is a fast configuration for tests.
func testConfig(interval time.Duration) Config {
	cfg := DefaultConfig()
	cfg.MetricsAddr = "off"
	cfg.Interval = config.Duration(interval)
	cfg.Timeout = config.Duration(min(interval/2, 500*time.Millisecond))
	cfg.RequestTimeout = config.Duration(3 * time.Second)
	return cfg
}

// instance is a running replica.
type instance struct {
	svc    *Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a replica with its own NATS connection; it is stopped when the
// test ends.
func (e *env) start(id string, mutate func(*Config)) *instance {
	e.t.Helper()
	cfg := e.cfg
	cfg.MemberID = id
	if mutate != nil {
		mutate(&cfg)
	}
	nc := e.connect("hc-" + id)
	svc, err := New(context.Background(), nc, cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{svc: svc, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	e.t.Cleanup(func() { in.stop(e.t) })
	return in
}

// stop shuts the replica down gracefully and waits for Run to return.
func (in *instance) stop(t *testing.T) {
	in.once.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return within 15s of cancel")
		}
	})
}

func (e *env) kv(bucket string) jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// putRegion writes a registry entry as configmgr would.
func (e *env) putRegion(r model.Region) {
	e.t.Helper()
	if r.Weight == 0 {
		r.Weight = 1
	}
	r.CreatedAt, r.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	data, _ := json.Marshal(r)
	if _, err := e.kv(bus.BucketRegions).Put(context.Background(), r.Region, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteRegion(name string) {
	e.t.Helper()
	if err := e.kv(bus.BucketRegions).Delete(context.Background(), name); err != nil {
		e.t.Fatal(err)
	}
}

// health reads lb_health/name; ok is false when there is none.
func (e *env) health(name string) (model.Health, bool, error) {
	ent, err := e.kv(bus.BucketHealth).Get(context.Background(), name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return model.Health{}, false, nil
	}
	if err != nil {
		return model.Health{}, false, err
	}
	var h model.Health
	if err := json.Unmarshal(ent.Value(), &h); err != nil {
		return h, false, err
	}
	return h, true, nil
}

func (e *env) waitStatus(name, status string, timeout time.Duration) model.Health {
	e.t.Helper()
	var h model.Health
	poll.Until(e.t, timeout, name+" "+status, func() error {
		var ok bool
		var err error
		h, ok, err = e.health(name)
		if err != nil {
			return err
		}
		if !ok || h.Status != status {
			return fmt.Errorf("health %+v", h)
		}
		return nil
	})
	return h
}

// checkCmd sends lb.cmd.health.check as apigw does.
func (e *env) checkCmd(region string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Request(ctx, e.nc, bus.SubjectCmdHealthCheck, model.HealthCheckRequest{Region: region}, out)
}

// streamMessages returns the data of every message on subject in stream,
// oldest first.
func (e *env) streamMessages(stream, subject string) [][]byte {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		e.t.Fatal(err)
	}
	pending := cons.CachedInfo().NumPending
	var out [][]byte
	for uint64(len(out)) < pending {
		batch, err := cons.Fetch(int(pending)-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m.Data())
			n++
		}
		if n == 0 {
			break
		}
	}
	return out
}

// healthEvents returns the health.changed events of region kept by LB_EVENTS.
func (e *env) healthEvents(region string) []model.Event {
	e.t.Helper()
	var evs []model.Event
	for _, d := range e.streamMessages(bus.StreamEvents, bus.HealthEventsSubject(region)) {
		var ev model.Event
		if err := json.Unmarshal(d, &ev); err != nil {
			e.t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func transitions(evs []model.Event) string {
	var parts []string
	for _, ev := range evs {
		parts = append(parts, ev.From+">"+ev.To)
	}
	return strings.Join(parts, ",")
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
