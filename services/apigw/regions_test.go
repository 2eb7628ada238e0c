package apigw

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/version"
)

func TestRegionsEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	e.startConfigMgr()

	var list struct {
		Regions []model.RegionView `json:"regions"`
	}
	r := e.expect(e.do("GET", "/api/v1/lb/regions", nil), 200, "")
	if strings.TrimSpace(string(r.body)) != `{"regions":[]}` {
		t.Fatalf("empty list = %s, want {\"regions\":[]}", r.body)
	}

	// Create: 201, Location, defaults filled in.
	r = e.expect(e.do("POST", "/api/v1/lb/regions", map[string]any{"region": "us-east", "endpoint": "http://127.0.0.1:9001"}), 201, "")
	if loc := r.header.Get("Location"); loc != "/api/v1/lb/regions/us-east" {
		t.Fatalf("Location = %q", loc)
	}
	var v model.RegionView
	r.json(t, &v)
	if v.Region != "us-east" || v.Endpoint != "http://127.0.0.1:9001" || v.Weight != 1 || v.HealthPath != "/health" ||
		v.Status != model.StatusUnknown || !v.InRotation || v.LatencyMS != nil || v.LastCheck != nil || v.FailedOverTo != nil {
		t.Fatalf("created view = %+v", v)
	}
	for _, field := range []string{`"latency_ms":null`, `"last_check":null`, `"failed_over_to":null`, `"in_rotation":true`} {
		if !strings.Contains(string(r.body), field) {
			t.Fatalf("body %s lacks %s", r.body, field)
		}
	}
	e.expect(e.do("POST", "/api/v1/lb/regions", map[string]any{"region": "ap-south", "endpoint": "http://127.0.0.1:9003", "weight": 2.5, "health_path": "/ready"}), 201, "")

	// Every 400 and the 409 of POST.
	for _, tc := range []struct {
		desc string
		body any
		code string
	}{
		{"duplicate", map[string]any{"region": "us-east", "endpoint": "http://127.0.0.1:9001"}, "region_exists"},
		{"bad name", map[string]any{"region": "US_East", "endpoint": "http://127.0.0.1:9001"}, "invalid_region"},
		{"missing name", map[string]any{"endpoint": "http://127.0.0.1:9001"}, "missing_region"},
		{"relative endpoint", map[string]any{"region": "x1", "endpoint": "/nope"}, "invalid_endpoint"},
		{"plaintext public", map[string]any{"region": "x1", "endpoint": "http://example.com"}, "plaintext_not_allowed"},
		{"weight too big", map[string]any{"region": "x1", "endpoint": "http://127.0.0.1:1", "weight": 1001}, "invalid_weight"},
		{"negative weight", map[string]any{"region": "x1", "endpoint": "http://127.0.0.1:1", "weight": -1}, "invalid_weight"},
		{"bad health path", map[string]any{"region": "x1", "endpoint": "http://127.0.0.1:1", "health_path": "health"}, "invalid_health_path"},
		{"unknown field", `{"region":"x1","endpoint":"http://127.0.0.1:1","colour":"red"}`, "invalid_json"},
		{"malformed", `{"region":"x1",`, "invalid_json"},
		{"not an object", `[1,2]`, "invalid_json"},
		{"wrong type", `{"region":"x1","endpoint":"http://127.0.0.1:1","weight":"heavy"}`, "invalid_json"},
		{"trailing data", `{"region":"x1","endpoint":"http://127.0.0.1:1"} {}`, "invalid_json"},
		{"key in the wrong case", `{"Region":"x1","endpoint":"http://127.0.0.1:1"}`, "invalid_json"},
		{"key given twice", `{"region":"x1","region":"x2","endpoint":"http://127.0.0.1:1"}`, "invalid_json"},
		{"empty body", "", "missing_body"},
	} {
		t.Run("POST "+tc.desc, func(t *testing.T) {
			want := http.StatusBadRequest
			if tc.code == "region_exists" {
				want = http.StatusConflict
			}
			e.expect(e.do("POST", "/api/v1/lb/regions", tc.body), want, tc.code)
		})
	}

	// Get one; 404 and 400 on the path.
	r = e.expect(e.do("GET", "/api/v1/lb/regions/ap-south", nil), 200, "")
	r.json(t, &v)
	if v.Weight != 2.5 || v.HealthPath != "/ready" {
		t.Fatalf("ap-south = %+v", v)
	}
	e.expect(e.do("GET", "/api/v1/lb/regions/nowhere", nil), 404, "region_not_found")
	e.expect(e.do("GET", "/api/v1/lb/regions/Bad_Name", nil), 400, "invalid_region")
	e.expect(e.do("GET", "/api/v1/lb/regions/"+strings.Repeat("a", 64), nil), 400, "invalid_region")

	// List sorted by name.
	e.expect(e.do("GET", "/api/v1/lb/regions", nil), 200, "").json(t, &list)
	if len(list.Regions) != 2 || list.Regions[0].Region != "ap-south" || list.Regions[1].Region != "us-east" {
		t.Fatalf("list = %+v", list.Regions)
	}

	// Partial update keeps what is not given.
	r = e.expect(e.do("PUT", "/api/v1/lb/regions/us-east", map[string]any{"weight": 7}), 200, "")
	r.json(t, &v)
	if v.Weight != 7 || v.Endpoint != "http://127.0.0.1:9001" {
		t.Fatalf("updated = %+v", v)
	}
	r = e.expect(e.do("PUT", "/api/v1/lb/regions/us-east", map[string]any{"endpoint": "https://us-east.example.com", "health_path": "/hz"}), 200, "")
	r.json(t, &v)
	if v.Weight != 7 || v.Endpoint != "https://us-east.example.com" || v.HealthPath != "/hz" {
		t.Fatalf("updated = %+v", v)
	}
	for _, tc := range []struct {
		desc, path string
		body       any
		status     int
		code       string
	}{
		{"unknown region", "/api/v1/lb/regions/nowhere", map[string]any{"weight": 1}, 404, "region_not_found"},
		{"bad path name", "/api/v1/lb/regions/NO", map[string]any{"weight": 1}, 400, "invalid_region"},
		{"bad weight", "/api/v1/lb/regions/us-east", map[string]any{"weight": 1e9}, 400, "invalid_weight"},
		{"bad endpoint", "/api/v1/lb/regions/us-east", map[string]any{"endpoint": "ftp://x"}, 400, "invalid_endpoint"},
		{"unknown field", "/api/v1/lb/regions/us-east", `{"wieght":3}`, 400, "invalid_json"},
		{"malformed", "/api/v1/lb/regions/us-east", `{"weight":`, 400, "invalid_json"},
		{"region mismatch", "/api/v1/lb/regions/us-east", map[string]any{"region": "eu-west", "weight": 1}, 400, "region_mismatch"},
		{"empty body", "/api/v1/lb/regions/us-east", "", 400, "missing_body"},
		{"nothing to update", "/api/v1/lb/regions/us-east", `{}`, 400, "empty_update"},
	} {
		t.Run("PUT "+tc.desc, func(t *testing.T) {
			e.expect(e.do("PUT", tc.path, tc.body), tc.status, tc.code)
		})
	}

	// The view joins lb_health and lb_failover.
	checked := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	e.putKV(bus.BucketHealth, "ap-south", model.Health{Region: "ap-south", Status: model.StatusUnhealthy, LatencyMS: 42,
		Last: &model.CheckResult{Region: "ap-south", CheckedAt: checked}})
	e.putKV(bus.BucketFailover, "us-east", model.Failover{FromRegion: "us-east", ToRegion: "ap-south", Reason: model.ReasonManual, Since: checked})
	r = e.expect(e.do("GET", "/api/v1/lb/regions/ap-south", nil), 200, "")
	r.json(t, &v)
	if v.Status != model.StatusUnhealthy || v.InRotation || v.LatencyMS == nil || *v.LatencyMS != 42 || v.LastCheck == nil || !v.LastCheck.Equal(checked) {
		t.Fatalf("joined view = %+v", v)
	}
	e.expect(e.do("GET", "/api/v1/lb/regions", nil), 200, "").json(t, &list)
	if us := list.Regions[1]; us.FailedOverTo == nil || *us.FailedOverTo != "ap-south" || us.InRotation {
		t.Fatalf("failed-over view = %+v", us)
	}
	r = e.expect(e.do("PUT", "/api/v1/lb/regions/ap-south", map[string]any{"weight": 3}), 200, "")
	r.json(t, &v)
	if v.Status != model.StatusUnhealthy {
		t.Fatalf("view after update lost health: %+v", v)
	}

	// Delete: 204, then 404 for reads and deletes.
	r = e.expect(e.do("DELETE", "/api/v1/lb/regions/ap-south", nil), 204, "")
	if len(r.body) != 0 {
		t.Fatalf("204 with body %q", r.body)
	}
	e.expect(e.do("GET", "/api/v1/lb/regions/ap-south", nil), 404, "region_not_found")
	e.expect(e.do("DELETE", "/api/v1/lb/regions/ap-south", nil), 404, "region_not_found")
	e.expect(e.do("DELETE", "/api/v1/lb/regions/BAD", nil), 400, "invalid_region")
}

func TestStrategyEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	e.startConfigMgr()

	var sc model.StrategyConfig
	r := e.expect(e.do("PUT", "/api/v1/lb/strategy", map[string]any{"strategy": "weighted"}), 200, "")
	r.json(t, &sc)
	if sc.Strategy != model.StrategyWeighted || string(sc.Parameters) != "{}" {
		t.Fatalf("strategy = %+v (%s)", sc, r.body)
	}
	r = e.expect(e.do("PUT", "/api/v1/lb/strategy", `{"strategy":"least_latency","parameters":{"exploration":0.1}}`), 200, "")
	r.json(t, &sc)
	var params model.LeastLatencyParams
	if err := json.Unmarshal(sc.Parameters, &params); err != nil || params.ExplorationOrDefault() != 0.1 {
		t.Fatalf("parameters = %s", sc.Parameters)
	}
	var st statusResponse
	e.expect(e.do("GET", "/api/v1/lb/status", nil), 200, "").json(t, &st)
	if st.Strategy != model.StrategyLeastLatency || !strings.Contains(string(st.Parameters), "0.1") {
		t.Fatalf("status after set = %+v", st)
	}

	for _, tc := range []struct {
		desc string
		body any
		code string
	}{
		{"unknown strategy", map[string]any{"strategy": "random"}, "invalid_strategy"},
		{"missing strategy", map[string]any{}, "missing_strategy"},
		{"bad parameters", `{"strategy":"least_latency","parameters":{"exploration":0.9}}`, "invalid_parameters"},
		{"parameters not object", `{"strategy":"weighted","parameters":[1]}`, "invalid_parameters"},
		{"params for round_robin", `{"strategy":"round_robin","parameters":{"x":1}}`, "invalid_parameters"},
		{"parameter in the wrong case", `{"strategy":"least_latency","parameters":{"Exploration":0.1}}`, "invalid_parameters"},
		{"unknown field", `{"strategy":"weighted","mode":"fast"}`, "invalid_json"},
		{"malformed", `strategy=weighted`, "invalid_json"},
		{"empty body", "", "missing_body"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			e.expect(e.do("PUT", "/api/v1/lb/strategy", tc.body), 400, tc.code)
		})
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t, nil)

	// Nothing written yet: the documented defaults, routers [] not null.
	r := e.expect(e.do("GET", "/api/v1/lb/status", nil), 200, "")
	var raw map[string]json.RawMessage
	r.json(t, &raw)
	for _, k := range []string{"strategy", "parameters", "failover_enabled", "regions", "routers", "version"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("status %s lacks %q", r.body, k)
		}
	}
	if string(raw["routers"]) != "[]" || string(raw["parameters"]) != "{}" || string(raw["strategy"]) != `"round_robin"` ||
		string(raw["failover_enabled"]) != "true" || string(raw["version"]) != `"`+version.Version+`"` ||
		string(raw["regions"]) != `{"total":0,"healthy":0,"in_rotation":0}` {
		t.Fatalf("default status = %s", r.body)
	}

	// Counts join registry, health and failover; routers come from lb_routers.
	for _, name := range []string{"a", "b", "c", "d"} {
		e.putKV(bus.BucketRegions, name, model.Region{Region: name, Endpoint: "http://127.0.0.1:1", Weight: 1})
	}
	e.putKV(bus.BucketHealth, "a", model.Health{Region: "a", Status: model.StatusHealthy})
	e.putKV(bus.BucketHealth, "b", model.Health{Region: "b", Status: model.StatusHealthy})
	e.putKV(bus.BucketHealth, "c", model.Health{Region: "c", Status: model.StatusUnhealthy})
	e.putKV(bus.BucketFailover, "b", model.Failover{FromRegion: "b", ToRegion: "a", Reason: model.ReasonManual})
	e.putKV(bus.BucketConfig, bus.KeyStrategy, model.StrategyConfig{Strategy: model.StrategyWeighted, Parameters: json.RawMessage("{}")})
	e.putKV(bus.BucketConfig, bus.KeyFailoverSettings, model.FailoverSettings{Enabled: false, Threshold: 0.3})
	e.putKV(bus.BucketRouters, "r2", model.RouterInfo{ID: "r2", Address: ":8000"})
	e.putKV(bus.BucketRouters, "r1", model.RouterInfo{ID: "r1", Address: ":8001"})

	var st statusResponse
	e.expect(e.do("GET", "/api/v1/lb/status", nil), 200, "").json(t, &st)
	// a healthy, b healthy but failed over, c unhealthy, d unknown.
	if st.Regions != (regionCounts{Total: 4, Healthy: 2, InRotation: 2}) {
		t.Fatalf("counts = %+v", st.Regions)
	}
	if st.Strategy != model.StrategyWeighted || st.FailoverEnabled {
		t.Fatalf("status = %+v", st)
	}
	if len(st.Routers) != 2 || st.Routers[0].ID != "r1" || st.Routers[1].ID != "r2" {
		t.Fatalf("routers = %+v", st.Routers)
	}
}

