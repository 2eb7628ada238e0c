package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded server's store and the client's last reconnect timer
		// may need a moment after Shutdown/Close.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connect(t *testing.T, s *embeddednats.Server) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), "test", s.ClientURL(), logging.Discard())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	eventually(t, 10*time.Second, nc.IsConnected, "not connected to %s", s.ClientURL())
	return nc
}

func setup(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := embeddednats.StartForTest(t)
	nc := connect(t, s)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---------------------------------------------------------------- infra

func TestEnsureInfraCreatesEverything(t *testing.T) {
	_, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	in := bus.DefaultInfra()
	require.NoError(t, bus.EnsureInfra(ctx, js, in))
	require.NoError(t, bus.EnsureInfra(ctx, js, in), "idempotent")

	wantBuckets := map[string]time.Duration{
		bus.BucketRegions: 0, bus.BucketConfig: 0, bus.BucketHealth: 0, bus.BucketFailover: 0,
		bus.BucketRouters: in.RouterTTL, bus.BucketMembers: in.MemberTTL, bus.BucketLeases: in.LeaseTTL,
		bus.BucketCerts: 0,
	}
	for b, ttl := range wantBuckets {
		kv, err := js.KeyValue(ctx, b)
		require.NoError(t, err, b)
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		assert.Equal(t, ttl, st.TTL(), "ttl of %s", b)
		assert.Equal(t, b, st.Bucket())
	}
	history := map[string]int64{bus.BucketRegions: 5, bus.BucketConfig: 5, bus.BucketHealth: 1, bus.BucketFailover: 5}
	for b, h := range history {
		kv, err := js.KeyValue(ctx, b)
		require.NoError(t, err)
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		assert.Equal(t, h, st.History(), "history of %s", b)
	}

	hs, err := js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	cfg := hs.CachedInfo().Config
	assert.Equal(t, []string{bus.SubjectHealthResultsAll}, cfg.Subjects)
	assert.Equal(t, 24*time.Hour, cfg.MaxAge)
	assert.Equal(t, int64(1000), cfg.MaxMsgsPerSubject)
	assert.Equal(t, jetstream.FileStorage, cfg.Storage)

	es, err := js.Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	cfg = es.CachedInfo().Config
	assert.Equal(t, []string{bus.SubjectEventsAll}, cfg.Subjects)
	assert.Equal(t, 7*24*time.Hour, cfg.MaxAge)
	assert.Equal(t, 2*time.Minute, cfg.Duplicates)

	// Nothing else was created.
	n := 0
	for range js.StreamNames(ctx).Name() {
		n++
	}
	assert.Equal(t, len(wantBuckets)+2, n, "8 bucket streams + 2 streams")
}

func TestEnsureInfraUpdatesLimits(t *testing.T) {
	_, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, bus.EnsureInfra(ctx, js, bus.DefaultInfra()))

	// Put data in so that an update must keep it.
	kv, err := js.KeyValue(ctx, bus.BucketRegions)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "us-east", []byte(`{"region":"us-east"}`))
	require.NoError(t, err)

	changed := bus.Infra{
		Replicas:        1,
		HealthMaxAge:    time.Hour,
		HealthPerRegion: 50,
		EventsMaxAge:    48 * time.Hour,
		RouterTTL:       30 * time.Second,
		MemberTTL:       20 * time.Second,
		LeaseTTL:        7 * time.Second,
	}
	// A service that does not own the health history leaves LB_HEALTH alone.
	require.NoError(t, bus.EnsureInfra(ctx, js, changed))
	hs, err := js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	assert.Equal(t, 24*time.Hour, hs.CachedInfo().Config.MaxAge, "not the owner: LB_HEALTH kept")
	assert.Equal(t, int64(1000), hs.CachedInfo().Config.MaxMsgsPerSubject)

	changed.OwnsHealthHistory = true
	require.NoError(t, bus.EnsureInfra(ctx, js, changed))
	require.NoError(t, bus.EnsureInfra(ctx, js, changed), "idempotent after a change")

	hs, err = js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, hs.CachedInfo().Config.MaxAge)
	assert.Equal(t, int64(50), hs.CachedInfo().Config.MaxMsgsPerSubject)
	es, err := js.Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	assert.Equal(t, 48*time.Hour, es.CachedInfo().Config.MaxAge)
	for b, ttl := range map[string]time.Duration{bus.BucketRouters: 30 * time.Second, bus.BucketMembers: 20 * time.Second, bus.BucketLeases: 7 * time.Second} {
		kv, err := js.KeyValue(ctx, b)
		require.NoError(t, err)
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		assert.Equal(t, ttl, st.TTL(), b)
	}
	e, err := kv.Get(ctx, "us-east")
	require.NoError(t, err, "data survives an update")
	assert.JSONEq(t, `{"region":"us-east"}`, string(e.Value()))

	// Defaults from a non-owner keep the owner's limits; from the owner
	// they apply.
	require.NoError(t, bus.EnsureInfra(ctx, js, bus.DefaultInfra()))
	hs, err = js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, hs.CachedInfo().Config.MaxAge)
	owner := bus.DefaultInfra()
	owner.OwnsHealthHistory = true
	require.NoError(t, bus.EnsureInfra(ctx, js, owner))
	hs, err = js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	assert.Equal(t, 24*time.Hour, hs.CachedInfo().Config.MaxAge)
}

