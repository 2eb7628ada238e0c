package apigw

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// startHealthChecker runs the real health checker against the test's NATS.
func (e *env) startHealthChecker(interval time.Duration) {
	e.t.Helper()
	cfg := healthchecker.DefaultConfig()
	cfg.URL = e.ns.ClientURL()
	cfg.MetricsAddr = "off"
	cfg.MemberID = "hc-apigw-test"
	cfg.Interval = config.Duration(interval)
	cfg.Timeout = config.Duration(time.Second)
	cfg.RequestTimeout = config.Duration(5 * time.Second)
	cfg.FailureThreshold, cfg.RecoveryThreshold = 2, 1
	svc, err := healthchecker.New(context.Background(), connect(e.t, e.ns.ClientURL()), cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	runService(e.t, svc)
	poll.Until(e.t, 10*time.Second, "healthchecker answers", func() error {
		_, err := e.nc.Request("$SRV.PING."+bus.ServiceHealthChecker, nil, 200*time.Millisecond)
		return err
	})
}

// The health endpoints of the API end to end with the real configmgr and
// health checker: on-demand checks of one region and of all, the history
// they leave, and every error status.
func TestHealthEndpointsWithRealHealthChecker(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit, c.RateBurst = 10000, 10000 })
	e.startConfigMgr()
	e.startHealthChecker(time.Hour) // only on-demand checks (and the first one per region) happen in this test

	var failing atomic.Bool
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer region.Close()
	e.expect(e.do("POST", "/api/v1/lb/regions", map[string]any{"region": "good", "endpoint": region.URL}), 201, "")
	e.expect(e.do("POST", "/api/v1/lb/regions", map[string]any{"region": "dead", "endpoint": "http://127.0.0.1:1"}), 201, "")

	// One region: a real probe, recorded like any other.
	var one model.CheckResult
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "good"}), 200, "").json(t, &one)
	if one.Region != "good" || !one.Healthy || one.StatusCode != 200 || one.CheckedAt.IsZero() {
		t.Fatalf("check good = %+v", one)
	}
	failing.Store(true)
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "good"}), 200, "").json(t, &one)
	if one.Healthy || one.StatusCode != 503 || one.Error == "" {
		t.Fatalf("check failing good = %+v", one)
	}
	// All regions, sorted by name.
	var all model.HealthCheckAllResponse
	e.expect(e.do("POST", "/api/v1/lb/health/check", nil), 200, "").json(t, &all)
	if len(all.Results) != 2 || all.Results[0].Region != "dead" || all.Results[0].Healthy || all.Results[1].Region != "good" {
		t.Fatalf("check all = %+v", all)
	}

	// Errors of the check endpoint.
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "nope"}), 404, "region_not_found")
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "Bad_Name"}), 400, "invalid_region")
	e.expect(e.do("POST", "/api/v1/lb/health/check", `{"region":"good","x":1}`), 400, "invalid_json")
	e.expect(e.do("POST", "/api/v1/lb/health/check", `{"region":`), 400, "invalid_json")

	// History: newest first, bounded by limit, every check above is in it.
	type history struct {
		Region  string              `json:"region"`
		History []model.CheckResult `json:"history"`
	}
	var h history
	poll.Until(t, 10*time.Second, "history of good", func() error {
		e.expect(e.do("GET", "/api/v1/lb/health/history?region=good", nil), 200, "").json(t, &h)
		if len(h.History) < 3 {
			return fmt.Errorf("%d results", len(h.History))
		}
		return nil
	})
	if h.Region != "good" || h.History[0].Healthy || h.History[0].StatusCode != 503 {
		t.Fatalf("newest result first: %+v", h.History[0])
	}
	for i := 1; i < len(h.History); i++ {
		if h.History[i].CheckedAt.After(h.History[i-1].CheckedAt) {
			t.Fatalf("history not newest first at %d: %+v", i, h.History)
		}
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=good&limit=1", nil), 200, "").json(t, &h)
	if len(h.History) != 1 || h.History[0].StatusCode != 503 {
		t.Fatalf("limit=1: %+v", h.History)
	}
	for _, bad := range []string{"0", "1001", "-1", "abc", "1.5"} {
		e.expect(e.do("GET", "/api/v1/lb/health/history?region=good&limit="+bad, nil), 400, "")
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=nope", nil), 404, "region_not_found")
	e.expect(e.do("GET", "/api/v1/lb/health/history", nil), 400, "")
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=Bad_Name", nil), 400, "invalid_region")

	// The region view reflects what the checks found.
	var v model.RegionView
	poll.Until(t, 10*time.Second, "dead region unhealthy in the view", func() error {
		e.expect(e.do("GET", "/api/v1/lb/regions/dead", nil), 200, "").json(t, &v)
		if v.Status != model.StatusUnhealthy || v.InRotation || v.LastCheck == nil {
			return fmt.Errorf("view %+v", v)
		}
		return nil
	})
}
