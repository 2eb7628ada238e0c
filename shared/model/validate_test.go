package model_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireCode asserts err is a *model.Error with the given status and code.
func requireCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	require.Error(t, err)
	var e *model.Error
	require.Truef(t, errors.As(err, &e), "%v (%T) is not a *model.Error", err, err)
	assert.Equal(t, status, e.Status, "status of %v", err)
	assert.Equal(t, code, e.Code, "code of %v", err)
	assert.NotEmpty(t, e.Message)
}

func TestValidateRegionName(t *testing.T) {
	good := []string{"a", "0", "us-east", "eu-west-1", "a-", "a--b", "9lives", strings.Repeat("a", 63), "a" + strings.Repeat("-", 62)}
	for _, n := range good {
		t.Run("good/"+n, func(t *testing.T) {
			assert.NoError(t, model.ValidateRegionName(n))
		})
	}
	t.Run("empty", func(t *testing.T) {
		requireCode(t, model.ValidateRegionName(""), 400, "missing_region")
	})
	bad := []string{
		"-a", "US-EAST", "Us", "us_east", "us.east", "us east", " us", "us ", "us\n", "\nus",
		strings.Repeat("a", 64), "us*", "us>", "é", "a/b", "a:b", "a,b", "ü-east",
	}
	for _, n := range bad {
		t.Run(fmt.Sprintf("bad/%q", n), func(t *testing.T) {
			requireCode(t, model.ValidateRegionName(n), 400, "invalid_region")
		})
	}
}

func TestValidateEndpoint(t *testing.T) {
	tests := []struct {
		raw       string
		plaintext bool
		code      string // "" means valid
	}{
		// Loopback plain http is always fine.
		{"http://127.0.0.1:9001", false, ""},
		{"http://127.0.0.1", false, ""},
		{"http://127.9.9.9:80", false, ""},
		{"http://[::1]:9000", false, ""},
		{"http://[::1]", false, ""},
		{"http://localhost:8080", false, ""},
		{"http://LocalHost:8080", false, ""},
		{"http://demo.localhost:8080", false, ""},
		{"http://127.0.0.1:9001/api/v1", false, ""},
		{"HTTP://127.0.0.1:9001", false, ""},
		// https to anything.
		{"https://example.com", false, ""},
		{"https://example.com:8443/prefix/", false, ""},
		{"https://10.0.0.1", false, ""},
		{"https://[2001:db8::1]:443", false, ""},
		{"https://localhost", false, ""},
		// Plain http to other hosts only with allowPlaintext.
		{"http://example.com", false, "plaintext_not_allowed"},
		{"http://10.0.0.1:80", false, "plaintext_not_allowed"},
		{"http://0.0.0.0:80", false, "plaintext_not_allowed"},
		{"http://[::]:80", false, "plaintext_not_allowed"},
		{"http://localhost.example.com", false, "plaintext_not_allowed"},
		{"http://127.0.0.1.nip.io", false, "plaintext_not_allowed"},
		{"http://[2001:db8::1]", false, "plaintext_not_allowed"},
		{"http://example.com", true, ""},
		{"http://10.0.0.1:80/x", true, ""},
		// Not absolute http(s) URLs.
		{"", false, "missing_endpoint"},
		{"", true, "missing_endpoint"},
		{"example.com", false, "invalid_endpoint"},
		{"127.0.0.1:9000", false, "invalid_endpoint"},
		{"localhost:9000", false, "invalid_endpoint"},
		{"/relative/path", false, "invalid_endpoint"},
		{"relative", false, "invalid_endpoint"},
		{"//example.com/x", false, "invalid_endpoint"},
		{"ftp://example.com", true, "invalid_endpoint"},
		{"ws://127.0.0.1", true, "invalid_endpoint"},
		{"file:///etc/passwd", true, "invalid_endpoint"},
		{"javascript:alert(1)", true, "invalid_endpoint"},
		{"http:", true, "invalid_endpoint"},
		{"http://", true, "invalid_endpoint"},
		{"http:127.0.0.1", true, "invalid_endpoint"},
		{"http:///path", true, "invalid_endpoint"},
		{"https://:443", true, "invalid_endpoint"},
		{" https://example.com", true, "invalid_endpoint"},
		{"https://example.com ", true, "invalid_endpoint"},
		{"https://exa mple.com", true, "invalid_endpoint"},
		{"https://example.com/\n", true, "invalid_endpoint"},
		{"https://%zz", true, "invalid_endpoint"},
		// Credentials, query, fragment.
		{"https://user:pass@example.com", true, "invalid_endpoint"},
		{"https://user@example.com", true, "invalid_endpoint"},
		{"http://u:p@127.0.0.1:9000", false, "invalid_endpoint"},
		{"https://example.com/?a=1", true, "invalid_endpoint"},
		{"https://example.com?", true, "invalid_endpoint"},
		{"https://example.com/#top", true, "invalid_endpoint"},
		{"https://example.com#", true, "invalid_endpoint"},
		// Ports.
		{"https://example.com:99999", true, "invalid_endpoint"},
		{"https://example.com:65536", true, "invalid_endpoint"},
		{"https://example.com:0", true, "invalid_endpoint"},
		{"http://127.0.0.1:0", false, "invalid_endpoint"},
		{"https://example.com:abc", true, "invalid_endpoint"},
		{"https://example.com:-1", true, "invalid_endpoint"},
		{"https://example.com:65535", true, ""},
		{"https://example.com:1", true, ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/plaintext=%v", tc.raw, tc.plaintext), func(t *testing.T) {
			err := model.ValidateEndpoint(tc.raw, tc.plaintext)
			if tc.code == "" {
				assert.NoError(t, err)
				return
			}
			requireCode(t, err, 400, tc.code)
		})
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "a.localhost": true, "127.0.0.1": true, "127.255.0.1": true,
		"::1": true, "0:0:0:0:0:0:0:1": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "example.com": false,
		"localhost.example.com": false, "mylocalhost": false, "128.0.0.1": false,
	} {
		assert.Equal(t, want, model.IsLoopbackHost(host), host)
	}
}

