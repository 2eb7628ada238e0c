package config_test

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/testpki"
)

func TestMain(m *testing.M) {
	if os.Getenv(childMarker) != "" {
		runChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// allConfig embeds every part, the way a service's Config does.
type allConfig struct {
	config.NATS
	config.Ops
	config.Seed
	config.Health
	config.Failover
	config.RegionTLS
	config.API
	config.Router
	config.FrontDoor
	config.Standalone
}

func (c allConfig) Validate() error {
	return config.All(c.NATS, c.Ops, c.Seed, c.Health, c.Failover, c.RegionTLS, c.API, c.Router, c.FrontDoor, c.Standalone)
}

// allVars is every variable the parts read; clearEnv unsets them for the
// test (restored afterwards by t.Setenv's cleanup).
var allVars = []string{
	"NATS_URL", "NATS_REPLICAS", "NATS_REQUEST_TIMEOUT",
	"METRICS_ADDR", "LOG_LEVEL",
	"REGIONAL_ENDPOINTS", "LOAD_BALANCING_STRATEGY", "REGION_ALLOW_PLAINTEXT",
	"HEALTH_CHECK_INTERVAL", "HEALTH_CHECK_TIMEOUT", "HEALTH_CHECK_PATH",
	"HEALTH_FAILURE_THRESHOLD", "HEALTH_RECOVERY_THRESHOLD",
	"HEALTH_HISTORY_MAX_AGE", "HEALTH_HISTORY_PER_REGION",
	"FAILOVER_ENABLED", "FAILOVER_THRESHOLD", "FAILBACK_DELAY", "FAILOVER_LEASE_TTL",
	"REGION_TLS_CA_FILE", "REGION_TLS_CERT_FILE", "REGION_TLS_KEY_FILE", "REGION_TLS_INSECURE_SKIP_VERIFY",
	"API_ADDR", "API_KEYS", "API_ALLOW_UNAUTHENTICATED", "API_RATE_LIMIT", "API_RATE_BURST",
	"API_TLS_CERT_FILE", "API_TLS_KEY_FILE",
	"ROUTER_ADDR", "ROUTER_ID", "ROUTER_STATE_FILE", "ROUTER_DIAL_TIMEOUT",
	"ROUTER_TLS_HANDSHAKE_TIMEOUT", "ROUTER_RESPONSE_HEADER_TIMEOUT", "ROUTER_IDLE_CONN_TIMEOUT",
	"ROUTER_MAX_IDLE_CONNS_PER_REGION",
	"ROUTER_CLIENT_HEADER_TIMEOUT", "ROUTER_CLIENT_BODY_TIMEOUT", "ROUTER_CLIENT_WRITE_TIMEOUT", "ROUTER_CLIENT_IDLE_TIMEOUT",
	"ROUTER_TLS_ADDR", "ROUTER_TLS_CERT_FILE", "ROUTER_TLS_KEY_FILE", "ROUTER_TLS_CERT_DIR", "ROUTER_TLS_MIN_VERSION",
	"ROUTER_HTTPS_REDIRECT", "ROUTER_HSTS", "ROUTER_HTTP2",
	"ACME_DOMAINS", "ACME_EMAIL", "ACME_CA", "ACME_CA_ROOTS", "ACME_RENEW_CHECK_INTERVAL",
	"STANDALONE_DATA_DIR", "NATS_LISTEN",
}

// clearEnv unsets every config variable and moves into an empty directory so
// that neither the real environment nor a stray .env leaks into a test.
func clearEnv(t *testing.T, extra ...string) {
	t.Helper()
	for _, k := range append(append([]string{}, allVars...), extra...) {
		t.Setenv(k, "")
		require.NoError(t, os.Unsetenv(k))
	}
	t.Chdir(t.TempDir())
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// load loads a fresh allConfig preset the way a service presets its defaults.
func load(t *testing.T) (allConfig, error) {
	t.Helper()
	cfg := allConfig{}
	cfg.NATS.URL = config.DefaultNATSURL
	cfg.MetricsAddr = ":9091"
	err := config.Load(&cfg)
	return cfg, err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestLoadDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t)
	require.NoError(t, err)

	assert.Equal(t, config.DefaultNATSURL, cfg.NATS.URL, "preset kept")
	assert.Equal(t, 1, cfg.Replicas)
	assert.Equal(t, 5*time.Second, cfg.RequestTimeout.D())

	assert.Equal(t, ":9091", cfg.MetricsAddr, "preset kept")
	assert.Equal(t, "info", cfg.LogLevel)

	assert.Empty(t, cfg.RegionalEndpoints)
	assert.Equal(t, model.StrategyRoundRobin, cfg.Strategy)
	assert.False(t, cfg.AllowPlaintext)

	assert.Equal(t, 30*time.Second, cfg.Interval.D())
	assert.Equal(t, 5*time.Second, cfg.Timeout.D())
	assert.Equal(t, "/health", cfg.Path)
	assert.Equal(t, 3, cfg.FailureThreshold)
	assert.Equal(t, 2, cfg.RecoveryThreshold)
	assert.Equal(t, 24*time.Hour, cfg.HistoryMaxAge.D())
	assert.Equal(t, int64(1000), cfg.HistoryPerRegion)

	assert.True(t, cfg.Enabled)
	assert.Equal(t, 0.5, cfg.Threshold)
	assert.Equal(t, 60*time.Second, cfg.FailbackDelay.D())
	assert.Equal(t, 5*time.Second, cfg.LeaseTTL.D())

	assert.Empty(t, cfg.CAFile)
	assert.Empty(t, cfg.RegionTLS.CertFile)
	assert.Empty(t, cfg.RegionTLS.KeyFile)
	assert.False(t, cfg.InsecureSkipVerify)

	assert.Equal(t, ":8080", cfg.API.Addr)
	assert.Empty(t, cfg.Keys)
	assert.False(t, cfg.AllowUnauthenticated)
	assert.Equal(t, 50.0, cfg.RateLimit)
	assert.Equal(t, 100, cfg.RateBurst)
	assert.Empty(t, cfg.API.TLSCertFile)
	assert.Empty(t, cfg.API.TLSKeyFile)

	assert.Equal(t, ":8000", cfg.Router.Addr)
	assert.Empty(t, cfg.ID)
	assert.Empty(t, cfg.StateFile)
	assert.Equal(t, 5*time.Second, cfg.DialTimeout.D())
	assert.Equal(t, 5*time.Second, cfg.TLSHandshakeTimeout.D())
	assert.Equal(t, 30*time.Second, cfg.ResponseHeaderTimeout.D())
	assert.Equal(t, 90*time.Second, cfg.IdleConnTimeout.D())
	assert.Equal(t, 512, cfg.MaxIdleConnsPerRegion)

	assert.Empty(t, cfg.DataDir)
	assert.Empty(t, cfg.NATSListen)
}

func TestLoadDefaultAPIAddrProtectedMode(t *testing.T) {
	// The contract's default API_ADDR is ":8080"; without API_KEYS the API
	// is in protected mode and binds loopback only.
	clearEnv(t)
	cfg, err := load(t)
	require.NoError(t, err)
	assert.Equal(t, ":8080", cfg.API.Addr)
	assert.True(t, cfg.Protected())
	assert.Equal(t, "127.0.0.1:8080", cfg.ListenAddr())
	assert.True(t, config.IsLoopbackAddr(cfg.ListenAddr()))

	t.Setenv("API_KEYS", "0123456789abcdef")
	cfg, err = load(t)
	require.NoError(t, err)
	assert.Equal(t, []string{"0123456789abcdef"}, cfg.Keys)
	assert.False(t, cfg.Protected())
	assert.Equal(t, ":8080", cfg.ListenAddr(), "with keys every interface")

	t.Setenv("API_KEYS", "")
	t.Setenv("API_ALLOW_UNAUTHENTICATED", "true")
	cfg, err = load(t)
	require.NoError(t, err)
	assert.False(t, cfg.Protected())
	assert.Equal(t, ":8080", cfg.ListenAddr(), "explicitly unauthenticated: every interface")
}

func TestAPIListenAddr(t *testing.T) {
	for _, tc := range []struct {
		api  config.API
		want string
	}{
		{config.API{Addr: ":8080"}, "127.0.0.1:8080"},
		{config.API{Addr: "127.0.0.1:9"}, "127.0.0.1:9"},
		{config.API{Addr: "[::1]:9"}, "[::1]:9"},
		{config.API{Addr: "0.0.0.0:9"}, "0.0.0.0:9"},
		{config.API{Addr: ":8080", Keys: []string{"0123456789"}}, ":8080"},
		{config.API{Addr: ":8080", AllowUnauthenticated: true}, ":8080"},
		{config.API{Addr: "garbage"}, "garbage"},
	} {
		assert.Equal(t, tc.want, tc.api.ListenAddr(), "%+v", tc.api)
	}
}

func TestLoadGoodValues(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", "ca")
	cert := writeFile(t, dir, "cert.pem", "cert")
	key := writeFile(t, dir, "key.pem", "key")

	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c allConfig)
	}{
		{"bare seconds", map[string]string{"HEALTH_CHECK_INTERVAL": "30"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 30*time.Second, c.Interval.D())
		}},
		{"fractional seconds", map[string]string{"HEALTH_CHECK_INTERVAL": "0.5"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 500*time.Millisecond, c.Interval.D())
		}},
		{"go duration", map[string]string{"HEALTH_CHECK_INTERVAL": "500ms", "HEALTH_CHECK_TIMEOUT": "1m30s"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 500*time.Millisecond, c.Interval.D())
			assert.Equal(t, 90*time.Second, c.Timeout.D())
		}},
		{"duration with spaces", map[string]string{"HEALTH_CHECK_TIMEOUT": " 10 "}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 10*time.Second, c.Timeout.D())
		}},
		{"every duration", map[string]string{
			"NATS_REQUEST_TIMEOUT": "2", "HEALTH_HISTORY_MAX_AGE": "1h", "FAILBACK_DELAY": "0",
			"FAILOVER_LEASE_TTL": "3s", "ROUTER_DIAL_TIMEOUT": "1", "ROUTER_TLS_HANDSHAKE_TIMEOUT": "2s",
			"ROUTER_RESPONSE_HEADER_TIMEOUT": "0.25", "ROUTER_IDLE_CONN_TIMEOUT": "2m",
		}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 2*time.Second, c.RequestTimeout.D())
			assert.Equal(t, time.Hour, c.HistoryMaxAge.D())
			assert.Equal(t, time.Duration(0), c.FailbackDelay.D(), "failback may be immediate")
			assert.Equal(t, 3*time.Second, c.LeaseTTL.D())
			assert.Equal(t, time.Second, c.DialTimeout.D())
			assert.Equal(t, 2*time.Second, c.TLSHandshakeTimeout.D())
			assert.Equal(t, 250*time.Millisecond, c.ResponseHeaderTimeout.D())
			assert.Equal(t, 2*time.Minute, c.IdleConnTimeout.D())
		}},
		{"nats urls", map[string]string{"NATS_URL": "nats://a:4222, tls://b:4222,ws://c:80,wss://d,127.0.0.1:4222,nats://u:p@e:4222", "NATS_REPLICAS": "3"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "nats://a:4222, tls://b:4222,ws://c:80,wss://d,127.0.0.1:4222,nats://u:p@e:4222", c.NATS.URL)
			assert.Equal(t, 3, c.Replicas)
		}},
		{"nats url empty means embedded", map[string]string{"NATS_URL": ""}, func(t *testing.T, c allConfig) {
			assert.Empty(t, c.NATS.URL)
		}},
		{"replicas 5", map[string]string{"NATS_REPLICAS": "5"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 5, c.Replicas)
		}},
		{"metrics off", map[string]string{"METRICS_ADDR": "off"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "off", c.MetricsAddr)
		}},
		{"metrics addr", map[string]string{"METRICS_ADDR": "127.0.0.1:9999"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "127.0.0.1:9999", c.MetricsAddr)
		}},
		{"log levels", map[string]string{"LOG_LEVEL": "DEBUG"}, func(t *testing.T, c allConfig) {
			l, err := c.Level()
			require.NoError(t, err)
			assert.Equal(t, "DEBUG", l.String())
		}},
		{"log level warn", map[string]string{"LOG_LEVEL": "warn"}, func(t *testing.T, c allConfig) {
			l, err := c.Level()
			require.NoError(t, err)
			assert.Equal(t, "WARN", l.String())
		}},
		{"endpoints", map[string]string{"REGIONAL_ENDPOINTS": "us-east:http://127.0.0.1:9001, eu-west:https://eu.example.com/api"}, func(t *testing.T, c allConfig) {
			eps, err := c.Endpoints()
			require.NoError(t, err)
			assert.Equal(t, []model.Endpoint{
				{Region: "us-east", Endpoint: "http://127.0.0.1:9001"},
				{Region: "eu-west", Endpoint: "https://eu.example.com/api"},
			}, eps)
		}},
		{"plaintext allowed", map[string]string{"REGIONAL_ENDPOINTS": "a:http://10.0.0.1:80", "REGION_ALLOW_PLAINTEXT": "true"}, func(t *testing.T, c allConfig) {
			assert.True(t, c.AllowPlaintext)
			eps, err := c.Endpoints()
			require.NoError(t, err)
			assert.Len(t, eps, 1)
		}},
		{"strategies", map[string]string{"LOAD_BALANCING_STRATEGY": "least_latency"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "least_latency", c.Strategy)
		}},
		{"weighted", map[string]string{"LOAD_BALANCING_STRATEGY": "weighted"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "weighted", c.Strategy)
		}},
		{"health", map[string]string{"HEALTH_CHECK_PATH": "/status/ready?full=1", "HEALTH_FAILURE_THRESHOLD": "100", "HEALTH_RECOVERY_THRESHOLD": "1", "HEALTH_HISTORY_PER_REGION": "1"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "/status/ready?full=1", c.Path)
			assert.Equal(t, 100, c.FailureThreshold)
			assert.Equal(t, 1, c.RecoveryThreshold)
			assert.Equal(t, int64(1), c.HistoryPerRegion)
		}},
		{"failover", map[string]string{"FAILOVER_ENABLED": "false", "FAILOVER_THRESHOLD": "1"}, func(t *testing.T, c allConfig) {
			assert.False(t, c.Enabled)
			assert.Equal(t, 1.0, c.Threshold)
		}},
		{"failover threshold small", map[string]string{"FAILOVER_ENABLED": "0", "FAILOVER_THRESHOLD": "0.01"}, func(t *testing.T, c allConfig) {
			assert.False(t, c.Enabled)
			assert.Equal(t, 0.01, c.Threshold)
		}},
		{"region tls", map[string]string{"REGION_TLS_CA_FILE": ca, "REGION_TLS_CERT_FILE": cert, "REGION_TLS_KEY_FILE": key, "REGION_TLS_INSECURE_SKIP_VERIFY": "TRUE"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, ca, c.CAFile)
			assert.Equal(t, cert, c.RegionTLS.CertFile)
			assert.Equal(t, key, c.RegionTLS.KeyFile)
			assert.True(t, c.InsecureSkipVerify)
		}},
		{"api public with keys", map[string]string{"API_ADDR": "0.0.0.0:8080", "API_KEYS": "0123456789abcdef,fedcba9876543210"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, []string{"0123456789abcdef", "fedcba9876543210"}, c.Keys)
		}},
		{"api public unauthenticated allowed", map[string]string{"API_ADDR": ":8080", "API_ALLOW_UNAUTHENTICATED": "true"}, func(t *testing.T, c allConfig) {
			assert.True(t, c.AllowUnauthenticated)
		}},
		{"api localhost", map[string]string{"API_ADDR": "localhost:8080"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "localhost:8080", c.API.Addr)
		}},
		{"api ipv6 loopback", map[string]string{"API_ADDR": "[::1]:8080"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "[::1]:8080", c.API.Addr)
		}},
		{"api keys blank means none", map[string]string{"API_KEYS": " "}, func(t *testing.T, c allConfig) {
			assert.Empty(t, c.Keys)
		}},
		{"api limits and tls", map[string]string{"API_RATE_LIMIT": "0.5", "API_RATE_BURST": "1", "API_TLS_CERT_FILE": cert, "API_TLS_KEY_FILE": key}, func(t *testing.T, c allConfig) {
			assert.Equal(t, 0.5, c.RateLimit)
			assert.Equal(t, 1, c.RateBurst)
			assert.Equal(t, cert, c.API.TLSCertFile)
			assert.Equal(t, key, c.API.TLSKeyFile)
		}},
		{"router", map[string]string{"ROUTER_ADDR": "127.0.0.1:18000", "ROUTER_ID": "router-1", "ROUTER_STATE_FILE": "/tmp/x.json", "ROUTER_MAX_IDLE_CONNS_PER_REGION": "1"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "127.0.0.1:18000", c.Router.Addr)
			assert.Equal(t, "router-1", c.ID)
			assert.Equal(t, "/tmp/x.json", c.StateFile)
			assert.Equal(t, 1, c.MaxIdleConnsPerRegion)
		}},
		{"acme off by default", nil, func(t *testing.T, c allConfig) {
			assert.False(t, c.FrontDoor.ACME())
			assert.False(t, c.FrontDoor.On())
			assert.Equal(t, config.LetsEncrypt, c.ACMECA)
			assert.Equal(t, 10*time.Minute, c.ACMERenewCheck.D())
			pool, err := c.ACMERoots()
			assert.NoError(t, err)
			assert.Nil(t, pool, "no ACME_CA_ROOTS: the system's roots")
		}},
		{"acme", map[string]string{"ACME_DOMAINS": "shop.example.com,Api.Example.com.", "ACME_EMAIL": "ops@example.com",
			"ACME_CA": "https://127.0.0.1:14000/dir", "ACME_CA_ROOTS": string(testpki.NewCA(t).PEM()), "ACME_RENEW_CHECK_INTERVAL": "2s"}, func(t *testing.T, c allConfig) {
			assert.True(t, c.FrontDoor.ACME())
			assert.True(t, c.FrontDoor.On(), "ACME alone turns the HTTPS listener on")
			assert.Equal(t, []string{"shop.example.com", "Api.Example.com."}, c.ACMEDomains)
			assert.Equal(t, "ops@example.com", c.ACMEEmail)
			assert.Equal(t, "https://127.0.0.1:14000/dir", c.ACMECA)
			assert.Equal(t, 2*time.Second, c.ACMERenewCheck.D())
			pool, err := c.ACMERoots()
			require.NoError(t, err)
			assert.NotNil(t, pool, "the PEM itself is accepted")
		}},
		{"acme roots from a file", map[string]string{"ACME_DOMAINS": "shop.example.com", "ACME_CA_ROOTS": writeFile(t, t.TempDir(), "roots.pem", string(testpki.NewCA(t).PEM()))}, func(t *testing.T, c allConfig) {
			pool, err := c.ACMERoots()
			require.NoError(t, err)
			assert.NotNil(t, pool)
		}},
		{"standalone", map[string]string{"STANDALONE_DATA_DIR": "/var/lib/lb", "NATS_LISTEN": "127.0.0.1:4222"}, func(t *testing.T, c allConfig) {
			assert.Equal(t, "/var/lib/lb", c.DataDir)
			assert.Equal(t, "127.0.0.1:4222", c.NATSListen)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("API_ADDR", "127.0.0.1:8080")
			setEnv(t, tc.env)
			cfg, err := load(t)
			require.NoError(t, err)
			tc.check(t, cfg)
		})
	}
}

