package apigw

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, nil)
	// Just over 1 MiB of otherwise valid JSON.
	big := `{"region":"big","endpoint":"http://127.0.0.1:1","health_path":"/` + strings.Repeat("a", BodyLimit) + `"}`
	e.expect(e.do("POST", "/api/v1/lb/regions", big), 413, "body_too_large")
	e.expect(e.do("PUT", "/api/v1/lb/strategy", big), 413, "body_too_large")

	// A client that announces a huge body gets the JSON 413 at once,
	// without having to send it.
	conn, err := net.Dial("tcp", e.api.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /api/v1/lb/regions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", testKey, 64<<20)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	e.expect(response{status: resp.StatusCode, header: resp.Header, body: body}, 413, "body_too_large")

	// Rejected before routing, yet counted.
	m := e.doWith("GET", "/metrics", nil, nil)
	if !strings.Contains(string(m.body), `route="/api/v1/lb/*",status="413"`) {
		t.Fatalf("413 not in metrics:\n%s", m.body)
	}
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/nope", 404, "not_found"},
		{"GET", "/api/v1/lb/nope", 404, "not_found"},
		{"GET", "/api/v1/lb/regions/a/b", 404, "not_found"},
		{"PATCH", "/api/v1/lb/regions", 405, "method_not_allowed"},
		{"DELETE", "/api/v1/lb/status", 405, "method_not_allowed"},
		{"POST", "/api/v1/lb/regions/us-east", 405, "method_not_allowed"},
		{"GET", "/api/v1/lb/strategy", 405, "method_not_allowed"},
		{"GET", "/api/v1/lb/health/check", 405, "method_not_allowed"},
		{"POST", "/api/v1/lb/failover/status", 405, "method_not_allowed"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			e.expect(e.do(tc.method, tc.path, nil), tc.status, tc.code)
		})
	}
}

func TestPanicIsRecovered(t *testing.T) {
	// The route is added before Run, as fiber requires.
	e := newEnvWith(t, nil, func(s *Service) {
		s.app.Get(APIPrefix+"/test-panic", func(*fiber.Ctx) error { panic("boom") })
	})
	r := e.expect(e.do("GET", "/api/v1/lb/test-panic", nil), 500, "internal")
	if strings.Contains(string(r.body), "boom") {
		t.Fatalf("panic value leaked to the client: %s", r.body)
	}
	if !strings.Contains(e.logs.String(), "panic serving request") {
		t.Fatal("panic not logged")
	}
	e.expect(e.do("GET", "/api/v1/lb/status", nil), 200, "") // still serving
}

