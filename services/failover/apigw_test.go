package failover_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/apigw"
	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// api is an apigw on a loopback port with a client.
type api struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (s *sys) startAPI() *api {
	s.t.Helper()
	cfg := apigw.DefaultConfig()
	cfg.URL = s.ns.ClientURL()
	cfg.Addr = "127.0.0.1:0"
	cfg.MetricsAddr = "off"
	cfg.RateLimit, cfg.RateBurst = 10000, 10000
	cfg.RequestTimeout = config.Duration(5 * time.Second)
	svc, err := apigw.New(context.Background(), s.connect("apigw"), cfg, testLog(s.t, "apigw"), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	run(s.t, svc)
	return &api{t: s.t, base: svc.URL(), c: client(s.t)}
}

type apiResponse struct {
	status int
	body   []byte
}

func (a *api) do(method, path string, body any) apiResponse {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(resp.Body)
	return apiResponse{status: resp.StatusCode, body: data}
}

// expect checks the status and, for errors, the contract's {error, code}.
func (a *api) expect(r apiResponse, status int, code string) apiResponse {
	a.t.Helper()
	if r.status != status {
		a.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" {
		var e map[string]any
		if err := json.Unmarshal(r.body, &e); err != nil || len(e) != 2 || e["code"] != code || e["error"] == "" {
			a.t.Fatalf("error body %s, want code %s", r.body, code)
		}
	}
	return r
}

type statusDoc struct {
	Enabled   bool             `json:"enabled"`
	Threshold float64          `json:"threshold"`
	Active    []model.Failover `json:"active"`
	Recent    []model.Event    `json:"recent"`
}

func (a *api) status() statusDoc {
	a.t.Helper()
	var st statusDoc
	r := a.expect(a.do("GET", "/api/v1/lb/failover/status", nil), 200, "")
	if err := json.Unmarshal(r.body, &st); err != nil {
		a.t.Fatal(err)
	}
	return st
}

// TestAPIFailoverEndpoints drives every failover endpoint of the REST API
// end to end: apigw, the real configmgr, health checker and failover
// manager. Automatic failover is off so that the unhealthy region stays a
// candidate target for the 409 case.
func TestAPIFailoverEndpoints(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	ra, rb, rc := newRegion(t, "a", 0), newRegion(t, "b", 0), newRegion(t, "c", 0)
	sick := newRegion(t, "sick", 0)
	sick.failing.Store(true)
	s.addRegions(ra, rb, rc, sick)
	s.startHealthChecker("hc-1")
	s.startFailover("fo-1", func(c *failover.Config) { c.Enabled = false; c.Threshold = 0.4 })
	api := s.startAPI()
	s.waitHealthy(ra, rb, rc)
	poll.Until(t, 10*time.Second, "sick is unhealthy", func() error {
		if h := s.health("sick"); h == nil || h.Status != model.StatusUnhealthy {
			return fmt.Errorf("health %+v", h)
		}
		return nil
	})

	// The status reports the failover manager's effective settings.
	poll.Until(t, 10*time.Second, "settings in the status", func() error {
		if st := api.status(); st.Enabled || st.Threshold != 0.4 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if st := api.status(); st.Active == nil || len(st.Active) != 0 || st.Recent == nil || len(st.Recent) != 0 {
		t.Fatalf("fresh status %+v", st)
	}

	const trigger = "/api/v1/lb/failover/trigger"
	// 400: missing or bad fields, same region, bad TTL, unknown JSON.
	for _, tc := range []struct {
		body any
		code string
	}{
		{map[string]any{}, "missing_region"},
		{map[string]any{"from_region": "a"}, "missing_region"},
		{map[string]any{"to_region": "b"}, "missing_region"},
		{map[string]any{"from_region": "a", "to_region": "B!"}, "invalid_region"},
		{map[string]any{"from_region": "a", "to_region": "a"}, "same_region"},
		{map[string]any{"from_region": "a", "to_region": "b", "ttl": "soon"}, "invalid_ttl"},
		{map[string]any{"from_region": "a", "to_region": "b", "ttl": "0s"}, "invalid_ttl"},
		{`{"from_region":"a","to_region":"b","extra":1}`, "invalid_json"},
	} {
		api.expect(api.do("POST", trigger, tc.body), 400, tc.code)
	}
	// 404: unknown regions.
	api.expect(api.do("POST", trigger, map[string]any{"from_region": "zz", "to_region": "b"}), 404, "region_not_found")
	api.expect(api.do("POST", trigger, map[string]any{"from_region": "a", "to_region": "zz"}), 404, "region_not_found")
	// 409: unhealthy target unless force.
	api.expect(api.do("POST", trigger, map[string]any{"from_region": "a", "to_region": "sick"}), 409, "target_unhealthy")
	var forced model.Failover
	if err := json.Unmarshal(api.expect(api.do("POST", trigger, map[string]any{"from_region": "a", "to_region": "sick", "force": true}), 200, "").body, &forced); err != nil {
		t.Fatal(err)
	}
	if forced.FromRegion != "a" || forced.ToRegion != "sick" || forced.Reason != model.ReasonManual || forced.Since.IsZero() {
		t.Fatalf("forced = %+v", forced)
	}
	// 200: a manual failover with a TTL replaces it.
	r := api.expect(api.do("POST", trigger, map[string]any{"from_region": "a", "to_region": "b", "ttl": "30m"}), 200, "")
	var f struct {
		model.Failover
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.body, &f); err != nil {
		t.Fatal(err)
	}
	if f.FromRegion != "a" || f.ToRegion != "b" || f.Reason != model.ReasonManual || f.ExpiresAt == nil || time.Until(*f.ExpiresAt) < 29*time.Minute {
		t.Fatalf("failover = %s", r.body)
	}
	// 409: a failed-over region is no target, not even with force.
	api.expect(api.do("POST", trigger, map[string]any{"from_region": "c", "to_region": "a", "force": true}), 409, "target_failed_over")

	// The region document shows it.
	var view model.RegionView
	if err := json.Unmarshal(api.expect(api.do("GET", "/api/v1/lb/regions/a", nil), 200, "").body, &view); err != nil {
		t.Fatal(err)
	}
	if view.InRotation || view.FailedOverTo == nil || *view.FailedOverTo != "b" {
		t.Fatalf("region view %+v", view)
	}

	// Status: active and recent (newest first).
	poll.Until(t, 5*time.Second, "status lists the failover", func() error {
		st := api.status()
		if len(st.Active) != 1 || st.Active[0].FromRegion != "a" || st.Active[0].ToRegion != "b" || st.Active[0].Reason != model.ReasonManual {
			return fmt.Errorf("active %+v", st.Active)
		}
		if len(st.Recent) != 2 || st.Recent[0].ToRegion != "b" || st.Recent[1].ToRegion != "sick" || st.Recent[0].Type != model.EventFailoverStarted {
			return fmt.Errorf("recent %+v", st.Recent)
		}
		return nil
	})

	// DELETE: 404 unknown region, 404 no failover, 204, then 404 again.
	api.expect(api.do("DELETE", "/api/v1/lb/failover/zz", nil), 404, "region_not_found")
	api.expect(api.do("DELETE", "/api/v1/lb/failover/c", nil), 404, "failover_not_found")
	api.expect(api.do("DELETE", "/api/v1/lb/failover/a", nil), 204, "")
	api.expect(api.do("DELETE", "/api/v1/lb/failover/a", nil), 404, "failover_not_found")
	api.expect(api.do("DELETE", "/api/v1/lb/failover/A", nil), 400, "invalid_region")
	ended := events.waitEvent(t, 5*time.Second, model.EventFailoverEnded, "a")
	if ended.ToRegion != "b" || ended.Reason != model.ReasonManual {
		t.Fatalf("ended %+v", ended)
	}

	// A TTL ends the override by itself.
	api.expect(api.do("POST", trigger, map[string]any{"from_region": "c", "to_region": "b", "ttl": "1s"}), 200, "")
	poll.Until(t, 10*time.Second, "TTL expiry", func() error {
		if st := api.status(); len(st.Active) != 0 {
			return fmt.Errorf("active %+v", st.Active)
		}
		return nil
	})
	events.waitEvent(t, 5*time.Second, model.EventFailoverEnded, "c")
	st := api.status()
	if len(st.Recent) != 5 || st.Recent[0].Type != model.EventFailoverEnded || st.Recent[0].FromRegion != "c" {
		t.Fatalf("recent %+v", st.Recent)
	}
}