func assertVarError(t *testing.T, err error, name string) {
	t.Helper()
	require.Error(t, err)
	var ve *config.VarError
	require.Truef(t, errors.As(err, &ve), "error %v (%T) is not a *config.VarError", err, err)
	assert.Equal(t, name, ve.Var, "error: %v", err)
	assert.Contains(t, err.Error(), name, "the message names the variable")
}

func TestLoadBadValues(t *testing.T) {
	dir := t.TempDir()
	cert := writeFile(t, dir, "cert.pem", "cert")
	key := writeFile(t, dir, "key.pem", "key")
	missing := filepath.Join(dir, "missing.pem")

	type bad struct {
		env     map[string]string
		wantVar string
	}
	one := func(k, v string) bad { return bad{map[string]string{k: v}, k} }
	var tests []bad

	durations := []string{
		"NATS_REQUEST_TIMEOUT", "HEALTH_CHECK_INTERVAL", "HEALTH_CHECK_TIMEOUT", "HEALTH_HISTORY_MAX_AGE",
		"FAILOVER_LEASE_TTL", "ROUTER_DIAL_TIMEOUT", "ROUTER_TLS_HANDSHAKE_TIMEOUT",
		"ROUTER_RESPONSE_HEADER_TIMEOUT", "ROUTER_IDLE_CONN_TIMEOUT",
		"ROUTER_CLIENT_HEADER_TIMEOUT", "ROUTER_CLIENT_BODY_TIMEOUT", "ROUTER_CLIENT_WRITE_TIMEOUT", "ROUTER_CLIENT_IDLE_TIMEOUT",
	}
	tests = append(tests,
		one("ROUTER_TLS_ADDR", "nope"),
		bad{map[string]string{"ROUTER_TLS_CERT_FILE": cert}, "ROUTER_TLS_KEY_FILE"}, // the one missing is named
		bad{map[string]string{"ROUTER_TLS_KEY_FILE": key}, "ROUTER_TLS_CERT_FILE"},
		bad{map[string]string{"ROUTER_TLS_CERT_DIR": dir, "ROUTER_TLS_MIN_VERSION": "1.1"}, "ROUTER_TLS_MIN_VERSION"},
		one("ROUTER_HTTPS_REDIRECT", "true"), // no HTTPS listener to send clients to
		one("ROUTER_HTTPS_REDIRECT", "maybe"),
		one("ROUTER_HTTP2", "2"),
		bad{map[string]string{"ROUTER_TLS_CERT_DIR": dir, "ROUTER_HSTS": "max-age=1\r\nX-Evil: 1"}, "ROUTER_HSTS"},
	)
	for _, d := range []string{",", "a.example.com,", "a.example.com, b.example.com", "*.example.com", "127.0.0.1", "::1",
		"localhost", "a..example.com", "-a.example.com", "a_b.example.com", "a.example.com:443", "a.example.com,A.example.com",
		"héllo.example.com", strings.Repeat("a", 64) + ".example.com"} {
		tests = append(tests, one("ACME_DOMAINS", d))
	}
	acme := func(k, v string) bad {
		return bad{map[string]string{"ACME_DOMAINS": "shop.example.com", k: v}, k}
	}
	tests = append(tests,
		acme("ACME_EMAIL", "nobody"), acme("ACME_EMAIL", "@example.com"), acme("ACME_EMAIL", "a@"), acme("ACME_EMAIL", "a b@example.com"),
		acme("ACME_CA", "http://acme.example.com/directory"), acme("ACME_CA", "acme.example.com"), acme("ACME_CA", ""),
		acme("ACME_CA_ROOTS", missing), acme("ACME_CA_ROOTS", dir), acme("ACME_CA_ROOTS", cert), // cert holds no PEM
		acme("ACME_CA_ROOTS", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
		acme("ACME_RENEW_CHECK_INTERVAL", "0"), acme("ACME_RENEW_CHECK_INTERVAL", "soon"),
	)
	for _, k := range durations {
		for _, v := range []string{"", " ", "abc", "0", "0s", "0.0", "-1", "-0.5", "-1s", "1e-12", "NaN", "Inf", "-Inf", "1e400", "9999999999", "5 s", "5x", "1d", "30,5"} {
			tests = append(tests, one(k, v))
		}
	}
	// FAILBACK_DELAY may be zero but never negative or malformed.
	for _, v := range []string{"", "abc", "-1", "-1s", "NaN", "Inf", "1d"} {
		tests = append(tests, one("FAILBACK_DELAY", v))
	}
	ints := map[string][]string{
		"NATS_REPLICAS":                    {"", "x", "1.5", "0", "6", "-1", "99999999999999999999"},
		"HEALTH_FAILURE_THRESHOLD":         {"", "x", "1.5", "0", "101", "-1"},
		"HEALTH_RECOVERY_THRESHOLD":        {"", "x", "1.5", "0", "101", "-1"},
		"HEALTH_HISTORY_PER_REGION":        {"", "x", "1.5", "0", "-1"},
		"API_RATE_BURST":                   {"", "x", "1.5", "0", "-1"},
		"ROUTER_MAX_IDLE_CONNS_PER_REGION": {"", "x", "0", "-1"},
	}
	for k, vs := range ints {
		for _, v := range vs {
			tests = append(tests, one(k, v))
		}
	}
	bools := []string{"REGION_ALLOW_PLAINTEXT", "FAILOVER_ENABLED", "REGION_TLS_INSECURE_SKIP_VERIFY", "API_ALLOW_UNAUTHENTICATED"}
	for _, k := range bools {
		for _, v := range []string{"", "yes", "no", "on", "2", "maybe"} {
			tests = append(tests, one(k, v))
		}
	}
	floats := map[string][]string{
		"FAILOVER_THRESHOLD": {"", "x", "50%", "0", "-0.1", "1.01", "2", "NaN", "Inf", "-Inf", "1e400"},
		"API_RATE_LIMIT":     {"", "x", "0", "-1", "NaN", "Inf", "-Inf", "1e400"},
	}
	for k, vs := range floats {
		for _, v := range vs {
			tests = append(tests, one(k, v))
		}
	}
	for _, v := range []string{"http://127.0.0.1:4222", "https://h", "ftp://h", "nats://", "nats://:4222", "nats://a:4222,", ",", " ", "nats://a:4222,http://b:80", "nats://a:99999", "nats://a:0", "nats://%zz"} {
		tests = append(tests, one("NATS_URL", v))
	}
	for _, k := range []string{"METRICS_ADDR", "ROUTER_ADDR", "NATS_LISTEN"} {
		for _, v := range []string{"9091", "localhost", ":99999", ":-1", "a:b:c", "host:port", "[::1"} {
			tests = append(tests, one(k, v))
		}
	}
	for _, v := range []string{"verbose", "trace", "inf0", "1x"} {
		tests = append(tests, one("LOG_LEVEL", v))
	}
	for _, v := range []string{
		"us-east", "us-east:", ":http://127.0.0.1:1", "US:http://127.0.0.1:1", "a_b:http://127.0.0.1:1",
		"a:ftp://127.0.0.1", "a:127.0.0.1:9000", "a:/relative", "a:http://example.com",
		"a:http://127.0.0.1:1,a:http://127.0.0.1:2", "a:https://u:p@h", "a:https://h/?q=1", "a:https://h:99999",
	} {
		tests = append(tests, one("REGIONAL_ENDPOINTS", v))
	}
	for _, v := range []string{"", "random", "ROUND_ROBIN", " weighted", "leastlatency"} {
		tests = append(tests, one("LOAD_BALANCING_STRATEGY", v))
	}
	for _, v := range []string{"", "health", "/he alth", "/h#x", "http://x/health", "/a\tb"} {
		tests = append(tests, one("HEALTH_CHECK_PATH", v))
	}
	for _, v := range []string{"Router_1", "-abc", strings.Repeat("a", 64), "a.b"} {
		tests = append(tests, one("ROUTER_ID", v))
	}
	// Files and pairs.
	tests = append(tests,
		one("REGION_TLS_CA_FILE", missing),
		one("REGION_TLS_CA_FILE", dir), // a directory is not a CA bundle
		bad{map[string]string{"REGION_TLS_CERT_FILE": cert}, "REGION_TLS_CERT_FILE"},
		bad{map[string]string{"REGION_TLS_KEY_FILE": key}, "REGION_TLS_CERT_FILE"},
		bad{map[string]string{"REGION_TLS_CERT_FILE": missing, "REGION_TLS_KEY_FILE": key}, "REGION_TLS_CERT_FILE"},
		bad{map[string]string{"REGION_TLS_CERT_FILE": cert, "REGION_TLS_KEY_FILE": missing}, "REGION_TLS_KEY_FILE"},
		bad{map[string]string{"API_TLS_CERT_FILE": cert}, "API_TLS_CERT_FILE"},
		bad{map[string]string{"API_TLS_KEY_FILE": key}, "API_TLS_CERT_FILE"},
		bad{map[string]string{"API_TLS_CERT_FILE": missing, "API_TLS_KEY_FILE": key}, "API_TLS_CERT_FILE"},
		bad{map[string]string{"API_TLS_CERT_FILE": cert, "API_TLS_KEY_FILE": missing}, "API_TLS_KEY_FILE"},
		bad{map[string]string{"API_TLS_CERT_FILE": dir, "API_TLS_KEY_FILE": key}, "API_TLS_CERT_FILE"},
	)
	// API address and keys.
	for _, v := range []string{"8080", ":abc", ":99999", "localhost"} {
		tests = append(tests, one("API_ADDR", v))
	}
	for _, v := range []string{"0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080", "example.com:8080"} {
		// Public without keys and without API_ALLOW_UNAUTHENTICATED.
		tests = append(tests, one("API_ADDR", v))
		tests = append(tests, bad{map[string]string{"API_ADDR": v, "API_ALLOW_UNAUTHENTICATED": "false"}, "API_ADDR"})
	}
	for _, v := range []string{"short", "1234567", "0123456789abcdef,", "0123456789abcdef,,fedcba9876543210", ",", "0123456789abcdef,short", "0123456789abcdef, fedcba9876543210", "0123456789abcdef "} {
		tests = append(tests, one("API_KEYS", v))
	}

	for _, tc := range tests {
		name := tc.wantVar
		for k, v := range tc.env {
			name += "/" + k + "=" + v
		}
		t.Run(name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("API_ADDR", "127.0.0.1:8080")
			setEnv(t, tc.env)
			_, err := load(t)
			assertVarError(t, err, tc.wantVar)
		})
	}
}

