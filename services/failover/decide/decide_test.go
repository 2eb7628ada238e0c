package decide_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mrlb/mrlb/services/failover/decide"
	"github.com/mrlb/mrlb/services/healthchecker/state"
	"github.com/mrlb/mrlb/shared/model"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var on = decide.Policy{Enabled: true, Threshold: 0.5, FailbackDelay: 10 * time.Second}

// hl builds a health document; window is a string of '+' (passed) and '-'
// (failed), oldest first.
func hl(status string, latency float64, window string) *model.Health {
	h := &model.Health{Status: status, LatencyMS: latency}
	for _, c := range window {
		h.Window = append(h.Window, c == '+')
	}
	return h
}

func healthy(latency float64) *model.Health {
	return hl(model.StatusHealthy, latency, "++++++++++")
}

func sick() *model.Health { return hl(model.StatusUnhealthy, 0, "+++++++---") }

func fo(from, to, reason string) decide.Record {
	return decide.Record{Failover: model.Failover{FromRegion: from, ToRegion: to, Reason: reason, Since: t0.Add(-time.Hour)}}
}

func at(d time.Duration) *time.Time {
	x := t0.Add(d)
	return &x
}

// describe renders changes compactly so that tables read like a log.
func describe(cs []decide.Change) string {
	var out []string
	for _, c := range cs {
		switch c.Kind {
		case decide.Start:
			out = append(out, fmt.Sprintf("start %s->%s (%s)", c.Region, c.After.ToRegion, c.After.Reason))
		case decide.Retarget:
			out = append(out, fmt.Sprintf("retarget %s: %s->%s (%s)", c.Region, c.Before.ToRegion, c.After.ToRegion, c.After.Reason))
		case decide.End:
			out = append(out, fmt.Sprintf("end %s (%s)", c.Region, c.Why))
		case decide.Clock:
			if c.After.HealthySince != nil {
				out = append(out, fmt.Sprintf("clock %s set", c.Region))
			} else {
				out = append(out, fmt.Sprintf("clock %s clear", c.Region))
			}
		}
	}
	return strings.Join(out, "; ")
}

// apply returns the failovers after the changes, as the service would
// leave them in KV.
func apply(fs map[string]decide.Record, cs []decide.Change) map[string]decide.Record {
	next := map[string]decide.Record{}
	for k, v := range fs {
		next[k] = v
	}
	for _, c := range cs {
		if c.Kind == decide.End {
			delete(next, c.Region)
		} else {
			next[c.Region] = *c.After
		}
	}
	return next
}

