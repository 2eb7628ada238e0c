package failover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		// HTTP keep-alive goroutines of test servers and transports end
		// shortly after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// fasthttp (apigw) refreshes its Date header from one process-wide
		// goroutine; its worker-pool cleaner exits after its idle sleep.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		// The router's fasthttp client sweeps idle connections on a timer
		// of its own (the router's tests ignore it too).
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

// Timings of the integration tests: short, so that a run takes seconds,
// with bounds generous enough for a loaded two-core machine.
const (
	checkInterval = 250 * time.Millisecond
	fallThreshold = 3
	riseThreshold = 2
	leaseTTL      = time.Second
	failbackDelay = 2 * time.Second
)

// failoverBound is the contract's bound on detection: interval x threshold
// + 1 s after a region starts failing, it is failed over.
const failoverBound = checkInterval*fallThreshold + time.Second

// testLog returns a logger that writes to the test log when
// FAILOVER_TEST_LOGS is set, and discards otherwise.
func testLog(t *testing.T, name string) *slog.Logger {
	if os.Getenv("FAILOVER_TEST_LOGS") == "" {
		return logging.Discard()
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("svc", name)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// sys is one embedded NATS server with the services a test starts on it.
type sys struct {
	t  *testing.T
	ns *embeddednats.Server
	nc *nats.Conn
	js jetstream.JetStream
}

func newSys(t *testing.T) *sys {
	t.Helper()
	ns := embeddednats.StartForTest(t)
	s := &sys{t: t, ns: ns}
	s.nc = s.connect("test")
	var err error
	if s.js, err = jetstream.New(s.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, s.js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sys) connect(name string) *nats.Conn {
	s.t.Helper()
	nc, err := bus.Connect(context.Background(), name, s.ns.ClientURL(), logging.Discard())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	poll.Until(s.t, 10*time.Second, "nats connected", func() error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	return nc
}

// running is a service started by run.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// run runs svc until the test ends (or stop is called) and checks that Run
// returns nil.
func run(t *testing.T, svc interface{ Run(context.Context) error }) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("service did not stop within 30s")
		}
	})
	return r.err
}

func (s *sys) startConfigMgr() {
	s.t.Helper()
	cfg := configmgr.DefaultConfig()
	cfg.URL = s.ns.ClientURL()
	cfg.MetricsAddr = "off"
	svc, err := configmgr.New(context.Background(), s.connect("configmgr"), cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	run(s.t, svc)
	poll.Until(s.t, 10*time.Second, "configmgr answers", func() error {
		_, err := s.nc.Request("$SRV.PING."+bus.ServiceConfigMgr, nil, 500*time.Millisecond)
		return err
	})
}

func (s *sys) startHealthChecker(id string) {
	s.t.Helper()
	cfg := healthchecker.DefaultConfig()
	cfg.URL = s.ns.ClientURL()
	cfg.MetricsAddr = "off"
	cfg.MemberID = id
	cfg.Interval = config.Duration(checkInterval)
	cfg.Timeout = config.Duration(200 * time.Millisecond)
	cfg.FailureThreshold = fallThreshold
	cfg.RecoveryThreshold = riseThreshold
	svc, err := healthchecker.New(context.Background(), s.connect(id), cfg, testLog(s.t, id), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	run(s.t, svc)
}

// replica is one failover manager with its own NATS connection.
type replica struct {
	svc *failover.Service
	nc  *nats.Conn
	run *running
	reg *prometheus.Registry
}

func (s *sys) startFailover(id string, mutate func(*failover.Config), opts ...failover.Option) *replica {
	s.t.Helper()
	cfg := failover.DefaultConfig()
	cfg.URL = s.ns.ClientURL()
	cfg.MetricsAddr = "off"
	cfg.ID = id
	cfg.LeaseTTL = config.Duration(leaseTTL)
	cfg.FailbackDelay = config.Duration(failbackDelay)
	if mutate != nil {
		mutate(&cfg)
	}
	nc := s.connect(id)
	reg := prometheus.NewRegistry()
	svc, err := failover.New(context.Background(), nc, cfg, testLog(s.t, id), reg, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	return &replica{svc: svc, nc: nc, run: run(s.t, svc), reg: reg}
}

func (s *sys) startRouter() *router.Service {
	s.t.Helper()
	cfg := router.DefaultConfig()
	cfg.URL = s.ns.ClientURL()
	cfg.Addr = "127.0.0.1:0"
	cfg.MetricsAddr = "off"
	cfg.ID = "router-1"
	cfg.StateFile = filepath.Join(s.t.TempDir(), "router-state.json")
	cfg.ShutdownGrace = config.Duration(5 * time.Second)
	svc, err := router.New(context.Background(), s.connect("router"), cfg, testLog(s.t, "router"), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	run(s.t, svc)
	select {
	case <-svc.Synced():
	case <-time.After(20 * time.Second):
		s.t.Fatal("router did not sync")
	}
	return svc
}

// region is one httptest region: it answers every path with 200 and its
// name, or 503 while failing; it counts the proxied (non-health) requests.
type region struct {
	name    string
	srv     *httptest.Server
	failing atomic.Bool
	// flapping alternates good and bad health answers.
	flapping atomic.Bool
	flips    atomic.Int64
	delay    time.Duration
	served   atomic.Int64
}

func newRegion(t *testing.T, name string, delay time.Duration) *region {
	t.Helper()
	r := &region{name: name, delay: delay}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.delay > 0 {
			select {
			case <-time.After(r.delay):
			case <-req.Context().Done():
				return
			}
		}
		if req.URL.Path != "/health" {
			r.served.Add(1)
		} else if r.flapping.Load() {
			if r.flips.Add(1)%2 == 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		if r.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, r.name)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// addRegions registers the regions through configmgr.
func (s *sys) addRegions(regions ...*region) {
	s.t.Helper()
	for _, r := range regions {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := bus.Request(ctx, s.nc, bus.SubjectCmdConfigRegionAdd, model.AddRegionRequest{Region: r.name, Endpoint: r.srv.URL}, nil)
		cancel()
		if err != nil {
			s.t.Fatalf("add region %s: %v", r.name, err)
		}
	}
}

func (s *sys) kv(bucket string) jetstream.KeyValue {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, bucket)
	if err != nil {
		s.t.Fatal(err)
	}
	return kv
}

// health reads a region's health (nil if none).
func (s *sys) health(name string) *model.Health {
	var h model.Health
	if !s.get(bus.BucketHealth, name, &h) {
		return nil
	}
	return &h
}

// failoverOf reads a region's failover (nil if none).
func (s *sys) failoverOf(name string) *model.Failover {
	var f model.Failover
	if !s.get(bus.BucketFailover, name, &f) {
		return nil
	}
	return &f
}

func (s *sys) get(bucket, key string, v any) bool {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.kv(bucket).Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		s.t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		s.t.Fatalf("decode %s/%s: %v", bucket, key, err)
	}
	return true
}

// waitHealthy waits until every region was checked healthy.
func (s *sys) waitHealthy(regions ...*region) {
	s.t.Helper()
	for _, r := range regions {
		poll.Until(s.t, 15*time.Second, r.name+" healthy", func() error {
			if h := s.health(r.name); h == nil || h.Status != model.StatusHealthy {
				return fmt.Errorf("health %+v", h)
			}
			return nil
		})
	}
}

// eventLog follows the failover events kept by LB_EVENTS: what a consumer
// of the stream sees, after de-duplication.
type eventLog struct {
	mu     sync.Mutex
	events []model.Event
}

func (s *sys) followEvents() *eventLog {
	s.t.Helper()
	l := &eventLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.SubjectEventsFailoverAll}})
	if err != nil {
		s.t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ev model.Event
		if json.Unmarshal(msg.Data(), &ev) == nil {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
		}
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		cc.Stop()
		select {
		case <-cc.Closed():
		case <-time.After(5 * time.Second):
		}
	})
	return l
}