func TestParseErrorKeepsValueAndCause(t *testing.T) {
	clearEnv(t)
	t.Setenv("API_ADDR", "127.0.0.1:8080")
	t.Setenv("NATS_REPLICAS", "two")
	_, err := load(t)
	assertVarError(t, err, "NATS_REPLICAS")
	assert.Contains(t, err.Error(), `"two"`)
	assert.ErrorIs(t, err, strconv.ErrSyntax)
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30":         30 * time.Second,
		"0.5":        500 * time.Millisecond,
		"500ms":      500 * time.Millisecond,
		"1m30s":      90 * time.Second,
		" 2s ":       2 * time.Second,
		"0":          0,
		"-1":         -time.Second,
		"1h":         time.Hour,
		"86400":      24 * time.Hour,
		"0.001":      time.Millisecond,
		"1e3":        1000 * time.Second,
		"4000000000": 4000000000 * time.Second,
	}
	for in, want := range good {
		t.Run("good/"+in, func(t *testing.T) {
			d, err := config.ParseDuration(in)
			require.NoError(t, err)
			assert.Equal(t, want, d)
		})
	}
	for _, in := range []string{"", "  ", "abc", "NaN", "nan", "Inf", "+Inf", "-Inf", "infinity", "1e400", "9999999999", "5 s", "1d", "ms", "1.2.3"} {
		t.Run("bad/"+in, func(t *testing.T) {
			_, err := config.ParseDuration(in)
			require.Error(t, err)
		})
	}
}