func TestDecide(t *testing.T) {
	t.Parallel()
	type regions = map[string]*model.Health
	type fos = map[string]decide.Record
	off := on
	off.Enabled = false
	tests := []struct {
		desc      string
		policy    decide.Policy
		regions   regions
		failovers fos
		want      string
	}{
		// Nothing to do.
		{"all healthy", on, regions{"a": healthy(10), "b": healthy(20)}, nil, ""},
		{"never checked is not a trigger", on, regions{"a": nil, "b": hl(model.StatusUnknown, 0, "")}, nil, ""},
		{"no regions", on, nil, nil, ""},

		// Unhealthy.
		{"unhealthy fails over to the fastest", on, regions{"a": sick(), "b": healthy(20), "c": healthy(10)}, nil, "start a->c (unhealthy)"},
		{"unhealthy wins over failure rate", on, regions{"a": hl(model.StatusUnhealthy, 5, "----------"), "b": healthy(1)}, nil, "start a->b (unhealthy)"},
		{"two regions fail at once, neither is the other's target", on, regions{"a": sick(), "b": sick(), "c": healthy(50)}, nil, "start a->c (unhealthy); start b->c (unhealthy)"},
		{"no region qualifies: empty target", on, regions{"a": sick(), "b": sick()}, nil, "start a-> (unhealthy); start b-> (unhealthy)"},
		{"already failed over: nothing new", on, regions{"a": sick(), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonUnhealthy)}, ""},

		// Failure rate.
		{"flapping at the threshold", on, regions{"a": hl(model.StatusHealthy, 5, "+-+-+-+-+-"), "b": healthy(1)}, nil, "start a->b (failure_rate)"},
		{"flapping under the threshold", on, regions{"a": hl(model.StatusHealthy, 5, "++-+-+-+-+"), "b": healthy(1)}, nil, ""},
		{"threshold 1 needs every check failed", decide.Policy{Enabled: true, Threshold: 1}, regions{"a": hl(model.StatusHealthy, 5, "-+--------"), "b": healthy(1)}, nil, ""},
		{"short window counts missing checks as passed", on, regions{"a": hl(model.StatusHealthy, 5, "+-"), "b": healthy(1)}, nil, ""},
		{"short window with enough failures", on, regions{"a": hl(model.StatusHealthy, 5, "+-+-+-+--"), "b": healthy(1)}, nil, "start a->b (failure_rate)"},

		// Target choice.
		{"latency tie broken by name", on, regions{"a": sick(), "c": healthy(10), "b": healthy(10)}, nil, "start a->b (unhealthy)"},
		{"target must be known healthy", on, regions{"a": sick(), "b": nil, "c": hl(model.StatusUnknown, 1, ""), "d": healthy(90)}, nil, "start a->d (unhealthy)"},
		{"flapping region is no target", decide.Policy{Enabled: false, Threshold: 0.5}, regions{"a": hl(model.StatusHealthy, 1, "-+-+-+-+-+"), "b": healthy(90), "x": healthy(5)},
			fos{"x": fo("x", "", model.ReasonManual)}, "retarget x: ->b (manual)"},
		{"failed-over region is no target", on, regions{"a": sick(), "b": healthy(1), "c": healthy(50), "d": healthy(70)}, fos{"b": fo("b", "d", model.ReasonManual)}, "start a->c (unhealthy)"},

		// Re-targeting.
		{"target fails: started elsewhere, pointer re-targeted, reason kept", on,
			regions{"a": healthy(1), "b": sick(), "c": healthy(30), "d": healthy(20)},
			fos{"a": fo("a", "b", model.ReasonManual)},
			"start b->d (unhealthy); retarget a: b->d (manual)"},
		{"every failover pointing at it moves", on,
			regions{"a": sick(), "e": sick(), "b": sick(), "c": healthy(30)},
			fos{"a": fo("a", "b", model.ReasonUnhealthy), "e": fo("e", "b", model.ReasonFailureRate)},
			"start b->c (unhealthy); retarget a: b->c (unhealthy); retarget e: b->c (failure_rate)"},
		{"target failed over manually, even with automatic failover off", off,
			regions{"a": sick(), "b": healthy(1), "c": healthy(2)},
			fos{"a": fo("a", "b", model.ReasonUnhealthy), "b": fo("b", "c", model.ReasonManual)},
			"retarget a: b->c (unhealthy)"},
		{"unhealthy target is kept when automatic failover is off", off,
			regions{"a": healthy(1), "b": sick(), "c": healthy(2)},
			fos{"a": fo("a", "b", model.ReasonManual)}, ""},
		{"target removed from the registry", on,
			regions{"a": sick(), "c": healthy(2)},
			fos{"a": fo("a", "b", model.ReasonUnhealthy)}, "retarget a: b->c (unhealthy)"},
		{"empty target filled when a region qualifies", on,
			regions{"a": sick(), "c": healthy(2)},
			fos{"a": fo("a", "", model.ReasonUnhealthy)}, "retarget a: ->c (unhealthy)"},
		{"empty target stays empty when none qualifies", on,
			regions{"a": sick(), "c": sick()},
			fos{"a": fo("a", "", model.ReasonUnhealthy), "c": fo("c", "", model.ReasonUnhealthy)}, ""},

		// No cycles.
		{"a->b and b fails: b never goes back to a", on,
			regions{"a": sick(), "b": sick(), "c": healthy(99)},
			fos{"a": fo("a", "b", model.ReasonUnhealthy)},
			"start b->c (unhealthy); retarget a: b->c (unhealthy)"},
		{"two regions, both down: no cycle, empty targets", on,
			regions{"a": sick(), "b": sick()},
			fos{"a": fo("a", "b", model.ReasonUnhealthy)},
			"start b-> (unhealthy); retarget a: b-> (unhealthy)"},
		{"existing cycle (written by hand) is broken", on,
			regions{"a": healthy(5), "b": healthy(6), "c": healthy(7)},
			fos{"a": fo("a", "b", model.ReasonManual), "b": fo("b", "a", model.ReasonManual)},
			"retarget a: b->c (manual); retarget b: a->c (manual)"},

		// Disabled automatic failover.
		{"disabled: unhealthy is left alone", off, regions{"a": sick(), "b": healthy(1)}, nil, ""},
		{"disabled: flapping is left alone", off, regions{"a": hl(model.StatusHealthy, 1, "----------"), "b": healthy(1)}, nil, ""},
		{"disabled: automatic failovers still fail back", decide.Policy{Threshold: 0.5},
			regions{"a": healthy(1), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonUnhealthy)}, "end a (failback)"},

		// Ends.
		{"removed region's failover ends", on, regions{"b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonManual)}, "end a (region_removed)"},
		{"manual never fails back", on, regions{"a": healthy(1), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonManual)}, ""},
		{"failback delay 0 ends at once", decide.Policy{Enabled: true, Threshold: 0.5},
			regions{"a": healthy(1), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonFailureRate)}, "end a (failback)"},
		{"healthy again starts the clock", on,
			regions{"a": healthy(1), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonUnhealthy)}, "clock a set"},
		{"healthy but still flapping is not good", on,
			regions{"a": hl(model.StatusHealthy, 1, "+-+-+-+-+-"), "b": healthy(1)}, fos{"a": fo("a", "b", model.ReasonFailureRate)}, ""},
		{"ended region's successor failovers re-target to it", decide.Policy{Enabled: true, Threshold: 0.5},
			regions{"a": healthy(1), "b": sick()},
			fos{"a": fo("a", "", model.ReasonUnhealthy), "b": fo("b", "", model.ReasonUnhealthy)},
			"end a (failback); retarget b: ->a (unhealthy)"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			p := tc.policy
			s := decide.State{Now: t0, Regions: tc.regions, Failovers: tc.failovers}
			got := decide.Decide(p, s)
			if d := describe(got); d != tc.want {
				t.Fatalf("got  %q\nwant %q", d, tc.want)
			}
			// Deciding again on the result changes nothing: decisions are
			// stable, so a new leader does not redo them.
			s.Failovers = apply(tc.failovers, got)
			if again := describe(decide.Decide(p, s)); again != "" && !strings.HasPrefix(again, "start") {
				t.Fatalf("second pass not stable: %q", again)
			}
			for _, c := range got {
				if c.Kind == decide.Start && !c.After.Since.Equal(t0) {
					t.Fatalf("start since %v, want now", c.After.Since)
				}
				if c.Kind == decide.Retarget && !c.After.Since.Equal(c.Before.Since) {
					t.Fatalf("retarget changed since")
				}
			}
		})
	}
}