// GET /certificates merges the routers' HTTPS certificates: one row per
// certificate however many routers serve it, an empty list without any.
func TestCertificates(t *testing.T) {
	e := newEnv(t, nil)
	r := e.expect(e.do("GET", "/api/v1/lb/certificates", nil), 200, "")
	if strings.TrimSpace(string(r.body)) != `{"certificates":[]}` {
		t.Fatalf("no routers: %s", r.body)
	}
	exp := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	shop := model.CertInfo{Names: []string{"shop.example", "www.shop.example"}, Issuer: "R11", NotAfter: exp, Source: "acme"}
	api := model.CertInfo{Names: []string{"api.example"}, Issuer: "corp CA", NotAfter: exp, Source: "file"}
	e.putKV(bus.BucketRouters, "r1", model.RouterInfo{ID: "r1", Certificates: []model.CertInfo{shop, api}})
	e.putKV(bus.BucketRouters, "r2", model.RouterInfo{ID: "r2", Certificates: []model.CertInfo{shop}})
	e.putKV(bus.BucketRouters, "r3", model.RouterInfo{ID: "r3"})
	var got struct {
		Certificates []model.CertInfo `json:"certificates"`
	}
	e.expect(e.do("GET", "/api/v1/lb/certificates", nil), 200, "").json(t, &got)
	if len(got.Certificates) != 2 || got.Certificates[0].Names[0] != "api.example" || got.Certificates[1].Source != "acme" ||
		!got.Certificates[1].NotAfter.Equal(exp) {
		t.Fatalf("certificates = %+v", got.Certificates)
	}
}