func TestDurationDecode(t *testing.T) {
	var d config.Duration
	require.NoError(t, d.Decode("1.5"))
	assert.Equal(t, 1500*time.Millisecond, d.D())
	before := d
	require.Error(t, d.Decode("bad"))
	assert.Equal(t, before, d, "a failed decode leaves the value alone")
}

func TestDotEnv(t *testing.T) {
	t.Run("read from working directory", func(t *testing.T) {
		clearEnv(t)
		require.NoError(t, os.WriteFile(".env", []byte("# comment\nHEALTH_CHECK_INTERVAL=10\nAPI_ADDR=127.0.0.1:8080\nLOAD_BALANCING_STRATEGY=\"weighted\"\nexport FAILOVER_THRESHOLD=0.25\n"), 0o600))
		cfg, err := load(t)
		require.NoError(t, err)
		assert.Equal(t, 10*time.Second, cfg.Interval.D())
		assert.Equal(t, model.StrategyWeighted, cfg.Strategy)
		assert.Equal(t, 0.25, cfg.Threshold)
	})
	t.Run("real environment wins", func(t *testing.T) {
		clearEnv(t)
		require.NoError(t, os.WriteFile(".env", []byte("HEALTH_CHECK_INTERVAL=10\nAPI_ADDR=127.0.0.1:8080\nLOAD_BALANCING_STRATEGY=weighted\n"), 0o600))
		t.Setenv("HEALTH_CHECK_INTERVAL", "500ms")
		t.Setenv("LOAD_BALANCING_STRATEGY", "least_latency")
		cfg, err := load(t)
		require.NoError(t, err)
		assert.Equal(t, 500*time.Millisecond, cfg.Interval.D())
		assert.Equal(t, model.StrategyLeastLatency, cfg.Strategy)
	})
	t.Run("bad value in .env names the variable", func(t *testing.T) {
		clearEnv(t)
		require.NoError(t, os.WriteFile(".env", []byte("API_ADDR=127.0.0.1:8080\nHEALTH_FAILURE_THRESHOLD=0\n"), 0o600))
		_, err := load(t)
		assertVarError(t, err, "HEALTH_FAILURE_THRESHOLD")
	})
	t.Run("malformed .env", func(t *testing.T) {
		clearEnv(t, "FOO")
		require.NoError(t, os.WriteFile(".env", []byte("FOO='unterminated\n"), 0o600))
		_, err := load(t)
		assertVarError(t, err, ".env")
	})
	t.Run("no .env is fine", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("API_ADDR", "127.0.0.1:8080")
		_, err := load(t)
		require.NoError(t, err)
	})
	t.Run(".env is only read from the working directory", func(t *testing.T) {
		clearEnv(t)
		require.NoError(t, os.Mkdir("sub", 0o700))
		require.NoError(t, os.WriteFile(filepath.Join("sub", ".env"), []byte("HEALTH_CHECK_INTERVAL=x\n"), 0o600))
		t.Setenv("API_ADDR", "127.0.0.1:8080")
		_, err := load(t)
		require.NoError(t, err)
	})
}