func TestFailbackTimingAndRelapse(t *testing.T) {
	t.Parallel()
	const delay = 10 * time.Second
	p := decide.Policy{Enabled: true, Threshold: 0.5, FailbackDelay: delay}
	regions := map[string]*model.Health{"a": sick(), "b": healthy(1)}
	fs := map[string]decide.Record{}
	step := func(now time.Duration, want string) {
		t.Helper()
		cs := decide.Decide(p, decide.State{Now: t0.Add(now), Regions: regions, Failovers: fs})
		if got := describe(cs); got != want {
			t.Fatalf("at %v: got %q, want %q", now, got, want)
		}
		fs = apply(fs, cs)
	}
	step(0, "start a->b (unhealthy)")
	step(time.Second, "")
	regions["a"] = healthy(1)
	step(2*time.Second, "clock a set")
	if got := *fs["a"].HealthySince; !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("clock started at %v", got)
	}
	step(6*time.Second, "")
	// Relapse: the clock stops...
	regions["a"] = hl(model.StatusHealthy, 1, "+++++-----")
	step(7*time.Second, "clock a clear")
	step(20*time.Second, "")
	// ...and restarts from zero when good again.
	regions["a"] = healthy(1)
	step(21*time.Second, "clock a set")
	step(21*time.Second+delay-time.Millisecond, "")
	step(21*time.Second+delay, "end a (failback)")
	step(40*time.Second, "")

	// A clock started by a previous leader is honoured.
	fs = map[string]decide.Record{"a": fo("a", "b", model.ReasonUnhealthy)}
	r := fs["a"]
	r.HealthySince = at(-delay)
	fs["a"] = r
	step(0, "end a (failback)")
}