func TestEnsureInfraShortLimits(t *testing.T) {
	// Ages shorter than the duplicate window (HEALTH_HISTORY_MAX_AGE=30s,
	// short TTLs) must still be accepted by the server.
	_, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	in := bus.Infra{HealthMaxAge: 30 * time.Second, EventsMaxAge: time.Minute, RouterTTL: time.Second, MemberTTL: time.Second, LeaseTTL: time.Second, OwnsHealthHistory: true}
	require.NoError(t, bus.EnsureInfra(ctx, js, in))
	hs, err := js.Stream(ctx, bus.StreamHealth)
	require.NoError(t, err)
	assert.Equal(t, 30*time.Second, hs.CachedInfo().Config.MaxAge)
	assert.LessOrEqual(t, hs.CachedInfo().Config.Duplicates, 30*time.Second)
}

func TestInfraDefaults(t *testing.T) {
	d := bus.DefaultInfra()
	assert.Equal(t, bus.Infra{}.StreamConfigs(), d.StreamConfigs(), "zero Infra means defaults")
	assert.Equal(t, bus.Infra{}.KeyValueConfigs(), d.KeyValueConfigs())
	assert.Equal(t, bus.Infra{Replicas: -1, HealthMaxAge: -1}.StreamConfigs(), d.StreamConfigs())
	three := bus.Infra{Replicas: 3}
	for _, c := range three.KeyValueConfigs() {
		assert.Equal(t, 3, c.Replicas, c.Bucket)
	}
	for _, c := range three.StreamConfigs() {
		assert.Equal(t, 3, c.Replicas, c.Name)
	}
	names := map[string]bool{}
	for _, c := range d.KeyValueConfigs() {
		names[c.Bucket] = true
	}
	for _, b := range []string{bus.BucketRegions, bus.BucketConfig, bus.BucketHealth, bus.BucketFailover, bus.BucketRouters, bus.BucketMembers, bus.BucketLeases} {
		assert.True(t, names[b], b)
	}
}

func TestEnsureInfraFailsWithoutJetStreamThenRetrySucceeds(t *testing.T) {
	_, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	var calls atomic.Int32
	err := bus.Retry(ctx, func(ctx context.Context) error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return bus.EnsureInfra(ctx, js, bus.DefaultInfra())
	})
	require.NoError(t, err)
	assert.Equal(t, int32(3), calls.Load())
}

// ---------------------------------------------------------------- names

func TestSubjects(t *testing.T) {
	assert.Equal(t, "lb.health.results.us-east", bus.HealthResultsSubject("us-east"))
	assert.Equal(t, "lb.events.health.us-east", bus.HealthEventsSubject("us-east"))
	assert.Equal(t, "lb.events.failover.us-east", bus.FailoverEventsSubject("us-east"))
	for _, s := range []string{bus.SubjectCmdConfigRegionAdd, bus.SubjectCmdConfigRegionUpdate, bus.SubjectCmdConfigRegionRemove,
		bus.SubjectCmdConfigStrategySet, bus.SubjectCmdHealthCheck, bus.SubjectCmdFailoverTrigger, bus.SubjectCmdFailoverClear} {
		assert.True(t, strings.HasPrefix(s, "lb.cmd."), s)
	}
	assert.True(t, strings.HasPrefix(bus.SubjectEventsConfig, "lb.events."))
}

