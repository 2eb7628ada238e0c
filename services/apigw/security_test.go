package apigw

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/testpki"
)

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	const path = "/api/v1/lb/status"

	r := e.expect(e.doWith("GET", path, nil, nil), 401, "unauthorized")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
	for _, h := range []string{
		"Bearer wrong-key-000000",
		"Bearer " + testKey + "x",
		"Bearer " + testKey[:len(testKey)-1],
		"Basic " + testKey,
		testKey,
		"Bearer ",
	} {
		r := e.expect(e.doWith("GET", path, nil, map[string]string{"Authorization": h}), 401, "")
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%q: WWW-Authenticate = %q", h, r.header.Get("WWW-Authenticate"))
		}
	}
	// Wrong method or unknown path still needs credentials under the prefix.
	e.expect(e.doWith("DELETE", path, nil, nil), 401, "unauthorized")

	e.expect(e.do("GET", path, nil), 200, "")
	e.expect(e.doWith("GET", path, nil, map[string]string{"Authorization": "bearer " + otherKey}), 200, "")

	// Ops endpoints need no key.
	e.expect(e.doWith("GET", "/healthz", nil, nil), 200, "")
	poll.Until(t, 5*time.Second, "condition", func() error {
		if r := e.doWith("GET", "/readyz", nil, nil); r.status != 200 {
			return errors.New(string(r.body))
		}
		return nil
	})
	r = e.doWith("GET", "/metrics", nil, nil)
	if r.status != 200 || !strings.Contains(string(r.body), `lb_apigw_http_requests_total{method="GET",route="/api/v1/lb/*",status="401"}`) ||
		!strings.Contains(string(r.body), "lb_apigw_http_request_duration_seconds_bucket") {
		t.Fatalf("metrics: %d %s", r.status, r.body)
	}

	// Keys never reach the log, though every request above was logged.
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"http request"`) || !strings.Contains(logs, `"status":401`) {
		t.Fatalf("no access log: %s", logs)
	}
	for _, k := range []string{testKey, otherKey, testKey[:len(testKey)-1]} {
		if strings.Contains(logs, k) {
			t.Fatalf("log contains an API key")
		}
	}
}

func TestNoKeysOnLoopback(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Keys = nil })
	e.expect(e.doWith("GET", "/api/v1/lb/status", nil, nil), 200, "")
}

// TestProtectedModeBindsLoopback: with no keys, a host-less API_ADDR (the
// default ":8080") binds loopback only, like Redis' protected mode.
func TestProtectedModeBindsLoopback(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Keys = nil; c.Addr = ":0" })
	if host, _, _ := net.SplitHostPort(e.api.Addr()); host != "127.0.0.1" {
		t.Fatalf("protected mode bound %s", e.api.Addr())
	}
	e.expect(e.doWith("GET", "/api/v1/lb/status", nil, nil), 200, "")

	withKeys := newEnv(t, func(c *Config) { c.Addr = ":0" })
	if host, _, _ := net.SplitHostPort(withKeys.api.Addr()); host == "127.0.0.1" {
		t.Fatalf("with keys %q should bind every interface, bound %s", ":0", withKeys.api.Addr())
	}
}

func TestRefusesPublicAddrWithoutKeys(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		addr    string
		keys    []string
		allow   bool
		wantVar string
	}{
		{"all interfaces, no keys", "0.0.0.0:0", nil, false, "API_ADDR"},
		{"ipv6 all interfaces, no keys", "[::]:0", nil, false, "API_ADDR"},
		{"named public host, no keys", "example.com:0", nil, false, "API_ADDR"},
		{"loopback, no keys", "127.0.0.1:0", nil, false, ""},
		{"ipv6 loopback, no keys", "[::1]:0", nil, false, ""},
		{"public with keys", ":0", []string{testKey}, false, ""},
		{"public, explicitly unauthenticated", ":0", nil, true, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Addr, cfg.Keys, cfg.AllowUnauthenticated = tc.addr, tc.keys, tc.allow
			err := cfg.Validate()
			var ve *config.VarError
			if tc.wantVar == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.As(err, &ve) || ve.Var != tc.wantVar || !strings.Contains(err.Error(), "API_ADDR") {
				t.Fatalf("Validate = %v, want error naming %s", err, tc.wantVar)
			}
			// New refuses too, before binding anything.
			nc, _ := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0))
			defer nc.Close()
			svc, err := New(context.Background(), nc, cfg, logging.Discard(), prometheus.NewRegistry())
			if svc != nil || !errors.As(err, &ve) || ve.Var != "API_ADDR" {
				t.Fatalf("New = %v, %v; want the API_ADDR error", svc, err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		mutate  func(*Config)
		wantVar string
	}{
		{"defaults on loopback", func(c *Config) { c.Addr = "127.0.0.1:8080" }, ""},
		{"default addr without keys (binds loopback)", func(*Config) {}, ""},
		{"all interfaces without keys", func(c *Config) { c.Addr = "0.0.0.0:8080" }, "API_ADDR"},
		{"bad addr", func(c *Config) { c.Addr = "nowhere" }, "API_ADDR"},
		{"short key", func(c *Config) { c.Keys = []string{"short"} }, "API_KEYS"},
		{"zero rate", func(c *Config) { c.Addr = "127.0.0.1:1"; c.RateLimit = 0 }, "API_RATE_LIMIT"},
		{"zero burst", func(c *Config) { c.Addr = "127.0.0.1:1"; c.RateBurst = 0 }, "API_RATE_BURST"},
		{"cert without key", func(c *Config) { c.Addr = "127.0.0.1:1"; c.TLSCertFile = "x" }, "API_TLS_CERT_FILE"},
		{"bad health path", func(c *Config) { c.Addr = "127.0.0.1:1"; c.HealthPath = "health" }, "HEALTH_CHECK_PATH"},
		{"empty health path", func(c *Config) { c.Addr = "127.0.0.1:1"; c.HealthPath = "" }, "HEALTH_CHECK_PATH"},
		{"bad request timeout", func(c *Config) { c.Addr = "127.0.0.1:1"; c.RequestTimeout = 0 }, "NATS_REQUEST_TIMEOUT"},
		{"bad log level", func(c *Config) { c.Addr = "127.0.0.1:1"; c.LogLevel = "loud" }, "LOG_LEVEL"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			var ve *config.VarError
			switch {
			case tc.wantVar == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantVar != "" && (!errors.As(err, &ve) || ve.Var != tc.wantVar):
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.wantVar)
			}
		})
	}
	if got := DefaultConfig().OpsConfig().MetricsAddr; got != ":9095" {
		t.Fatalf("default METRICS_ADDR = %q", got)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit = 1; c.RateBurst = 3 })
	const path = "/api/v1/lb/status"

	// The burst passes; a request past it is limited. Counted, not timed, so
	// a slow machine refilling a token mid-burst cannot fail the test.
	var r response
	ok := 0
	for range 10 {
		if r = e.do("GET", path, nil); r.status != 200 {
			break
		}
		ok++
	}
	if ok < 3 {
		t.Fatalf("only %d requests of the burst of 3 passed", ok)
	}
	e.expect(r, 429, "rate_limited")
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	// Another key is another client with its own bucket.
	e.expect(e.doWith("GET", path, nil, map[string]string{"Authorization": "Bearer " + otherKey}), 200, "")
	// Tokens come back at 1/s: poll, no blind sleep.
	poll.Until(t, 5*time.Second, "condition", func() error {
		if r := e.do("GET", path, nil); r.status != 200 {
			return errors.New(strconv.Itoa(r.status))
		}
		return nil
	})
	// Unauthenticated guesses spend the IP's bucket: eventually 429, not 401.
	got429 := false
	for range 10 {
		r := e.doWith("GET", path, nil, map[string]string{"Authorization": "Bearer guess-000000000"})
		if r.status == 429 {
			got429 = true
			break
		}
		e.expect(r, 401, "invalid_credentials")
	}
	if !got429 {
		t.Fatal("key guessing was never rate limited")
	}
	// Ops endpoints are not limited.
	for range 10 {
		e.expect(e.doWith("GET", "/healthz", nil, nil), 200, "")
	}
}

func TestLimiterEvictsIdleClients(t *testing.T) {
	l := newLimiter(10, 5) // refills in 0.5s, so idle = the 1 minute floor
	t0 := time.Now()
	for i := range 1000 {
		if ok, _ := l.allow("ip:"+strconv.Itoa(i), t0); !ok {
			t.Fatal("first request limited")
		}
	}
	if l.size() != 1000 {
		t.Fatalf("size = %d", l.size())
	}
	for range 5 {
		l.allow("busy", t0)
	}
	ok, wait := l.allow("busy", t0)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("6th request in a burst of 5: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.allow("busy", t0.Add(wait)); !ok {
		t.Fatal("token not back after the advertised wait")
	}
	l.allow("late", t0.Add(l.idle+time.Second))
	if l.size() != 1 {
		t.Fatalf("after idle sweep size = %d, want 1", l.size())
	}
	if retryAfterSeconds(10*time.Millisecond) != 1 || retryAfterSeconds(1500*time.Millisecond) != 2 {
		t.Fatal("Retry-After rounding")
	}
}

func TestKeyring(t *testing.T) {
	k := newKeyring([]string{testKey, otherKey})
	id1, ok1 := k.match("Bearer " + testKey)
	id2, ok2 := k.match("BEARER  " + otherKey + " ")
	if !ok1 || !ok2 || id1 == id2 || strings.Contains(id1, testKey) {
		t.Fatalf("match: %q %v, %q %v", id1, ok1, id2, ok2)
	}
	if again, _ := k.match("Bearer " + testKey); again != id1 {
		t.Fatal("client id is not stable")
	}
	for _, h := range []string{"", "Bearer", "Bearer x", "Token " + testKey, testKey, "Bearer " + testKey + testKey} {
		if _, ok := k.match(h); ok {
			t.Fatalf("%q matched", h)
		}
	}
	if newKeyring(nil).enabled() {
		t.Fatal("empty keyring enabled")
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	e := newEnv(t, func(c *Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	if !strings.HasPrefix(e.base, "https://") {
		t.Fatalf("URL = %s", e.base)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	e.expect(e.do("GET", "/api/v1/lb/status", nil), 200, "")
	e.expect(e.doWith("GET", "/api/v1/lb/status", nil, nil), 401, "unauthorized")

	// Plain HTTP on the TLS port gets no API answer.
	plainTr := &http.Transport{}
	t.Cleanup(plainTr.CloseIdleConnections)
	plain := &http.Client{Transport: plainTr, Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + e.api.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	// An unreadable key pair is a start-up error naming the variable.
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(e.ns.ClientURL())
	cfg.TLSCertFile, cfg.TLSKeyFile = bad, bad
	var ve *config.VarError
	if _, err := New(context.Background(), e.nc, cfg, logging.Discard(), prometheus.NewRegistry()); !errors.As(err, &ve) || ve.Var != "API_TLS_CERT_FILE" {
		t.Fatalf("New with a bad key pair = %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and returns its files and a
// pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := testpki.NewCA(t)
	c, k := ca.Leaf(t, 2, time.Now().Add(time.Hour), "127.0.0.1")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, ca.Pool
}