func TestValidateWeight(t *testing.T) {
	for _, w := range []float64{0, 0.0001, 1, model.DefaultWeight, 999.999, 1000, model.MaxWeight} {
		assert.NoError(t, model.ValidateWeight(w), w)
	}
	for _, w := range []float64{-1, -0.0001, 1000.1, 1000.0000001, 1e9, math.NaN(), math.Inf(1), math.Inf(-1), -math.MaxFloat64, math.MaxFloat64} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			requireCode(t, model.ValidateWeight(w), 400, "invalid_weight")
		})
	}
}

func TestValidateHealthPath(t *testing.T) {
	for _, p := range []string{"", "/", "/health", "/healthz", "/api/v1/health", "/health?full=1", "/h%20x", "/a:b"} {
		assert.NoError(t, model.ValidateHealthPath(p), p)
	}
	for _, p := range []string{"health", "http://x/health", "//x/health", " /health", "/health ", "/he alth", "/h\tx", "/h\nx", "/h\rx", "/h#frag", "*", "?x=1", "/h%zz"} {
		t.Run(fmt.Sprintf("%q", p), func(t *testing.T) {
			requireCode(t, model.ValidateHealthPath(p), 400, "invalid_health_path")
		})
	}
}

func TestValidateStatusRange(t *testing.T) {
	assert.NoError(t, model.ValidateStatusRange(nil))
	for _, r := range []model.StatusRange{{100, 599}, {200, 299}, {200, 200}, {599, 599}} {
		assert.NoError(t, model.ValidateStatusRange(&r), r)
	}
	for _, r := range []model.StatusRange{{0, 0}, {99, 200}, {200, 600}, {300, 200}, {-1, 200}, {200, -1}, {600, 700}} {
		t.Run(fmt.Sprint(r), func(t *testing.T) {
			requireCode(t, model.ValidateStatusRange(&r), 400, "invalid_expected_status")
		})
	}
}

func TestValidateRegion(t *testing.T) {
	good := model.Region{Region: "us-east", Endpoint: "https://us.example.com", Weight: 1, HealthPath: "/h", ExpectedStatus: &model.StatusRange{200, 299}}
	require.NoError(t, model.ValidateRegion(good, false))

	tests := []struct {
		name   string
		mutate func(r *model.Region)
		code   string
	}{
		{"name", func(r *model.Region) { r.Region = "Bad" }, "invalid_region"},
		{"no name", func(r *model.Region) { r.Region = "" }, "missing_region"},
		{"endpoint", func(r *model.Region) { r.Endpoint = "ftp://x" }, "invalid_endpoint"},
		{"plaintext", func(r *model.Region) { r.Endpoint = "http://x" }, "plaintext_not_allowed"},
		{"weight", func(r *model.Region) { r.Weight = math.NaN() }, "invalid_weight"},
		{"health path", func(r *model.Region) { r.HealthPath = "h" }, "invalid_health_path"},
		{"status", func(r *model.Region) { r.ExpectedStatus = &model.StatusRange{500, 400} }, "invalid_expected_status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mutate(&r)
			requireCode(t, model.ValidateRegion(r, false), 400, tc.code)
		})
	}
	r := good
	r.Endpoint = "http://x"
	assert.NoError(t, model.ValidateRegion(r, true))
}