func TestManualTTL(t *testing.T) {
	t.Parallel()
	regions := map[string]*model.Health{"a": healthy(1), "b": healthy(2)}
	m := decide.Manual(nil, "a", "b", 30*time.Minute, t0)
	if m.ExpiresAt == nil || !m.ExpiresAt.Equal(t0.Add(30*time.Minute)) || m.Reason != model.ReasonManual || !m.Since.Equal(t0) {
		t.Fatalf("manual = %+v", m)
	}
	fs := map[string]decide.Record{"a": m}
	for _, tc := range []struct {
		now  time.Duration
		want string
	}{
		{0, ""},
		{29 * time.Minute, ""},
		{30*time.Minute - time.Nanosecond, ""},
		{30 * time.Minute, "end a (expired)"},
		{time.Hour, "end a (expired)"},
	} {
		if got := describe(decide.Decide(on, decide.State{Now: t0.Add(tc.now), Regions: regions, Failovers: fs})); got != tc.want {
			t.Fatalf("at %v: got %q, want %q", tc.now, got, tc.want)
		}
	}
	// Without a TTL it never ends by itself.
	fs["a"] = decide.Manual(nil, "a", "b", 0, t0)
	if got := describe(decide.Decide(on, decide.State{Now: t0.Add(1000 * time.Hour), Regions: regions, Failovers: fs})); got != "" {
		t.Fatalf("no ttl: %q", got)
	}
	// An expired override of a sick region hands over to automatic failover.
	regions["a"] = sick()
	fs["a"] = m
	cs := decide.Decide(on, decide.State{Now: t0.Add(time.Hour), Regions: regions, Failovers: fs})
	if got := describe(cs); got != "end a (expired)" {
		t.Fatalf("got %q", got)
	}
	fs = apply(fs, cs)
	if got := describe(decide.Decide(on, decide.State{Now: t0.Add(time.Hour), Regions: regions, Failovers: fs})); got != "start a->b (unhealthy)" {
		t.Fatalf("got %q", got)
	}
	// Re-triggering the same override keeps its since and refreshes the TTL.
	again := decide.Manual(&m, "a", "b", time.Hour, t0.Add(time.Minute))
	if !again.Since.Equal(t0) || !again.ExpiresAt.Equal(t0.Add(time.Minute+time.Hour)) {
		t.Fatalf("again = %+v", again)
	}
	if decide.Announced(&m, &again) {
		t.Fatal("a TTL refresh is not announced")
	}
	other := decide.Manual(&m, "a", "c", 0, t0.Add(time.Minute))
	if !other.Since.Equal(t0.Add(time.Minute)) || other.ExpiresAt != nil || !decide.Announced(&m, &other) {
		t.Fatalf("other = %+v", other)
	}
}