// ---------------------------------------------------------------- commands

const (
	subjEcho    = "lb.cmd.test.echo"
	subjFail    = "lb.cmd.test.fail"
	subjSlow    = "lb.cmd.test.slow"
	subjBare    = "lb.cmd.test.bare"
	subjNoMsg   = "lb.cmd.test.nomsg"
	subjNoStat  = "lb.cmd.test.nostatus"
	subjNewline = "lb.cmd.test.newline"
	subjDead    = "lb.cmd.test.deadline"
)

type testService struct {
	release chan struct{}
	gotReq  chan model.AddRegionRequest
}

func startService(t *testing.T, nc *nats.Conn) *testService {
	t.Helper()
	ts := &testService{release: make(chan struct{}), gotReq: make(chan model.AddRegionRequest, 100)}
	svc, err := micro.AddService(nc, micro.Config{Name: "lb-test", Version: "0.0.1", QueueGroup: "lb-test"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	t.Cleanup(func() { close(ts.release) })
	add := func(name, subject string, h micro.Handler) {
		require.NoError(t, svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)))
	}
	add("echo", subjEcho, bus.Handle(5*time.Second, func(_ context.Context, req model.AddRegionRequest) (model.Region, error) {
		ts.gotReq <- req
		w := model.DefaultWeight
		if req.Weight != nil {
			w = *req.Weight
		}
		return model.Region{Region: req.Region, Endpoint: req.Endpoint, Weight: w}, nil
	}))
	add("fail", subjFail, bus.Handle(5*time.Second, func(_ context.Context, req model.RemoveRegionRequest) (struct{}, error) {
		switch req.Region {
		case "exists":
			return struct{}{}, model.Conflict("region_exists", "region %q already exists", req.Region)
		case "internal":
			return struct{}{}, errors.New("disk on fire: secret detail")
		case "wrapped":
			return struct{}{}, errors.Join(errors.New("ctx"), model.Unavailable("down"))
		}
		return struct{}{}, model.NotFound(req.Region)
	}))
	add("slow", subjSlow, bus.Handle(5*time.Second, func(ctx context.Context, _ struct{}) (struct{}, error) {
		select {
		case <-ts.release:
		case <-ctx.Done():
		}
		return struct{}{}, nil
	}))
	add("bare", subjBare, micro.HandlerFunc(func(r micro.Request) {
		_ = r.Error("418", "teapot", []byte("not json"))
	}))
	add("nomsg", subjNoMsg, bus.Handle(5*time.Second, func(context.Context, struct{}) (struct{}, error) {
		return struct{}{}, &model.Error{Status: 409, Code: "conflict"}
	}))
	add("nostatus", subjNoStat, bus.Handle(5*time.Second, func(context.Context, struct{}) (struct{}, error) {
		return struct{}{}, &model.Error{Code: "odd", Message: "no status"}
	}))
	add("newline", subjNewline, bus.Handle(5*time.Second, func(context.Context, struct{}) (struct{}, error) {
		return struct{}{}, model.Invalid("bad", "line one\r\nInjected: header\nline three")
	}))
	add("deadline", subjDead, bus.Handle(1234*time.Millisecond, func(ctx context.Context, _ struct{}) (map[string]float64, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		return map[string]float64{"left": time.Until(dl).Seconds()}, nil
	}))
	return ts
}

func requireModelError(t *testing.T, err error, status int, code string) *model.Error {
	t.Helper()
	require.Error(t, err)
	var e *model.Error
	require.Truef(t, errors.As(err, &e), "%v (%T) is not a *model.Error", err, err)
	assert.Equal(t, status, e.Status, "%v", err)
	assert.Equal(t, code, e.Code, "%v", err)
	return e
}