func TestVarError(t *testing.T) {
	cause := errors.New("boom")
	err := error(&config.VarError{Var: "X_Y", Err: cause})
	assert.Equal(t, "invalid X_Y: boom", err.Error())
	assert.ErrorIs(t, err, cause)
}

func TestAllStopsAtFirstError(t *testing.T) {
	first := &config.VarError{Var: "A", Err: errors.New("a")}
	second := &config.VarError{Var: "B", Err: errors.New("b")}
	calls := 0
	v := func(err error) config.Validator {
		return validatorFunc(func() error { calls++; return err })
	}
	require.NoError(t, config.All())
	require.NoError(t, config.All(v(nil), v(nil)))
	calls = 0
	err := config.All(v(nil), v(first), v(second))
	assert.Same(t, first, err)
	assert.Equal(t, 2, calls)
}

type validatorFunc func() error

func (f validatorFunc) Validate() error { return f() }

func TestPartsDirectly(t *testing.T) {
	// Zero values of parts as a service may build them by hand.
	assert.NoError(t, config.Standalone{DemoPort: 9001}.Validate())
	assertVarError(t, config.Standalone{}.Validate(), "STANDALONE_DEMO_PORT")
	assert.NoError(t, config.RegionTLS{}.Validate())
	assert.NoError(t, config.Ops{}.Validate(), "empty LOG_LEVEL means info, empty METRICS_ADDR means none")
	assertVarError(t, config.NATS{}.Validate(), "NATS_REPLICAS")
	assertVarError(t, config.NATS{Replicas: 1}.Validate(), "NATS_REQUEST_TIMEOUT")
	assert.NoError(t, config.NATS{Replicas: 1, RequestTimeout: config.Duration(time.Second)}.Validate())
	assertVarError(t, config.Failover{Threshold: math.NaN()}.Validate(), "FAILOVER_THRESHOLD")
	assertVarError(t, config.Failover{Threshold: math.Inf(1)}.Validate(), "FAILOVER_THRESHOLD")
	assertVarError(t, config.API{Addr: "127.0.0.1:1", RateLimit: math.NaN(), RateBurst: 1}.Validate(), "API_RATE_LIMIT")
	assertVarError(t, config.API{Addr: "127.0.0.1:1", RateLimit: math.Inf(1), RateBurst: 1}.Validate(), "API_RATE_LIMIT")
	assertVarError(t, config.Health{Interval: 1, Timeout: 1, Path: "/h", FailureThreshold: 1, RecoveryThreshold: 1, HistoryMaxAge: 1}.Validate(), "HEALTH_HISTORY_PER_REGION")
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080":   true,
		"127.1.2.3:8080":   true,
		"[::1]:8080":       true,
		"localhost:8080":   true,
		"LOCALHOST:8080":   true,
		"api.localhost:80": true,
		":8080":            false,
		"0.0.0.0:8080":     false,
		"[::]:8080":        false,
		"10.0.0.1:8080":    false,
		"example.com:8080": false,
		"127.0.0.1":        false,
		"garbage":          false,
	} {
		t.Run(addr, func(t *testing.T) {
			assert.Equal(t, want, config.IsLoopbackAddr(addr))
		})
	}
}