// TestFlappingWithRealHealthStates drives the health checker's own state
// machine with an alternating pattern: the region never fails three checks
// in a row, so it stays healthy, yet it is failed over for its failure rate
// as soon as half of the last ten checks failed.
func TestFlappingWithRealHealthStates(t *testing.T) {
	t.Parallel()
	th := state.Thresholds{Fall: 3, Rise: 2}
	var h model.Health
	regions := map[string]*model.Health{"b": healthy(1)}
	started := -1
	for i := range 30 {
		r := model.CheckResult{Region: "a", Healthy: i%2 == 0, StatusCode: 200, LatencyMS: 5, CheckedAt: t0.Add(time.Duration(i) * time.Second)}
		if !r.Healthy {
			r.StatusCode = 503
		}
		h, _ = state.Apply(h, r, th)
		if h.Status == model.StatusUnhealthy {
			t.Fatalf("check %d: a flapping region must not turn unhealthy", i)
		}
		hc := h
		regions["a"] = &hc
		cs := decide.Decide(on, decide.State{Now: r.CheckedAt, Regions: regions})
		if len(cs) > 0 {
			if got := describe(cs); got != "start a->b (failure_rate)" {
				t.Fatalf("check %d: %q", i, got)
			}
			started = i
			break
		}
	}
	// Checks 0..9: five failures of ten, the first time the rate reaches 0.5.
	if started != 9 {
		t.Fatalf("failed over at check %d, want 9", started)
	}
}

// TestInvariants runs Decide on random states: whatever the input, the
// result has no self-targets, no chains and no cycles, and deciding again
// at the same instant changes nothing but the hand-over of expired manual
// failovers of sick regions (a start, and re-targets away from it).
func TestInvariants(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "c", "d", "e"}
	reasons := []string{model.ReasonManual, model.ReasonUnhealthy, model.ReasonFailureRate}
	for iter := range 5000 {
		regions := map[string]*model.Health{}
		for _, n := range names {
			switch rng.IntN(5) {
			case 0: // not registered
			case 1:
				regions[n] = nil
			case 2:
				regions[n] = sick()
			case 3:
				regions[n] = hl(model.StatusHealthy, float64(rng.IntN(3)), "+-+-+-+-+-")
			default:
				regions[n] = healthy(float64(rng.IntN(3)))
			}
		}
		fs := map[string]decide.Record{}
		for _, n := range names {
			if rng.IntN(2) == 0 {
				to := names[rng.IntN(len(names))]
				if rng.IntN(5) == 0 {
					to = ""
				}
				r := fo(n, to, reasons[rng.IntN(len(reasons))])
				if rng.IntN(3) == 0 {
					r.HealthySince = at(-time.Duration(rng.IntN(20)) * time.Second)
				}
				if rng.IntN(3) == 0 {
					r.ExpiresAt = at(time.Duration(rng.IntN(3)-1) * time.Second)
				}
				fs[n] = r
			}
		}
		p := decide.Policy{Enabled: rng.IntN(2) == 0, Threshold: 0.5, FailbackDelay: 10 * time.Second}
		s := decide.State{Now: t0, Regions: regions, Failovers: fs}
		next := apply(fs, decide.Decide(p, s))
		for from, f := range next {
			if f.FromRegion != from {
				t.Fatalf("iter %d: key %s holds %s", iter, from, f.FromRegion)
			}
			if f.ToRegion == "" {
				continue
			}
			if f.ToRegion == from {
				t.Fatalf("iter %d: %s targets itself", iter, from)
			}
			if _, ok := regions[f.ToRegion]; !ok {
				t.Fatalf("iter %d: %s targets unregistered %s", iter, from, f.ToRegion)
			}
			if _, chained := next[f.ToRegion]; chained {
				t.Fatalf("iter %d: chain %s->%s->%s in %v (from %v)", iter, from, f.ToRegion, next[f.ToRegion].ToRegion, next, fs)
			}
		}
		s.Failovers = next
		second := decide.Decide(p, s)
		started := map[string]bool{}
		for _, c := range second {
			if c.Kind == decide.Start {
				started[c.Region] = true
			}
		}
		for _, c := range second {
			if c.Kind != decide.Start && (c.Kind != decide.Retarget || !started[c.Before.ToRegion]) {
				t.Fatalf("iter %d: unstable: %s", iter, describe(second))
			}
		}
	}
}