// rawRequester sends raw bytes instead of the encoded request.
type rawRequester struct {
	nc   *nats.Conn
	body []byte
}

func (r rawRequester) RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	msg.Data = r.body
	return r.nc.RequestMsgWithContext(ctx, msg)
}

func TestRequestHandle(t *testing.T) {
	nc, _ := setup(t)
	ts := startService(t, nc)

	t.Run("success", func(t *testing.T) {
		w := 2.5
		var out model.Region
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "us-east", Endpoint: "http://127.0.0.1:1", Weight: &w}, &out)
		require.NoError(t, err)
		assert.Equal(t, model.Region{Region: "us-east", Endpoint: "http://127.0.0.1:1", Weight: 2.5}, out)
		got := <-ts.gotReq
		assert.Equal(t, "us-east", got.Region)
	})
	t.Run("nil out", func(t *testing.T) {
		require.NoError(t, bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "a"}, nil))
		<-ts.gotReq
	})
	t.Run("empty body is the zero request", func(t *testing.T) {
		var out model.Region
		require.NoError(t, bus.Request(ctxT(t, 5*time.Second), rawRequester{nc, nil}, subjEcho, nil, &out))
		assert.Equal(t, model.AddRegionRequest{}, <-ts.gotReq)
		assert.Equal(t, model.DefaultWeight, out.Weight)
	})
	t.Run("typed errors keep status and code", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjFail, model.RemoveRegionRequest{Region: "nope"}, nil)
		e := requireModelError(t, err, 404, "region_not_found")
		assert.Equal(t, `region "nope" not found`, e.Message)
		assert.ErrorIs(t, err, model.ErrRegionNotFound)

		err = bus.Request(ctxT(t, 5*time.Second), nc, subjFail, model.RemoveRegionRequest{Region: "exists"}, nil)
		requireModelError(t, err, 409, "region_exists")
		assert.ErrorIs(t, err, model.ErrRegionExists)

		err = bus.Request(ctxT(t, 5*time.Second), nc, subjFail, model.RemoveRegionRequest{Region: "wrapped"}, nil)
		requireModelError(t, err, 503, "unavailable")
	})
	t.Run("untyped handler error is a 500 without details", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjFail, model.RemoveRegionRequest{Region: "internal"}, nil)
		e := requireModelError(t, err, 500, "internal")
		assert.NotContains(t, e.Message, "secret")
	})
	t.Run("unknown fields are a 400", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, json.RawMessage(`{"region":"a","regoin":"b"}`), nil)
		requireModelError(t, err, 400, "invalid_json")
	})
	for _, body := range []string{`{`, `[]`, `"x"`, `{"region":1}`, `{"region":"a"} {"region":"b"}`, `{"region":"a"}}`, `{"region":"a"} garbage`} {
		t.Run("bad body "+body, func(t *testing.T) {
			err := bus.Request(ctxT(t, 5*time.Second), rawRequester{nc, []byte(body)}, subjEcho, nil, nil)
			requireModelError(t, err, 400, "invalid_json")
		})
	}
	t.Run("error without json body", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjBare, struct{}{}, nil)
		e := requireModelError(t, err, 418, "error")
		assert.Equal(t, "teapot", e.Message)
	})
	t.Run("typed error without message still answers", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjNoMsg, struct{}{}, nil)
		requireModelError(t, err, 409, "conflict")
	})
	t.Run("typed error without status is a 500", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjNoStat, struct{}{}, nil)
		e := requireModelError(t, err, 500, "odd")
		assert.Equal(t, "no status", e.Message)
	})
	t.Run("multi-line message crosses intact", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjNewline, struct{}{}, nil)
		e := requireModelError(t, err, 400, "bad")
		assert.Equal(t, "line one\r\nInjected: header\nline three", e.Message)
		// The error header stays one line: nothing leaks into other headers.
		reply, err := nc.Request(subjNewline, nil, 5*time.Second)
		require.NoError(t, err)
		assert.Empty(t, reply.Header.Get("Injected"))
		assert.Equal(t, "400", reply.Header.Get(micro.ErrorCodeHeader))
		assert.NotContains(t, reply.Header.Get(micro.ErrorHeader), "\n")
	})
	t.Run("handler context has the timeout", func(t *testing.T) {
		var out map[string]float64
		require.NoError(t, bus.Request(ctxT(t, 5*time.Second), nc, subjDead, struct{}{}, &out))
		assert.InDelta(t, 1.234, out["left"], 0.5)
	})
	t.Run("no responders is 503", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, "lb.cmd.test.nobody", struct{}{}, nil)
		requireModelError(t, err, 503, "unavailable")
		assert.ErrorIs(t, err, model.ErrUnavailable)
	})
	t.Run("timeout is 503", func(t *testing.T) {
		start := time.Now()
		err := bus.Request(ctxT(t, 300*time.Millisecond), nc, subjSlow, struct{}{}, nil)
		requireModelError(t, err, 503, "unavailable")
		assert.Less(t, time.Since(start), 4*time.Second)
	})
	t.Run("cancelled is 503", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := bus.Request(ctx, nc, subjEcho, struct{}{}, nil)
		requireModelError(t, err, 503, "unavailable")
	})
	t.Run("unencodable request", func(t *testing.T) {
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, make(chan int), nil)
		require.Error(t, err)
	})
	t.Run("undecodable reply", func(t *testing.T) {
		var out []string
		err := bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "a"}, &out)
		require.Error(t, err)
		<-ts.gotReq
	})
}

