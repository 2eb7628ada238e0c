package state

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

func result(ok bool, latency float64) model.CheckResult {
	r := model.CheckResult{Region: "r", Healthy: ok, StatusCode: 200, LatencyMS: latency, CheckedAt: time.Unix(100, 0)}
	if !ok {
		r.StatusCode = 503
		r.Error = "unexpected status 503"
	}
	return r
}

func TestApplySequences(t *testing.T) {
	t.Parallel()
	th := Thresholds{Fall: 3, Rise: 2}
	healthy := model.Health{Status: model.StatusHealthy}
	unhealthy := model.Health{Status: model.StatusUnhealthy}
	tests := []struct {
		desc  string
		th    Thresholds
		start model.Health
		seq   []bool
		// want is the status after each result; a change of status must
		// come with a transition and no other result may have one.
		want []string
	}{
		{desc: "unknown start, first success decides", th: th, start: model.Health{},
			seq: []bool{true, true}, want: []string{"healthy", "healthy"}},
		{desc: "unknown start, unhealthy only after the failure threshold", th: th, start: model.Health{},
			seq: []bool{false, false, false, true, true}, want: []string{"unknown", "unknown", "unhealthy", "unhealthy", "healthy"}},
		{desc: "unknown start, a success after failures confirms it", th: th, start: model.Health{},
			seq: []bool{false, false, true}, want: []string{"unknown", "unknown", "healthy"}},
		{desc: "explicit unknown status behaves like zero", th: th, start: model.Health{Status: model.StatusUnknown},
			seq: []bool{true}, want: []string{"healthy"}},
		{desc: "fall after exactly the threshold", th: th, start: healthy,
			seq: []bool{false, false, false, false}, want: []string{"healthy", "healthy", "unhealthy", "unhealthy"}},
		{desc: "success resets the failure count", th: th, start: healthy,
			seq:  []bool{false, false, true, false, false, false},
			want: []string{"healthy", "healthy", "healthy", "healthy", "healthy", "unhealthy"}},
		{desc: "rise after exactly the threshold", th: th, start: unhealthy,
			seq: []bool{true, true, true}, want: []string{"unhealthy", "healthy", "healthy"}},
		{desc: "failure resets the success count", th: th, start: unhealthy,
			seq: []bool{true, false, true, true}, want: []string{"unhealthy", "unhealthy", "unhealthy", "healthy"}},
		{desc: "threshold one flips at once", th: Thresholds{Fall: 1, Rise: 1}, start: healthy,
			seq: []bool{false, true, false}, want: []string{"unhealthy", "healthy", "unhealthy"}},
		{desc: "zero thresholds act as one", th: Thresholds{}, start: healthy,
			seq: []bool{false, true}, want: []string{"unhealthy", "healthy"}},
		{desc: "full cycle", th: th, start: model.Health{},
			seq:  []bool{true, false, false, false, true, true},
			want: []string{"healthy", "healthy", "healthy", "unhealthy", "unhealthy", "healthy"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := tc.start
			prevStatus := h.Status
			if prevStatus == "" {
				prevStatus = model.StatusUnknown
			}
			for i, ok := range tc.seq {
				next, tr := Apply(h, result(ok, 10), tc.th)
				if next.Status != tc.want[i] {
					t.Fatalf("after result %d (%v): status %s, want %s", i, ok, next.Status, tc.want[i])
				}
				changed := next.Status != prevStatus
				if changed != (tr != nil) {
					t.Fatalf("after result %d: changed=%v but transition=%+v", i, changed, tr)
				}
				if tr != nil && (tr.From != prevStatus || tr.To != next.Status || tr.Reason == "") {
					t.Fatalf("after result %d: transition %+v, want %s→%s with a reason", i, tr, prevStatus, next.Status)
				}
				if ok && (next.ConsecutiveFailures != 0 || next.ConsecutiveSuccesses < 1) ||
					!ok && (next.ConsecutiveSuccesses != 0 || next.ConsecutiveFailures < 1) {
					t.Fatalf("after result %d: counters %d/%d", i, next.ConsecutiveSuccesses, next.ConsecutiveFailures)
				}
				prevStatus = next.Status
				h = next
			}
		})
	}
}

func TestApplyReasons(t *testing.T) {
	t.Parallel()
	_, tr := Apply(model.Health{ConsecutiveFailures: 2}, result(false, 0), Thresholds{3, 2})
	if tr == nil || tr.To != model.StatusUnhealthy || tr.Reason != "3 consecutive failed checks: unexpected status 503" {
		t.Fatalf("transition %+v", tr)
	}
	h := model.Health{Status: model.StatusHealthy, ConsecutiveFailures: 2}
	r := model.CheckResult{Region: "r", Error: "timeout after 5s"}
	_, tr = Apply(h, r, Thresholds{3, 2})
	if tr == nil || tr.Reason != "3 consecutive failed checks: timeout after 5s" {
		t.Fatalf("transition %+v", tr)
	}
}

func TestWindowKeepsLastTenOldestFirst(t *testing.T) {
	t.Parallel()
	var h model.Health
	var want []bool
	for i := range 13 {
		ok := i%3 != 0
		h, _ = Apply(h, result(ok, 1), Thresholds{3, 2})
		want = append(want, ok)
		if len(want) > WindowSize {
			want = want[1:]
		}
		if !slices.Equal(h.Window, want) {
			t.Fatalf("after %d results window %v, want %v", i+1, h.Window, want)
		}
	}
	if got := h.FailureRate(); math.Abs(got-0.4) > 1e-9 { // failures at results 3, 6, 9 and 12
		t.Fatalf("failure rate %v, want 0.4", got)
	}
}

func TestApplyDoesNotShareMemory(t *testing.T) {
	t.Parallel()
	prev := model.Health{Status: model.StatusHealthy, Window: make([]bool, 3, 20)}
	next, _ := Apply(prev, result(false, 1), Thresholds{3, 2})
	next.Window[0] = true
	if prev.Window[0] {
		t.Fatal("next shares its window with prev")
	}
	if len(prev.Window) != 3 {
		t.Fatal("prev was modified")
	}
	next.Last.Healthy = true
	if next2, _ := Apply(next, result(false, 1), Thresholds{3, 2}); next2.Last == next.Last {
		t.Fatal("last result shared")
	}
}

func TestLatencyEWMA(t *testing.T) {
	t.Parallel()
	th := Thresholds{3, 2}
	h, _ := Apply(model.Health{}, result(true, 100), th)
	if h.LatencyMS != 100 {
		t.Fatalf("first sample: %v", h.LatencyMS)
	}
	h, _ = Apply(h, result(true, 200), th)
	if want := 0.3*200 + 0.7*100; math.Abs(h.LatencyMS-want) > 1e-9 {
		t.Fatalf("ewma %v, want %v", h.LatencyMS, want)
	}
	before := h.LatencyMS
	h, _ = Apply(h, model.CheckResult{Region: "r", Error: "timeout after 5s"}, th)
	if h.LatencyMS != before {
		t.Fatalf("a timeout changed the latency estimate: %v", h.LatencyMS)
	}
	if h.Last == nil || h.Last.Error == "" || h.Region != "r" {
		t.Fatalf("last result not kept: %+v", h)
	}
}
