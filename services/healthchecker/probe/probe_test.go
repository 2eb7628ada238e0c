package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/prefix/health", "/custom":
			w.WriteHeader(http.StatusOK)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	p := New(nil, "/health", 300*time.Millisecond, time.Minute)
	t.Cleanup(p.Close)

	tests := []struct {
		desc    string
		region  model.Region
		healthy bool
		status  int
		outcome string
	}{
		{"endpoint path is a prefix", model.Region{Endpoint: srv.URL + "/prefix/"}, true, 200, OutcomeOK},
		{"per-region health path", model.Region{Endpoint: srv.URL, HealthPath: "/custom"}, true, 200, OutcomeOK},
		{"5xx fails", model.Region{Endpoint: srv.URL}, false, 503, OutcomeBadStatus},
		{"expected status narrows", model.Region{Endpoint: srv.URL, HealthPath: "/custom", ExpectedStatus: &model.StatusRange{Min: 204, Max: 204}}, false, 200, OutcomeBadStatus},
		{"expected status widens", model.Region{Endpoint: srv.URL, HealthPath: "/teapot", ExpectedStatus: &model.StatusRange{Min: 200, Max: 499}}, true, 418, OutcomeOK},
		{"redirect is not followed", model.Region{Endpoint: srv.URL, HealthPath: "/redirect"}, false, 302, OutcomeBadStatus},
		{"timeout", model.Region{Endpoint: srv.URL, HealthPath: "/slow"}, false, 0, OutcomeTimeout},
		{"connection refused", model.Region{Endpoint: "http://127.0.0.1:1"}, false, 0, OutcomeError},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tc.region.Region = "r"
			res := p.Check(context.Background(), tc.region)
			if res.Healthy != tc.healthy || res.StatusCode != tc.status || Outcome(res) != tc.outcome {
				t.Fatalf("got %+v (outcome %s), want healthy=%v status=%d outcome=%s", res, Outcome(res), tc.healthy, tc.status, tc.outcome)
			}
			if res.Region != "r" || res.CheckedAt.IsZero() {
				t.Fatalf("result not labelled: %+v", res)
			}
			if !res.Healthy && res.Error == "" {
				t.Fatal("failed check without an error")
			}
			if res.StatusCode > 0 && res.LatencyMS <= 0 {
				t.Fatalf("no latency: %+v", res)
			}
			if strings.Contains(res.Error, srv.URL) {
				t.Fatalf("error repeats the URL: %q", res.Error)
			}
		})
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	if got := URL(model.Region{Endpoint: "https://a.example/api/"}, "/health"); got != "https://a.example/api/health" {
		t.Fatal(got)
	}
	if got := URL(model.Region{Endpoint: "https://a.example", HealthPath: "/ready"}, "/health"); got != "https://a.example/ready" {
		t.Fatal(got)
	}
}