func TestRequestOnClosedConnection(t *testing.T) {
	nc, _ := setup(t)
	nc.Close()
	err := bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, struct{}{}, nil)
	requireModelError(t, err, 503, "unavailable")
}

// A command sent while NATS is away is refused, and does not run later when
// NATS is back (a publish while reconnecting would be buffered and sent).
func TestRequestWhileReconnectingIsNotSentLater(t *testing.T) {
	s := embeddednats.StartForTest(t)
	// One connection for both ends: after a reconnect it re-subscribes
	// before it flushes what it buffered, so a buffered command would reach
	// the service.
	nc := connect(t, s)
	ts := startService(t, nc)
	addr := s.NATS().Addr().String()
	s.Shutdown()
	poll.True(t, 10*time.Second, "the client sees NATS gone", func() bool { return nc.Status() == nats.RECONNECTING })
	err := bus.Request(ctxT(t, 2*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "late"}, nil)
	requireModelError(t, err, 503, "unavailable")
	s2, err := embeddednats.Start(embeddednats.Options{Listen: addr, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(s2.Shutdown)
	poll.True(t, 10*time.Second, "the connection back", nc.IsConnected)
	// A round trip on the same connection: anything buffered was flushed
	// before it, and the service answers in order.
	require.NoError(t, bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "now"}, nil))
	got := <-ts.gotReq
	assert.Equal(t, "now", got.Region, "the refused command ran after NATS came back")
}

func TestRequestServedByQueueGroup(t *testing.T) {
	nc, _ := setup(t)
	ts1 := startService(t, nc)
	ts2 := startService(t, nc)
	for i := 0; i < 20; i++ {
		require.NoError(t, bus.Request(ctxT(t, 5*time.Second), nc, subjEcho, model.AddRegionRequest{Region: "a"}, nil))
	}
	assert.Equal(t, 20, len(ts1.gotReq)+len(ts2.gotReq), "every request answered exactly once")
}

// ---------------------------------------------------------------- events

func TestPublishEventDeduplicates(t *testing.T) {
	_, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, bus.EnsureInfra(ctx, js, bus.DefaultInfra()))

	ev := model.Event{Type: model.EventRegionAdded, At: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Region: "us-east",
		RegionDoc: &model.Region{Region: "us-east", Endpoint: "https://x", Weight: 1}}
	require.NoError(t, bus.PublishEvent(ctx, js, bus.SubjectEventsConfig, ev, "region.added/us-east/1"))
	require.NoError(t, bus.PublishEvent(ctx, js, bus.SubjectEventsConfig, ev, "region.added/us-east/1"))

	st, err := js.Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "same msg id stored once")

	msg, err := st.GetMsg(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, bus.SubjectEventsConfig, msg.Subject)
	var back model.Event
	require.NoError(t, json.Unmarshal(msg.Data, &back))
	assert.Equal(t, ev, back)
	assert.Equal(t, "region.added/us-east/1", msg.Header.Get(jetstream.MsgIDHeader))

	require.NoError(t, bus.PublishEvent(ctx, js, bus.SubjectEventsConfig, ev, "region.added/us-east/2"))
	require.NoError(t, bus.PublishEvent(ctx, js, bus.HealthEventsSubject("us-east"), model.Event{Type: model.EventHealthChanged}, ""))
	require.NoError(t, bus.PublishEvent(ctx, js, bus.HealthEventsSubject("us-east"), model.Event{Type: model.EventHealthChanged}, ""))
	info, err = st.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(4), info.State.Msgs, "other ids and no id are all kept")
}

