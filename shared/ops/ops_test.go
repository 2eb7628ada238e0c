package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func decode(t *testing.T, body io.Reader) map[string]string {
	t.Helper()
	var m map[string]string
	require.NoError(t, json.NewDecoder(body).Decode(&m))
	return m
}

func testRegistry(t *testing.T) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "lb_test_total", Help: "test counter"})
	reg.MustRegister(c)
	c.Add(3)
	return reg
}

func TestHandler(t *testing.T) {
	reg := testRegistry(t)
	var readyErr error
	var gotDeadline bool
	h := ops.Handler(reg, func(ctx context.Context) error {
		_, gotDeadline = ctx.Deadline()
		return readyErr
	})

	t.Run("healthz", func(t *testing.T) {
		rec := get(t, h, http.MethodGet, "/healthz")
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		assert.Equal(t, "ok", decode(t, rec.Body)["status"])
	})
	t.Run("healthz ignores readiness", func(t *testing.T) {
		readyErr = errors.New("nats down")
		defer func() { readyErr = nil }()
		assert.Equal(t, http.StatusOK, get(t, h, http.MethodGet, "/healthz").Code)
	})
	t.Run("readyz ready", func(t *testing.T) {
		rec := get(t, h, http.MethodGet, "/readyz")
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "ready", decode(t, rec.Body)["status"])
		assert.True(t, gotDeadline, "the ready check is bounded")
	})
	t.Run("readyz not ready", func(t *testing.T) {
		readyErr = errors.New("nats not connected")
		defer func() { readyErr = nil }()
		rec := get(t, h, http.MethodGet, "/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		m := decode(t, rec.Body)
		assert.Equal(t, "not ready", m["status"])
		assert.Equal(t, "nats not connected", m["error"])
	})
	t.Run("readyz recovers", func(t *testing.T) {
		assert.Equal(t, http.StatusOK, get(t, h, http.MethodGet, "/readyz").Code)
	})
	t.Run("metrics", func(t *testing.T) {
		rec := get(t, h, http.MethodGet, "/metrics")
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Contains(t, rec.Body.String(), "lb_test_total 3")
		assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
	})
	t.Run("head is allowed", func(t *testing.T) {
		assert.Equal(t, http.StatusOK, get(t, h, http.MethodHead, "/healthz").Code)
	})
	t.Run("other methods", func(t *testing.T) {
		assert.Equal(t, http.StatusMethodNotAllowed, get(t, h, http.MethodPost, "/healthz").Code)
		assert.Equal(t, http.StatusMethodNotAllowed, get(t, h, http.MethodDelete, "/readyz").Code)
	})
	t.Run("unknown path", func(t *testing.T) {
		assert.Equal(t, http.StatusNotFound, get(t, h, http.MethodGet, "/").Code)
		assert.Equal(t, http.StatusNotFound, get(t, h, http.MethodGet, "/healthz/x").Code)
	})
}

func TestHandlerNilReady(t *testing.T) {
	h := ops.Handler(prometheus.NewRegistry(), nil)
	rec := get(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusOK, rec.Code)
}

func TestReadyzSlowCheckIsBounded(t *testing.T) {
	h := ops.Handler(prometheus.NewRegistry(), func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	start := time.Now()
	rec := get(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Less(t, time.Since(start), 4*time.Second)
}

func TestNewRegistry(t *testing.T) {
	reg := ops.NewRegistry()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	assert.True(t, names["go_goroutines"], "go collector")
	// Registering the same collectors again is refused: they are there.
	err = reg.Register(collectors.NewGoCollector())
	assert.Error(t, err)
}

func TestServerRun(t *testing.T) {
	reg := testRegistry(t)
	ready := true
	srv, err := ops.Listen("127.0.0.1:0", reg, func(context.Context) error {
		if !ready {
			return errors.New("not yet")
		}
		return nil
	}, logging.Discard())
	require.NoError(t, err)
	addr := srv.Addr()
	assert.True(t, strings.HasPrefix(addr, "127.0.0.1:"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := client.Get("http://" + addr + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, path)
		if path == "/metrics" {
			assert.Contains(t, string(body), "lb_test_total 3")
		}
	}

	// The port is taken while the server runs.
	_, err = ops.Listen(addr, reg, nil, logging.Discard())
	require.Error(t, err)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop on ctx cancel")
	}
	client.CloseIdleConnections()
	_, err = net.DialTimeout("tcp", addr, time.Second)
	assert.Error(t, err, "listener closed after Run")
}

func TestListenBadAddr(t *testing.T) {
	_, err := ops.Listen("256.0.0.1:1", prometheus.NewRegistry(), nil, logging.Discard())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "256.0.0.1:1")
}

func TestRunAlreadyCancelled(t *testing.T) {
	srv, err := ops.Listen("127.0.0.1:0", prometheus.NewRegistry(), nil, logging.Discard())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, srv.Run(ctx))
}