func TestCheckTrigger(t *testing.T) {
	t.Parallel()
	s := decide.State{
		Now: t0,
		Regions: map[string]*model.Health{
			"a": healthy(1), "b": healthy(2), "new": nil, "unk": hl(model.StatusUnknown, 0, ""),
			"sick": sick(), "moved": healthy(3),
		},
		Failovers: map[string]decide.Record{"moved": fo("moved", "b", model.ReasonManual)},
	}
	tests := []struct {
		from, to string
		force    bool
		status   int
		code     string
	}{
		{"a", "b", false, 0, ""},
		{"a", "new", false, 0, ""},
		{"a", "unk", false, 0, ""},
		{"moved", "a", false, 0, ""},
		{"a", "a", false, 400, "same_region"},
		{"a", "a", true, 400, "same_region"},
		{"zz", "b", false, 404, "region_not_found"},
		{"a", "zz", true, 404, "region_not_found"},
		{"a", "sick", false, 409, "target_unhealthy"},
		{"a", "sick", true, 0, ""},
		{"a", "moved", false, 409, "target_failed_over"},
		{"a", "moved", true, 409, "target_failed_over"},
	}
	for _, tc := range tests {
		err := decide.CheckTrigger(s, tc.from, tc.to, tc.force)
		if tc.status == 0 {
			if err != nil {
				t.Errorf("%s->%s force=%v: %v", tc.from, tc.to, tc.force, err)
			}
			continue
		}
		var me *model.Error
		if !errors.As(err, &me) || me.Status != tc.status || me.Code != tc.code {
			t.Errorf("%s->%s force=%v: got %v, want %d %s", tc.from, tc.to, tc.force, err, tc.status, tc.code)
		}
	}
}

func TestFailureRateAndGood(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h    *model.Health
		rate float64
		good bool
	}{
		{nil, 0, false},
		{hl(model.StatusHealthy, 1, ""), 0, true},
		{hl(model.StatusHealthy, 1, "-"), 0.1, true},
		{hl(model.StatusHealthy, 1, "----+"), 0.4, true},
		{hl(model.StatusHealthy, 1, "-----+++++"), 0.5, false},
		{hl(model.StatusUnknown, 1, "++"), 0, false},
		{hl(model.StatusUnhealthy, 1, "+++++++++-"), 0.1, false},
	} {
		if got := decide.FailureRate(tc.h); got != tc.rate {
			t.Errorf("rate %+v = %v, want %v", tc.h, got, tc.rate)
		}
		if got := decide.Good(tc.h, 0.5); got != tc.good {
			t.Errorf("good %+v = %v", tc.h, got)
		}
	}
	full := hl(model.StatusHealthy, 1, "--+-++++++")
	if decide.FailureRate(full) != full.FailureRate() {
		t.Fatal("a full window must agree with model.Health.FailureRate")
	}
}

func TestNext(t *testing.T) {
	t.Parallel()
	p := decide.Policy{Enabled: true, Threshold: 0.5, FailbackDelay: 10 * time.Second}
	s := decide.State{Now: t0, Failovers: map[string]decide.Record{"a": fo("a", "b", model.ReasonUnhealthy)}}
	if !decide.Next(p, s).IsZero() {
		t.Fatal("nothing pending")
	}
	a := s.Failovers["a"]
	a.HealthySince = at(-3 * time.Second)
	s.Failovers["a"] = a
	m := decide.Manual(nil, "m", "b", 5*time.Second, t0)
	s.Failovers["m"] = m
	if got := decide.Next(p, s); !got.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("next = %v", got)
	}
	m.ExpiresAt = at(time.Hour)
	s.Failovers["m"] = m
	if got := decide.Next(p, s); !got.Equal(t0.Add(7 * time.Second)) {
		t.Fatalf("next = %v", got)
	}
}