func TestPublishEventWithoutStream(t *testing.T) {
	_, js := setup(t)
	err := bus.PublishEvent(ctxT(t, 5*time.Second), js, "lb.events.config", model.Event{Type: "x"}, "id")
	require.Error(t, err, "no stream: no ack")
	assert.Contains(t, err.Error(), "lb.events.config")
}

// ---------------------------------------------------------------- connect

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

func TestConnectBeforeServerStartsAndAfterRestart(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	nc, err := bus.Connect(context.Background(), "test", url, logging.Discard())
	require.NoError(t, err, "the first connect is retried in the background")
	defer nc.Close()
	assert.False(t, nc.IsConnected())

	srv, err := embeddednats.Start(embeddednats.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(port)})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	eventually(t, 20*time.Second, nc.IsConnected, "client did not connect after the server started")

	// Works end to end.
	sub, err := nc.SubscribeSync("lb.test")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("lb.test", []byte("1")))
	_, err = sub.NextMsg(5 * time.Second)
	require.NoError(t, err)

	before := nc.Stats().Reconnects
	srv2 := embeddednats.RestartForTest(t, srv)
	eventually(t, 20*time.Second, func() bool { return nc.IsConnected() && nc.Stats().Reconnects > before },
		"client did not reconnect after a restart")
	assert.Equal(t, srv2.ClientURL(), srv.ClientURL())

	// The subscription was restored by the reconnect.
	require.NoError(t, nc.Publish("lb.test", []byte("2")))
	m, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, "2", string(m.Data))

	// JetStream state survives the restart (same store).
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, bus.Retry(ctx, func(ctx context.Context) error { return bus.EnsureInfra(ctx, js, bus.DefaultInfra()) }))

	bus.Drain(ctxT(t, 10*time.Second), nc)
	assert.True(t, nc.IsClosed())
}