func TestValidateAddr(t *testing.T) {
	for _, good := range []string{":8080", "127.0.0.1:0", "[::1]:80", "localhost:http", "0.0.0.0:65535"} {
		assert.NoError(t, config.ValidateAddr(good), good)
	}
	for _, bad := range []string{"", "8080", ":65536", ":-1", "h:nosuchservice-xyz", "a:b:c", "[::1"} {
		assert.Error(t, config.ValidateAddr(bad), bad)
	}
}

func TestOpsLevel(t *testing.T) {
	for in, want := range map[string]string{"": "INFO", "debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR", "ERROR": "ERROR"} {
		l, err := config.Ops{LogLevel: in}.Level()
		require.NoError(t, err, in)
		assert.Equal(t, want, l.String(), in)
	}
	_, err := config.Ops{LogLevel: "loud"}.Level()
	assert.Error(t, err)
}

// --- process level: a bad variable exits 2 and names the variable ---

const childMarker = "MRLB_CONFIG_TEST_CHILD"

func runChild() {
	var cfg allConfig
	cfg.NATS.URL = config.DefaultNATSURL
	config.MustLoad(&cfg)
	os.Exit(0)
}

func TestMustLoadExitsTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	tests := []struct {
		name, key, value string
		wantCode         int
	}{
		{"bad duration", "HEALTH_CHECK_INTERVAL", "abc", 2},
		{"bad int", "HEALTH_FAILURE_THRESHOLD", "three", 2},
		{"out of range", "FAILOVER_THRESHOLD", "1.5", 2},
		{"public api without keys", "API_ADDR", "0.0.0.0:8080", 2},
		{"good", "HEALTH_CHECK_INTERVAL", "10", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Dir = t.TempDir()
			env := []string{childMarker + "=1"}
			for _, kv := range os.Environ() {
				k, _, _ := strings.Cut(kv, "=")
				if !isConfigVar(k) && k != childMarker {
					env = append(env, kv)
				}
			}
			if tc.key != "API_ADDR" {
				env = append(env, "API_ADDR=127.0.0.1:8080")
			}
			cmd.Env = append(env, tc.key+"="+tc.value)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.wantCode, code, "stderr: %s", stderr.String())
			if tc.wantCode != 0 {
				assert.Contains(t, stderr.String(), tc.key)
				assert.Contains(t, stderr.String(), "configuration error")
			}
		})
	}
}

func isConfigVar(k string) bool {
	for _, v := range allVars {
		if v == k {
			return true
		}
	}
	return false
}