// matching returns the events of type typ from region from.
func (l *eventLog) matching(typ, from string) []model.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []model.Event
	for _, e := range l.events {
		if e.Type == typ && e.FromRegion == from {
			out = append(out, e)
		}
	}
	return out
}

func (l *eventLog) all() []model.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]model.Event(nil), l.events...)
}

// waitEvent waits for exactly one event of typ from region and returns it.
func (l *eventLog) waitEvent(t *testing.T, timeout time.Duration, typ, from string) model.Event {
	t.Helper()
	poll.Until(t, timeout, typ+" "+from, func() error {
		if len(l.matching(typ, from)) == 0 {
			return errors.New("no event")
		}
		return nil
	})
	evs := l.matching(typ, from)
	if len(evs) != 1 {
		t.Fatalf("%d %s events for %s, want 1: %+v", len(evs), typ, from, evs)
	}
	return evs[0]
}

// leaderTimeline records leadership changes of every replica.
type leaderTimeline struct {
	mu     sync.Mutex
	events []leaderEvent
}

type leaderEvent struct {
	id      string
	leading bool
	term    uint64
	at      time.Time
}

func (tl *leaderTimeline) observe(id string, leading bool, term uint64) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, leaderEvent{id, leading, term, time.Now()})
}

// leader is the replica that leads by its own account ("" if none).
func (tl *leaderTimeline) leader() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	cur := ""
	for _, e := range tl.events {
		if e.leading {
			cur = e.id
		} else if e.id == cur {
			cur = ""
		}
	}
	return cur
}

// check fails if two replicas ever led at once or a term was won twice.
func (tl *leaderTimeline) check(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	cur := ""
	terms := map[uint64]bool{}
	for _, e := range tl.events {
		if !e.leading {
			if e.id == cur {
				cur = ""
			}
			continue
		}
		if cur != "" {
			t.Fatalf("%s became leader (term %d) while %s led: %+v", e.id, e.term, cur, tl.events)
		}
		if terms[e.term] {
			t.Fatalf("term %d won twice: %+v", e.term, tl.events)
		}
		terms[e.term] = true
		cur = e.id
	}
}

// client is an HTTP client for the router with its own transport.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// spread sends n GETs through the router and counts them by X-LB-Region.
func spread(t *testing.T, c *http.Client, routerAddr string, n int) (map[string]int, error) {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		resp, err := c.Get(fmt.Sprintf("http://%s/spread/%d", routerAddr, i))
		if err != nil {
			return counts, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return counts, fmt.Errorf("status %d", resp.StatusCode)
		}
		counts[resp.Header.Get("X-LB-Region")]++
	}
	return counts, nil
}

// startPair runs two failover replicas that report leadership to tl and
// waits until one of them leads.
func (s *sys) startPair(tl *leaderTimeline) map[string]*replica {
	s.t.Helper()
	reps := map[string]*replica{
		"fo-1": s.startFailover("fo-1", nil, failover.WithLeaderObserver(tl.observe)),
		"fo-2": s.startFailover("fo-2", nil, failover.WithLeaderObserver(tl.observe)),
	}
	poll.Until(s.t, 5*time.Second, "a leader", func() error {
		if tl.leader() == "" {
			return errors.New("no leader")
		}
		return nil
	})
	return reps
}