func TestConnectErrorRedactsCredentials(t *testing.T) {
	_, err := bus.Connect(context.Background(), "test", "nats://user:hunter2@127.0.0.1:1,nats://a b", logging.Discard())
	if err == nil {
		t.Skip("nats.go accepted the URL list")
	}
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestDrain(t *testing.T) {
	t.Run("closes the connection and finishes in-flight messages", func(t *testing.T) {
		nc, _ := setup(t)
		var handled atomic.Int32
		started := make(chan struct{}, 1)
		_, err := nc.Subscribe("lb.test.drain", func(m *nats.Msg) {
			select {
			case started <- struct{}{}:
			default:
			}
			time.Sleep(200 * time.Millisecond)
			handled.Add(1)
		})
		require.NoError(t, err)
		for i := 0; i < 3; i++ {
			require.NoError(t, nc.Publish("lb.test.drain", nil))
		}
		require.NoError(t, nc.Flush())
		<-started
		bus.Drain(ctxT(t, 10*time.Second), nc)
		assert.True(t, nc.IsClosed())
		assert.Equal(t, int32(3), handled.Load(), "in-flight messages finished")
	})
	t.Run("nil and closed", func(t *testing.T) {
		bus.Drain(context.Background(), nil)
		nc, _ := setup(t)
		nc.Close()
		bus.Drain(context.Background(), nc)
		assert.True(t, nc.IsClosed())
	})
	t.Run("ctx ends first", func(t *testing.T) {
		nc, _ := setup(t)
		release := make(chan struct{})
		defer close(release)
		_, err := nc.Subscribe("lb.test.stuck", func(*nats.Msg) { <-release })
		require.NoError(t, err)
		require.NoError(t, nc.Publish("lb.test.stuck", nil))
		require.NoError(t, nc.Flush())
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		bus.Drain(ctx, nc)
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.True(t, nc.IsClosed())
	})
	t.Run("while not connected", func(t *testing.T) {
		nc, err := bus.Connect(context.Background(), "test", "nats://127.0.0.1:"+strconv.Itoa(freePort(t)), logging.Discard())
		require.NoError(t, err)
		start := time.Now()
		bus.Drain(ctxT(t, 5*time.Second), nc)
		assert.True(t, nc.IsClosed())
		assert.Less(t, time.Since(start), 4*time.Second)
	})
}

// ---------------------------------------------------------------- retry

func TestRetry(t *testing.T) {
	t.Run("succeeds at once", func(t *testing.T) {
		calls := 0
		require.NoError(t, bus.Retry(context.Background(), func(context.Context) error { calls++; return nil }))
		assert.Equal(t, 1, calls)
	})
	t.Run("retries until success", func(t *testing.T) {
		calls := 0
		require.NoError(t, bus.Retry(ctxT(t, 20*time.Second), func(context.Context) error {
			calls++
			if calls < 3 {
				return errors.New("not yet")
			}
			return nil
		}))
		assert.Equal(t, 3, calls)
	})
	t.Run("stops on cancel while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cause := errors.New("nats down")
		var calls atomic.Int32
		done := make(chan error, 1)
		go func() {
			done <- bus.Retry(ctx, func(context.Context) error { calls.Add(1); return cause })
		}()
		eventually(t, 5*time.Second, func() bool { return calls.Load() >= 1 }, "fn never called")
		cancel()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.Canceled)
			assert.ErrorIs(t, err, cause, "the last error is kept")
		case <-time.After(5 * time.Second):
			t.Fatal("Retry did not stop on cancel")
		}
	})
	t.Run("stops when fn sees the cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := bus.Retry(ctx, func(context.Context) error { calls++; cancel(); return errors.New("x") })
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 1, calls)
	})
	t.Run("deadline", func(t *testing.T) {
		err := bus.Retry(ctxT(t, 300*time.Millisecond), func(context.Context) error { return errors.New("x") })
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// ---------------------------------------------------------------- ready

func TestReadyCheck(t *testing.T) {
	nc, js := setup(t)
	ctx := ctxT(t, 30*time.Second)
	ready := bus.ReadyCheck(nc, js, bus.BucketRegions, bus.BucketConfig)
	require.Error(t, ready(ctx), "buckets missing")
	require.NoError(t, bus.EnsureInfra(ctx, js, bus.DefaultInfra()))
	require.NoError(t, ready(ctx))
	require.NoError(t, bus.ReadyCheck(nc, js)(ctx), "no buckets: connection only")
	nc.Close()
	require.Error(t, ready(ctx))
}

// A revision is stale once seen unchanged for the TTL on this clock; any
// change restarts its age, and Reset starts it afresh.
func TestRevisionAge(t *testing.T) {
	var a bus.RevisionAge
	t0 := time.Now()
	ttl := 10 * time.Second
	steps := []struct {
		rev  uint64
		at   time.Duration
		want bool
	}{
		{5, 0, false},                 // first sight
		{5, 9 * time.Second, false},   // not yet
		{6, 12 * time.Second, false},  // renewed: age restarts
		{6, 21 * time.Second, false},  // 9 s old
		{6, 22 * time.Second, true},   // 10 s unchanged
		{6, 100 * time.Second, true},  // still
		{7, 101 * time.Second, false}, // taken over and renewed by another
	}
	for i, s := range steps {
		if got := a.Stale(s.rev, t0.Add(s.at), ttl); got != s.want {
			t.Fatalf("step %d (rev %d at %s): stale %v, want %v", i, s.rev, s.at, got, s.want)
		}
	}
	a.Reset(7, t0.Add(200*time.Second))
	if a.Stale(7, t0.Add(205*time.Second), ttl) || !a.Stale(7, t0.Add(210*time.Second), ttl) {
		t.Fatal("Reset did not restart the age")
	}
}
