package apigw

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

func TestHealthCheckTranslation(t *testing.T) {
	e := newEnv(t, nil)
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "a1"}), 503, "unavailable")
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "A_1"}), 400, "invalid_region")
	e.expect(e.do("POST", "/api/v1/lb/health/check", `{"region":"a1","deep":true}`), 400, "invalid_json")
	e.expect(e.do("POST", "/api/v1/lb/health/check", `{"region":`), 400, "invalid_json")

	at := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	serveFake(t, e.nc, bus.SubjectCmdHealthCheck, func(_ context.Context, req model.HealthCheckRequest) (json.RawMessage, error) {
		switch req.Region {
		case "":
			return json.Marshal(model.HealthCheckAllResponse{Results: []model.CheckResult{{Region: "a1", Healthy: true, StatusCode: 200, CheckedAt: at}}})
		case "gone":
			return nil, model.NotFound(req.Region)
		default:
			return json.Marshal(model.CheckResult{Region: req.Region, Healthy: true, StatusCode: 204, LatencyMS: 3.5, CheckedAt: at})
		}
	})
	var one model.CheckResult
	r := e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "a1"}), 200, "")
	r.json(t, &one)
	if one.Region != "a1" || one.StatusCode != 204 || !one.CheckedAt.Equal(at) || !strings.Contains(string(r.body), `"checked_at":"2025-05-06T07:08:09Z"`) {
		t.Fatalf("check = %s", r.body)
	}
	var all model.HealthCheckAllResponse
	for _, body := range []any{nil, "", map[string]any{}} {
		e.expect(e.do("POST", "/api/v1/lb/health/check", body), 200, "").json(t, &all)
		if len(all.Results) != 1 || all.Results[0].Region != "a1" {
			t.Fatalf("check all = %+v", all)
		}
	}
	e.expect(e.do("POST", "/api/v1/lb/health/check", map[string]any{"region": "gone"}), 404, "region_not_found")
}