func TestNormalizeStrategy(t *testing.T) {
	tests := []struct {
		strategy string
		params   string
		nilRaw   bool
		want     string // canonical parameters; "" means an error with code
		code     string
	}{
		{model.StrategyRoundRobin, "", true, "{}", ""},
		{model.StrategyRoundRobin, "null", false, "{}", ""},
		{model.StrategyRoundRobin, " null ", false, "{}", ""},
		{model.StrategyRoundRobin, "{}", false, "{}", ""},
		{model.StrategyRoundRobin, " { } ", false, "{}", ""},
		{model.StrategyRoundRobin, "  ", false, "{}", ""},
		{model.StrategyRoundRobin, `{"exploration":0.1}`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `{"a":1}`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `[]`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `"x"`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `1`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `{`, false, "", "invalid_parameters"},
		{model.StrategyRoundRobin, `{}{}`, false, "", "invalid_parameters"},
		{model.StrategyWeighted, "", true, "{}", ""},
		{model.StrategyWeighted, "{}", false, "{}", ""},
		{model.StrategyWeighted, `{"weights":{"a":1}}`, false, "", "invalid_parameters"},
		{model.StrategyWeighted, `true`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, "", true, "{}", ""},
		{model.StrategyLeastLatency, "null", false, "{}", ""},
		{model.StrategyLeastLatency, "{}", false, "{}", ""},
		{model.StrategyLeastLatency, `{"exploration":null}`, false, "{}", ""},
		{model.StrategyLeastLatency, `{"exploration":0.05}`, false, `{"exploration":0.05}`, ""},
		{model.StrategyLeastLatency, `{ "exploration" : 0 }`, false, `{"exploration":0}`, ""},
		{model.StrategyLeastLatency, `{"exploration":0.5}`, false, `{"exploration":0.5}`, ""},
		{model.StrategyLeastLatency, `{"exploration":5e-1}`, false, `{"exploration":0.5}`, ""},
		{model.StrategyLeastLatency, `{"exploration":0.51}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":-0.01}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":1}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":"0.1"}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":1e999}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":true}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":0.1,"other":1}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"unknown":1}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `[0.1]`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `0.1`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":0.1`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{"exploration":0.1} {"exploration":0.9}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{}}`, false, "", "invalid_parameters"},
		{model.StrategyLeastLatency, `{} garbage`, false, "", "invalid_parameters"},
		{"", "", true, "", "missing_strategy"},
		{"random", "", true, "", "invalid_strategy"},
		{"Round_Robin", "{}", false, "", "invalid_strategy"},
		{" round_robin", "{}", false, "", "invalid_strategy"},
		{"least-latency", "{}", false, "", "invalid_strategy"},
	}
	for _, tc := range tests {
		t.Run(tc.strategy+"/"+tc.params, func(t *testing.T) {
			var raw json.RawMessage
			if !tc.nilRaw {
				raw = json.RawMessage(tc.params)
			}
			out, err := model.NormalizeStrategy(tc.strategy, raw)
			if tc.code != "" {
				requireCode(t, err, 400, tc.code)
				assert.Nil(t, out)
				return
			}
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(out))
			assert.True(t, json.Valid(out))
			// Canonical output is a fixed point.
			again, err := model.NormalizeStrategy(tc.strategy, out)
			require.NoError(t, err)
			assert.Equal(t, string(out), string(again))
		})
	}
}

func TestLeastLatencyParams(t *testing.T) {
	assert.Equal(t, model.DefaultExploration, model.LeastLatencyParams{}.ExplorationOrDefault())
	zero := 0.0
	assert.Equal(t, 0.0, model.LeastLatencyParams{Exploration: &zero}.ExplorationOrDefault())
	e := 0.2
	assert.Equal(t, 0.2, model.LeastLatencyParams{Exploration: &e}.ExplorationOrDefault())
}

func TestParseEndpoints(t *testing.T) {
	ep := func(r, e string) model.Endpoint { return model.Endpoint{Region: r, Endpoint: e} }
	tests := []struct {
		name      string
		in        string
		plaintext bool
		want      []model.Endpoint
		code      string
	}{
		{"empty", "", false, nil, ""},
		{"blank", "  \t ", false, nil, ""},
		{"only commas", ",, ,", false, nil, ""},
		{"one", "us-east:http://127.0.0.1:9001", false, []model.Endpoint{ep("us-east", "http://127.0.0.1:9001")}, ""},
		{"first colon", "a:https://h:8443/p:q", false, []model.Endpoint{ep("a", "https://h:8443/p:q")}, ""},
		{"three", "us-east:http://127.0.0.1:9001,eu-west:http://127.0.0.1:9002,ap-south:https://ap.example.com/x", false,
			[]model.Endpoint{ep("us-east", "http://127.0.0.1:9001"), ep("eu-west", "http://127.0.0.1:9002"), ep("ap-south", "https://ap.example.com/x")}, ""},
		{"whitespace", "  us-east : http://127.0.0.1:9001 ,\n eu-west:\thttps://eu.example.com\t", false,
			[]model.Endpoint{ep("us-east", "http://127.0.0.1:9001"), ep("eu-west", "https://eu.example.com")}, ""},
		{"empty entries", ",a:http://127.0.0.1:1,,b:http://127.0.0.1:2,", false,
			[]model.Endpoint{ep("a", "http://127.0.0.1:1"), ep("b", "http://127.0.0.1:2")}, ""},
		{"ipv6", "a:http://[::1]:9001", false, []model.Endpoint{ep("a", "http://[::1]:9001")}, ""},
		{"plaintext allowed", "a:http://10.0.0.1:80", true, []model.Endpoint{ep("a", "http://10.0.0.1:80")}, ""},
		{"plaintext refused", "a:http://10.0.0.1:80", false, nil, "plaintext_not_allowed"},
		{"no colon", "us-east", false, nil, "invalid_endpoints"},
		{"no colon second", "a:http://127.0.0.1:1,b", false, nil, "invalid_endpoints"},
		{"empty name", ":http://127.0.0.1:1", false, nil, "missing_region"},
		{"blank name", "  :http://127.0.0.1:1", false, nil, "missing_region"},
		{"empty url", "a:", false, nil, "missing_endpoint"},
		{"blank url", "a:  ", false, nil, "missing_endpoint"},
		{"upper name", "US-EAST:http://127.0.0.1:1", false, nil, "invalid_region"},
		{"underscore name", "us_east:http://127.0.0.1:1", false, nil, "invalid_region"},
		{"long name", strings.Repeat("a", 64) + ":http://127.0.0.1:1", false, nil, "invalid_region"},
		{"url without name", "http://127.0.0.1:9001", false, nil, "invalid_endpoint"},
		{"relative url", "a:/path", false, nil, "invalid_endpoint"},
		{"scheme-less url", "a:127.0.0.1:9001", false, nil, "invalid_endpoint"},
		{"ftp", "a:ftp://h", true, nil, "invalid_endpoint"},
		{"credentials", "a:https://u:p@h", true, nil, "invalid_endpoint"},
		{"duplicate", "a:http://127.0.0.1:1,a:http://127.0.0.1:2", false, nil, "duplicate_region"},
		{"duplicate spaced", "a:http://127.0.0.1:1, a :http://127.0.0.1:1", false, nil, "duplicate_region"},
		{"one bad among good", "a:http://127.0.0.1:1,B:http://127.0.0.1:2", false, nil, "invalid_region"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := model.ParseEndpoints(tc.in, tc.plaintext)
			if tc.code != "" {
				requireCode(t, err, 400, tc.code)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestHealthFailureRate(t *testing.T) {
	tests := []struct {
		window []bool
		want   float64
	}{
		{nil, 0},
		{[]bool{}, 0},
		{[]bool{true}, 0},
		{[]bool{false}, 1},
		{[]bool{true, false}, 0.5},
		{[]bool{true, false, false, true, true, true, true, true, true, false}, 0.3},
		{[]bool{false, false, false}, 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.window), func(t *testing.T) {
			assert.InDelta(t, tc.want, model.Health{Window: tc.window}.FailureRate(), 1e-12)
		})
	}
}

func TestInRotation(t *testing.T) {
	f := &model.Failover{FromRegion: "a", ToRegion: "b", Reason: model.ReasonManual}
	tests := []struct {
		name string
		h    *model.Health
		f    *model.Failover
		want bool
	}{
		{"never checked", nil, nil, true},
		{"empty status", &model.Health{}, nil, true},
		{"unknown", &model.Health{Status: model.StatusUnknown}, nil, true},
		{"healthy", &model.Health{Status: model.StatusHealthy}, nil, true},
		{"unhealthy", &model.Health{Status: model.StatusUnhealthy}, nil, false},
		{"failed over healthy", &model.Health{Status: model.StatusHealthy}, f, false},
		{"failed over never checked", nil, f, false},
		{"failed over unhealthy", &model.Health{Status: model.StatusUnhealthy}, f, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, model.InRotation(tc.h, tc.f))
		})
	}
}

func TestNewRegionView(t *testing.T) {
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	r := model.Region{Region: "us-east", Endpoint: "https://us.example.com", Weight: 2, CreatedAt: created, UpdatedAt: created}

	t.Run("never checked", func(t *testing.T) {
		v := model.NewRegionView(r, nil, nil, "/health")
		assert.Equal(t, "us-east", v.Region)
		assert.Equal(t, "https://us.example.com", v.Endpoint)
		assert.Equal(t, 2.0, v.Weight)
		assert.Equal(t, "/health", v.HealthPath, "default path filled in")
		assert.Equal(t, model.StatusUnknown, v.Status)
		assert.True(t, v.InRotation)
		assert.Nil(t, v.LatencyMS)
		assert.Nil(t, v.LastCheck)
		assert.Nil(t, v.FailedOverTo)
		b, err := json.Marshal(v)
		require.NoError(t, err)
		assert.JSONEq(t, `{"region":"us-east","endpoint":"https://us.example.com","weight":2,"health_path":"/health",
			"status":"unknown","in_rotation":true,"latency_ms":null,"last_check":null,"failed_over_to":null}`, string(b))
	})
	t.Run("own health path wins", func(t *testing.T) {
		r := r
		r.HealthPath = "/ready"
		r.ExpectedStatus = &model.StatusRange{Min: 200, Max: 204}
		v := model.NewRegionView(r, nil, nil, "/health")
		assert.Equal(t, "/ready", v.HealthPath)
		assert.Equal(t, &model.StatusRange{Min: 200, Max: 204}, v.ExpectedStatus)
	})
	t.Run("health without a check yet", func(t *testing.T) {
		v := model.NewRegionView(r, &model.Health{Region: "us-east"}, nil, "/health")
		assert.Equal(t, model.StatusUnknown, v.Status)
		assert.Nil(t, v.LatencyMS)
		assert.True(t, v.InRotation)
	})
	t.Run("checked healthy", func(t *testing.T) {
		at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
		h := &model.Health{Region: "us-east", Status: model.StatusHealthy, LatencyMS: 12.5, Last: &model.CheckResult{Region: "us-east", Healthy: true, StatusCode: 200, LatencyMS: 13, CheckedAt: at}}
		v := model.NewRegionView(r, h, nil, "/health")
		assert.Equal(t, model.StatusHealthy, v.Status)
		require.NotNil(t, v.LatencyMS)
		assert.Equal(t, 12.5, *v.LatencyMS)
		require.NotNil(t, v.LastCheck)
		assert.Equal(t, at, *v.LastCheck)
		assert.True(t, v.InRotation)
		b, err := json.Marshal(v)
		require.NoError(t, err)
		assert.Contains(t, string(b), `"last_check":"2024-05-06T07:08:09Z"`)
		// The view does not alias the health document.
		h.LatencyMS = 99
		h.Last.CheckedAt = time.Time{}
		assert.Equal(t, 12.5, *v.LatencyMS)
		assert.Equal(t, at, *v.LastCheck)
	})
	t.Run("unhealthy", func(t *testing.T) {
		v := model.NewRegionView(r, &model.Health{Status: model.StatusUnhealthy, Last: &model.CheckResult{}}, nil, "/health")
		assert.Equal(t, model.StatusUnhealthy, v.Status)
		assert.False(t, v.InRotation)
	})
	t.Run("failed over", func(t *testing.T) {
		f := &model.Failover{FromRegion: "us-east", ToRegion: "eu-west", Reason: model.ReasonManual}
		v := model.NewRegionView(r, &model.Health{Status: model.StatusHealthy}, f, "/health")
		assert.False(t, v.InRotation)
		require.NotNil(t, v.FailedOverTo)
		assert.Equal(t, "eu-west", *v.FailedOverTo)
		f.ToRegion = "changed"
		assert.Equal(t, "eu-west", *v.FailedOverTo)
	})
}

func TestErrorIsAndAs(t *testing.T) {
	nf := model.NotFound("us-east")
	assert.Equal(t, http.StatusNotFound, nf.Status)
	assert.Contains(t, nf.Error(), "us-east")
	assert.ErrorIs(t, nf, model.ErrRegionNotFound)
	assert.NotErrorIs(t, nf, model.ErrRegionExists)
	assert.ErrorIs(t, fmt.Errorf("wrapped: %w", nf), model.ErrRegionNotFound)

	un := model.Unavailable("nats %s", "down")
	assert.Equal(t, http.StatusServiceUnavailable, un.Status)
	assert.Equal(t, "nats down", un.Error())
	assert.ErrorIs(t, un, model.ErrUnavailable)

	c := model.Conflict("region_exists", "region %q exists", "a")
	assert.Equal(t, http.StatusConflict, c.Status)
	assert.ErrorIs(t, c, model.ErrRegionExists)
	assert.NotErrorIs(t, c, model.ErrConflict)

	inv := model.Invalid("invalid_region", "bad %d", 1)
	assert.Equal(t, &model.Error{Status: 400, Code: "invalid_region", Message: "bad 1"}, inv)
	assert.NotErrorIs(t, inv, model.ErrRegionNotFound)
	assert.NotErrorIs(t, inv, errors.New("invalid_region"))

	// An error decoded from the wire still matches its sentinel.
	b, err := json.Marshal(nf)
	require.NoError(t, err)
	assert.JSONEq(t, `{"status":404,"code":"region_not_found","error":"region \"us-east\" not found"}`, string(b))
	var back model.Error
	require.NoError(t, json.Unmarshal(b, &back))
	assert.ErrorIs(t, &back, model.ErrRegionNotFound)

	// AsError.
	assert.Same(t, nf, model.AsError(nf))
	assert.Same(t, nf, model.AsError(fmt.Errorf("ctx: %w", nf)))
	internal := model.AsError(errors.New("secret detail"))
	assert.Equal(t, http.StatusInternalServerError, internal.Status)
	assert.Equal(t, "internal", internal.Code)
	assert.NotContains(t, internal.Message, "secret", "internal details are not exposed")
}

func TestFailoverTriggerRequestParseTTL(t *testing.T) {
	good := map[string]time.Duration{"": 0, "30m": 30 * time.Minute, "1h30m": 90 * time.Minute, "1ns": 1, "500ms": 500 * time.Millisecond}
	for in, want := range good {
		d, err := model.FailoverTriggerRequest{TTL: in}.ParseTTL()
		require.NoError(t, err, in)
		assert.Equal(t, want, d, in)
	}
	for _, in := range []string{"0", "0s", "-1m", "abc", "30", "1d", " 30m", "NaN"} {
		t.Run(in, func(t *testing.T) {
			_, err := model.FailoverTriggerRequest{TTL: in}.ParseTTL()
			requireCode(t, err, 400, "invalid_ttl")
		})
	}
}

func TestDocumentsJSON(t *testing.T) {
	// The contract's field names.
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := json.Marshal(model.CheckResult{Region: "a", Healthy: true, StatusCode: 200, LatencyMS: 1.5, CheckedAt: at})
	require.NoError(t, err)
	assert.JSONEq(t, `{"region":"a","healthy":true,"status_code":200,"latency_ms":1.5,"error":"","checked_at":"2024-01-01T00:00:00Z"}`, string(b))

	b, err = json.Marshal(model.Failover{FromRegion: "a", ToRegion: "b", Reason: model.ReasonFailureRate, Since: at})
	require.NoError(t, err)
	assert.JSONEq(t, `{"from_region":"a","to_region":"b","reason":"failure_rate","since":"2024-01-01T00:00:00Z"}`, string(b))

	b, err = json.Marshal(model.Event{Type: model.EventHealthChanged, At: at, Region: "a", From: "healthy", To: "unhealthy", Reason: "x"})
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"health.changed","at":"2024-01-01T00:00:00Z","region":"a","from":"healthy","to":"unhealthy","reason":"x"}`, string(b))
}