func TestDecodeStrict(t *testing.T) {
	type body struct {
		A string `json:"a"`
	}
	for _, tc := range []struct {
		in       string
		optional bool
		code     string
	}{
		{`{"a":"x"}`, false, ""},
		{` {"a":"x"}  `, false, ""},
		{"", true, ""},
		{"  ", false, "missing_body"},
		{`{"a":"x","b":1}`, false, "invalid_json"},
		{`{"a":1}`, false, "invalid_json"},
		{`{"a":"x"}{"a":"y"}`, false, "invalid_json"},
		{`{"a":"x"`, false, "invalid_json"},
		{`null x`, false, "invalid_json"},
	} {
		var b body
		err := decodeStrict([]byte(tc.in), &b, tc.optional)
		got := ""
		if err != nil {
			got = model.AsError(err).Code
		}
		if got != tc.code {
			t.Errorf("decodeStrict(%q) = %v, want code %q", tc.in, err, tc.code)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{model.NotFound("x"), 404, "region_not_found"},
		{fmt.Errorf("wrapped: %w", model.Conflict("region_exists", "x")), 409, "region_exists"},
		{fiber.ErrRequestEntityTooLarge, 413, "body_too_large"},
		{fiber.ErrMethodNotAllowed, 405, "method_not_allowed"},
		{fiber.ErrTeapot, 418, "i'm_a_teapot"},
		{fmt.Errorf("anything else"), 500, "internal"},
	} {
		got := toModelError(tc.err)
		if got.Status != tc.status || got.Code != tc.code {
			t.Errorf("toModelError(%v) = %d %s, want %d %s", tc.err, got.Status, got.Code, tc.status, tc.code)
		}
	}
}

// TestUnavailable: with no service answering, writes are 503 at once; with
// NATS down, every endpoint is 503 within a bounded time, never a hang.
func TestUnavailable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.RequestTimeout = config.Duration(timeout) })
	writes := []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/lb/regions", map[string]any{"region": "a1", "endpoint": "http://127.0.0.1:1"}},
		{"PUT", "/api/v1/lb/regions/a1", map[string]any{"weight": 2}},
		{"DELETE", "/api/v1/lb/regions/a1", nil},
		{"PUT", "/api/v1/lb/strategy", map[string]any{"strategy": "weighted"}},
		{"POST", "/api/v1/lb/health/check", map[string]any{"region": "a1"}},
		{"POST", "/api/v1/lb/health/check", nil},
		{"POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "b1"}},
		{"DELETE", "/api/v1/lb/failover/a1", nil},
	}
	for _, w := range writes {
		start := time.Now()
		e.expect(e.do(w.method, w.path, w.body), 503, "unavailable")
		if d := time.Since(start); d > timeout+3*time.Second {
			t.Fatalf("%s %s took %v with no responders", w.method, w.path, d)
		}
	}

	e.putKV(bus.BucketRegions, "a1", model.Region{Region: "a1", Endpoint: "http://127.0.0.1:1", Weight: 1})
	e.expect(e.do("GET", "/api/v1/lb/regions/a1", nil), 200, "")

	e.ns.Shutdown()
	poll.Until(t, 5*time.Second, "condition", func() error {
		if e.nc.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	reads := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/lb/status", nil},
		{"GET", "/api/v1/lb/regions", nil},
		{"GET", "/api/v1/lb/regions/a1", nil},
		{"GET", "/api/v1/lb/health/history?region=a1", nil},
		{"GET", "/api/v1/lb/failover/status", nil},
	}
	for _, w := range append(reads, writes...) {
		start := time.Now()
		e.expect(e.do(w.method, w.path, w.body), 503, "unavailable")
		if d := time.Since(start); d > 2*timeout+3*time.Second {
			t.Fatalf("%s %s took %v with NATS down", w.method, w.path, d)
		}
	}
	r := e.doWith("GET", "/readyz", nil, nil)
	if r.status != 503 {
		t.Fatalf("/readyz with NATS down = %d", r.status)
	}
	e.expect(e.doWith("GET", "/healthz", nil, nil), 200, "")
}

// TestGracefulShutdown: a request in flight when Run's context ends still
// gets its answer; new connections are refused afterwards.
func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequestTimeout = config.Duration(20 * time.Second) })
	entered := make(chan struct{})
	release := make(chan struct{})
	serveFake(t, e.nc, bus.SubjectCmdHealthCheck, func(_ context.Context, req model.HealthCheckRequest) (model.CheckResult, error) {
		close(entered)
		<-release
		return model.CheckResult{Region: req.Region, Healthy: true, StatusCode: 200}, nil
	})
	done := make(chan response, 1)
	go func() {
		r, err := e.try("POST", "/api/v1/lb/health/check", map[string]any{"region": "a1"}, map[string]string{"Authorization": "Bearer " + testKey})
		if err != nil {
			r.status = -1
			r.body = []byte(err.Error())
		}
		done <- r
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- e.stop() }()
	// The listener closes while the request is still in flight.
	poll.Until(t, 5*time.Second, "condition", func() error {
		c, err := net.DialTimeout("tcp", e.api.Addr(), time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("still accepting")
		}
		return nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Run returned %v before the in-flight request finished", err)
	default:
	}
	close(release)
	r := <-done
	if r.status != http.StatusOK {
		t.Fatalf("in-flight request: %d %s", r.status, r.body)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