func TestHealthHistory(t *testing.T) {
	e := newEnv(t, nil)
	e.putKV(bus.BucketRegions, "r1", model.Region{Region: "r1", Endpoint: "http://127.0.0.1:1", Weight: 1})
	e.putKV(bus.BucketRegions, "r2", model.Region{Region: "r2", Endpoint: "http://127.0.0.1:2", Weight: 1})
	e.putKV(bus.BucketRegions, "quiet", model.Region{Region: "quiet", Endpoint: "http://127.0.0.1:3", Weight: 1})
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 { // interleave two regions
		e.publish(bus.HealthResultsSubject("r1"), model.CheckResult{Region: "r1", Healthy: i%2 == 0, StatusCode: 200 + i, CheckedAt: t0.Add(time.Duration(i) * time.Second)})
		e.publish(bus.HealthResultsSubject("r2"), model.CheckResult{Region: "r2", StatusCode: 500, CheckedAt: t0})
	}
	type history struct {
		Region  string              `json:"region"`
		History []model.CheckResult `json:"history"`
	}
	var h history
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=r1", nil), 200, "").json(t, &h)
	if h.Region != "r1" || len(h.History) != 5 {
		t.Fatalf("history = %+v", h)
	}
	for i, r := range h.History { // newest first
		if r.Region != "r1" || r.StatusCode != 204-i {
			t.Fatalf("history[%d] = %+v", i, r)
		}
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=r1&limit=2", nil), 200, "").json(t, &h)
	if len(h.History) != 2 || h.History[0].StatusCode != 204 || h.History[1].StatusCode != 203 {
		t.Fatalf("limit 2 = %+v", h.History)
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=r1&limit=1000", nil), 200, "").json(t, &h)
	if len(h.History) != 5 {
		t.Fatalf("limit 1000 = %d results", len(h.History))
	}
	r := e.expect(e.do("GET", "/api/v1/lb/health/history?region=quiet", nil), 200, "")
	if strings.TrimSpace(string(r.body)) != `{"history":[],"region":"quiet"}` {
		t.Fatalf("no history = %s", r.body)
	}

	for _, tc := range []struct {
		query  string
		status int
		code   string
	}{
		{"", 400, "missing_region"},
		{"?limit=5", 400, "missing_region"},
		{"?region=R1", 400, "invalid_region"},
		{"?region=r1&limit=0", 400, "invalid_limit"},
		{"?region=r1&limit=1001", 400, "invalid_limit"},
		{"?region=r1&limit=-3", 400, "invalid_limit"},
		{"?region=r1&limit=ten", 400, "invalid_limit"},
		{"?region=nowhere", 404, "region_not_found"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			e.expect(e.do("GET", "/api/v1/lb/health/history"+tc.query, nil), tc.status, tc.code)
		})
	}
}

func TestHealthHistoryKeepsNewestOfMany(t *testing.T) {
	e := newEnv(t, nil)
	e.putKV(bus.BucketRegions, "r1", model.Region{Region: "r1", Endpoint: "http://127.0.0.1:1", Weight: 1})
	for i := range 1200 { // more than one fetch batch and than the max limit
		e.publish(bus.HealthResultsSubject("r1"), model.CheckResult{Region: "r1", StatusCode: i})
	}
	var h struct {
		History []model.CheckResult `json:"history"`
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=r1&limit=1000", nil), 200, "").json(t, &h)
	// LB_HEALTH keeps 1000 per region by default: the newest 1000 remain.
	if len(h.History) != 1000 || h.History[0].StatusCode != 1199 || h.History[999].StatusCode != 200 {
		t.Fatalf("got %d, first %d, last %d", len(h.History), h.History[0].StatusCode, h.History[len(h.History)-1].StatusCode)
	}
	e.expect(e.do("GET", "/api/v1/lb/health/history?region=r1", nil), 200, "").json(t, &h)
	if len(h.History) != DefaultHistoryLimit || h.History[0].StatusCode != 1199 || h.History[99].StatusCode != 1100 {
		t.Fatalf("default limit: got %d", len(h.History))
	}
}

func TestFailoverEndpoints(t *testing.T) {
	e := newEnv(t, nil)

	// Nothing written: defaults, empty lists (not null).
	r := e.expect(e.do("GET", "/api/v1/lb/failover/status", nil), 200, "")
	if strings.TrimSpace(string(r.body)) != `{"enabled":true,"threshold":0.5,"active":[],"recent":[]}` {
		t.Fatalf("default failover status = %s", r.body)
	}

	// Commands: 503 with no failover service, 400 at the edge.
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "b1"}), 503, "unavailable")
	e.expect(e.do("DELETE", "/api/v1/lb/failover/a1", nil), 503, "unavailable")
	e.expect(e.do("DELETE", "/api/v1/lb/failover/A1", nil), 400, "invalid_region")
	for _, tc := range []struct {
		body any
		code string
	}{
		{map[string]any{"to_region": "b1"}, "missing_region"},
		{map[string]any{"from_region": "a1", "to_region": "B 1"}, "invalid_region"},
		{map[string]any{"from_region": "a1", "to_region": "b1", "ttl": "soon"}, "invalid_ttl"},
		{map[string]any{"from_region": "a1", "to_region": "b1", "ttl": "-5m"}, "invalid_ttl"},
		{`{"from_region":"a1","to_region":"b1","now":true}`, "invalid_json"},
		{`{"from_region":"a1"`, "invalid_json"},
		{"", "missing_body"},
	} {
		e.expect(e.do("POST", "/api/v1/lb/failover/trigger", tc.body), 400, tc.code)
	}

	// With a service answering, results and typed errors pass through.
	since := time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	serveFake(t, e.nc, bus.SubjectCmdFailoverTrigger, func(_ context.Context, req model.FailoverTriggerRequest) (model.Failover, error) {
		switch {
		case req.FromRegion == req.ToRegion:
			return model.Failover{}, model.Invalid("same_region", "from and to are the same")
		case req.ToRegion == "nowhere":
			return model.Failover{}, model.NotFound(req.ToRegion)
		case req.ToRegion == "sick" && !req.Force:
			return model.Failover{}, model.Conflict("target_unhealthy", "target is not healthy")
		}
		return model.Failover{FromRegion: req.FromRegion, ToRegion: req.ToRegion, Reason: model.ReasonManual, Since: since}, nil
	})
	serveFake(t, e.nc, bus.SubjectCmdFailoverClear, func(_ context.Context, req model.FailoverClearRequest) (struct{}, error) {
		if req.FromRegion != "a1" {
			return struct{}{}, model.NotFound(req.FromRegion)
		}
		return struct{}{}, nil
	})
	var f model.Failover
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "b1", "ttl": "30m"}), 200, "").json(t, &f)
	if f.FromRegion != "a1" || f.ToRegion != "b1" || f.Reason != model.ReasonManual || !f.Since.Equal(since) {
		t.Fatalf("failover = %+v", f)
	}
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "a1"}), 400, "same_region")
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "nowhere"}), 404, "region_not_found")
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "sick"}), 409, "target_unhealthy")
	e.expect(e.do("POST", "/api/v1/lb/failover/trigger", map[string]any{"from_region": "a1", "to_region": "sick", "force": true}), 200, "")
	e.expect(e.do("DELETE", "/api/v1/lb/failover/a1", nil), 204, "")
	e.expect(e.do("DELETE", "/api/v1/lb/failover/b1", nil), 404, "region_not_found")

	// Status reads lb_config, lb_failover and LB_EVENTS directly.
	e.putKV(bus.BucketConfig, bus.KeyFailoverSettings, model.FailoverSettings{Enabled: false, Threshold: 0.3})
	e.putKV(bus.BucketFailover, "z1", model.Failover{FromRegion: "z1", ToRegion: "a1", Reason: model.ReasonUnhealthy, Since: since})
	e.putKV(bus.BucketFailover, "c1", model.Failover{FromRegion: "c1", ToRegion: "a1", Reason: model.ReasonFailureRate, Since: since})
	for i := range 60 {
		typ := model.EventFailoverStarted
		if i%2 == 1 {
			typ = model.EventFailoverEnded
		}
		from := fmt.Sprintf("r%d", i)
		e.publish(bus.FailoverEventsSubject(from), model.Event{Type: typ, At: since.Add(time.Duration(i) * time.Second), FromRegion: from, ToRegion: "a1", Reason: model.ReasonManual})
		e.publish(bus.HealthEventsSubject(from), model.Event{Type: model.EventHealthChanged, At: since, Region: from})
	}
	var st failoverStatusResponse
	e.expect(e.do("GET", "/api/v1/lb/failover/status", nil), 200, "").json(t, &st)
	if st.Enabled || st.Threshold != 0.3 {
		t.Fatalf("settings = %v %v", st.Enabled, st.Threshold)
	}
	if len(st.Active) != 2 || st.Active[0].FromRegion != "c1" || st.Active[1].FromRegion != "z1" {
		t.Fatalf("active = %+v", st.Active)
	}
	if len(st.Recent) != RecentFailoverEvents {
		t.Fatalf("recent has %d events", len(st.Recent))
	}
	for i, ev := range st.Recent { // newest first, failover events only
		if want := fmt.Sprintf("r%d", 59-i); ev.FromRegion != want || !strings.HasPrefix(ev.Type, "failover.") {
			t.Fatalf("recent[%d] = %+v, want from %s", i, ev, want)
		}
	}
}
