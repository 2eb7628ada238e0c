package healthchecker

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// A region that starts failing is unhealthy after exactly the failure
// threshold and healthy again after exactly the recovery threshold, with
// one event per transition. Checks are driven on demand so every step is
// observed; the schedule itself is tested below.
func TestThresholdsOnDemand(t *testing.T) {
	e := newEnv(t, testConfig(time.Hour))
	rs := newRegionServer(t, false)
	e.putRegion(model.Region{Region: "alpha", Endpoint: rs.URL + "/alpha"})
	e.start("hc-1", nil)

	// The first scheduled check (a never-checked region is checked soon).
	h := e.waitStatus("alpha", model.StatusHealthy, 10*time.Second)
	if h.ConsecutiveSuccesses != 1 || len(h.Window) != 1 || h.Last == nil || !h.Last.Healthy {
		t.Fatalf("after the first check: %+v", h)
	}

	check := func(wantStatus string, wantFail, wantOK int) {
		t.Helper()
		var res model.CheckResult
		if err := e.checkCmd("alpha", &res); err != nil {
			t.Fatalf("check: %v", err)
		}
		h, _, err := e.health("alpha")
		if err != nil {
			t.Fatal(err)
		}
		if h.Status != wantStatus || h.ConsecutiveFailures != wantFail || h.ConsecutiveSuccesses != wantOK {
			t.Fatalf("got %s fail=%d ok=%d, want %s fail=%d ok=%d", h.Status, h.ConsecutiveFailures, h.ConsecutiveSuccesses, wantStatus, wantFail, wantOK)
		}
		if h.Last == nil || !h.Last.CheckedAt.Equal(res.CheckedAt) {
			t.Fatalf("last result %+v is not the one returned %+v", h.Last, res)
		}
	}
	rs.setMode("alpha", "fail")
	check(model.StatusHealthy, 1, 0)
	check(model.StatusHealthy, 2, 0)
	check(model.StatusUnhealthy, 3, 0)
	check(model.StatusUnhealthy, 4, 0)
	rs.setMode("alpha", "ok")
	check(model.StatusUnhealthy, 0, 1)
	check(model.StatusHealthy, 0, 2)
	check(model.StatusHealthy, 0, 3)

	h, _, _ = e.health("alpha")
	wantWindow := []bool{true, false, false, false, false, true, true, true}
	if !slices.Equal(h.Window, wantWindow) {
		t.Fatalf("window %v, want %v", h.Window, wantWindow)
	}
	if h.LatencyMS <= 0 {
		t.Fatalf("no latency estimate: %+v", h)
	}

	evs := e.healthEvents("alpha")
	if got := transitions(evs); got != "unknown>healthy,healthy>unhealthy,unhealthy>healthy" {
		t.Fatalf("events %s", got)
	}
	for _, ev := range evs {
		if ev.Type != model.EventHealthChanged || ev.Region != "alpha" || ev.Reason == "" || ev.At.IsZero() {
			t.Fatalf("bad event %+v", ev)
		}
	}
	if !strings.HasPrefix(evs[1].Reason, "3 consecutive failed checks") {
		t.Fatalf("reason %q", evs[1].Reason)
	}
}

// The same rules driven by the scheduler: every write is observed through a
// watch of the key.
func TestThresholdsScheduled(t *testing.T) {
	interval := 200 * time.Millisecond
	e := newEnv(t, testConfig(interval))
	rs := newRegionServer(t, false)
	e.putRegion(model.Region{Region: "beta", Endpoint: rs.URL + "/beta"})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := e.kv(bus.BucketHealth).Watch(ctx, "beta", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	var seen []model.Health
	next := func() model.Health {
		t.Helper()
		select {
		case ent := <-w.Updates():
			var h model.Health
			if err := json.Unmarshal(ent.Value(), &h); err != nil {
				t.Fatal(err)
			}
			seen = append(seen, h)
			return h
		case <-time.After(10 * time.Second):
			t.Fatalf("no health update within 10s; seen %+v", seen)
		}
		return model.Health{}
	}

	e.start("hc-1", nil)
	if h := next(); h.Status != model.StatusHealthy {
		t.Fatalf("first check: %+v", h)
	}
	rs.setMode("beta", "fail")
	// Skip results of checks that were already running.
	h := next()
	for h.ConsecutiveFailures == 0 {
		h = next()
	}
	for h.ConsecutiveFailures < 3 {
		if h.Status != model.StatusHealthy {
			t.Fatalf("unhealthy after %d failures", h.ConsecutiveFailures)
		}
		h = next()
	}
	if h.Status != model.StatusUnhealthy || h.ConsecutiveFailures != 3 {
		t.Fatalf("after 3 failures: %+v", h)
	}
	rs.setMode("beta", "ok")
	h = next()
	for h.ConsecutiveSuccesses == 0 {
		h = next()
	}
	if h.Status != model.StatusUnhealthy || h.ConsecutiveSuccesses != 1 {
		t.Fatalf("after 1 success: %+v", h)
	}
	if h = next(); h.Status != model.StatusHealthy || h.ConsecutiveSuccesses != 2 {
		t.Fatalf("after 2 successes: %+v", h)
	}
	// Three more checks, then no more than the three transitions.
	for range 3 {
		next()
	}
	if got := transitions(e.healthEvents("beta")); got != "unknown>healthy,healthy>unhealthy,unhealthy>healthy" {
		t.Fatalf("events %s", got)
	}
	// Consecutive scheduled checks are one interval apart.
	var gaps []time.Duration
	for i := 1; i < len(seen); i++ {
		gaps = append(gaps, seen[i].Last.CheckedAt.Sub(seen[i-1].Last.CheckedAt))
	}
	for _, g := range gaps[len(gaps)-3:] {
		if g < interval/2 || g > 2*interval {
			t.Fatalf("checks %v apart, interval %v (all gaps %v)", g, interval, gaps)
		}
	}
}

func TestTimeoutCountsAsFailure(t *testing.T) {
	cfg := testConfig(time.Hour)
	cfg.Timeout = 150 * 1e6
	e := newEnv(t, cfg)
	rs := newRegionServer(t, false)
	e.putRegion(model.Region{Region: "slow", Endpoint: rs.URL + "/slow"})
	e.start("hc-1", nil)
	e.waitStatus("slow", model.StatusHealthy, 10*time.Second)

	rs.setMode("slow", "slow")
	for i := 1; i <= 3; i++ {
		var res model.CheckResult
		if err := e.checkCmd("slow", &res); err != nil {
			t.Fatal(err)
		}
		if res.Healthy || res.StatusCode != 0 || !strings.Contains(res.Error, "timeout") {
			t.Fatalf("check %d: %+v", i, res)
		}
		h, _, _ := e.health("slow")
		if h.ConsecutiveFailures != i {
			t.Fatalf("after %d timeouts: %+v", i, h)
		}
	}
	e.waitStatus("slow", model.StatusUnhealthy, time.Second)
}

func TestTLS(t *testing.T) {
	e := newEnv(t, testConfig(time.Hour))
	rs := newRegionServer(t, true)
	e.putRegion(model.Region{Region: "secure", Endpoint: rs.URL + "/secure"})

	plain := e.start("hc-no-ca", nil)
	var res model.CheckResult
	poll.Until(t, 10*time.Second, "replica answers", func() error { return e.checkCmd("secure", &res) })
	if res.Healthy || !strings.Contains(res.Error, "certificate") {
		t.Fatalf("self-signed region passed without the CA: %+v", res)
	}
	plain.stop(t)

	caFile := writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rs.Certificate().Raw}))
	e.start("hc-ca", func(c *Config) { c.CAFile = caFile })
	poll.Until(t, 10*time.Second, "check with the CA", func() error {
		var res model.CheckResult
		if err := e.checkCmd("secure", &res); err != nil {
			return err
		}
		if !res.Healthy {
			return fmt.Errorf("%+v", res)
		}
		return nil
	})
}

// History: every result is on lb.health.results.<region>, in order, and
// LB_HEALTH keeps at most HEALTH_HISTORY_PER_REGION of them; reading the
// stream from the end gives newest first (what apigw serves).
func TestHistoryBoundedNewestFirst(t *testing.T) {
	cfg := testConfig(time.Hour)
	cfg.HistoryPerRegion = 5
	e := newEnv(t, cfg)
	rs := newRegionServer(t, false)
	e.putRegion(model.Region{Region: "hist", Endpoint: rs.URL + "/hist"})
	e.putRegion(model.Region{Region: "other", Endpoint: rs.URL + "/other"})
	e.start("hc-1", nil)
	e.waitStatus("hist", model.StatusHealthy, 10*time.Second)
	e.waitStatus("other", model.StatusHealthy, 10*time.Second)

	var returned []model.CheckResult
	for i := range 8 {
		rs.setMode("hist", map[bool]string{true: "fail", false: "ok"}[i%2 == 0])
		var res model.CheckResult
		if err := e.checkCmd("hist", &res); err != nil {
			t.Fatal(err)
		}
		returned = append(returned, res)
	}
	var msgs [][]byte
	poll.Until(t, 5*time.Second, "results acknowledged", func() error {
		msgs = e.streamMessages(bus.StreamHealth, bus.HealthResultsSubject("hist"))
		var last model.CheckResult
		if len(msgs) > 0 {
			_ = json.Unmarshal(msgs[len(msgs)-1], &last)
		}
		if len(msgs) != 5 || !last.CheckedAt.Equal(returned[7].CheckedAt) {
			return fmt.Errorf("%d messages", len(msgs))
		}
		return nil
	})
	// Newest first: reverse of stream order, equal to the last five results.
	for i := range 5 {
		var got model.CheckResult
		if err := json.Unmarshal(msgs[len(msgs)-1-i], &got); err != nil {
			t.Fatal(err)
		}
		want := returned[7-i]
		if !got.CheckedAt.Equal(want.CheckedAt) || got.Healthy != want.Healthy || got.Region != "hist" {
			t.Fatalf("history[%d] = %+v, want %+v", i, got, want)
		}
	}
	if n := len(e.streamMessages(bus.StreamHealth, bus.HealthResultsSubject("other"))); n < 1 || n > 5 {
		t.Fatalf("other region has %d results", n)
	}
}

func TestOnDemandCommand(t *testing.T) {
	e := newEnv(t, testConfig(time.Hour))
	rs := newRegionServer(t, false)
	for _, n := range []string{"c-one", "a-one", "b-one"} {
		e.putRegion(model.Region{Region: n, Endpoint: rs.URL + "/" + n})
	}
	rs.setMode("b-one", "fail")
	e.start("hc-1", nil)
	e.waitStatus("a-one", model.StatusHealthy, 10*time.Second)

	before := rs.count("a-one")
	var one model.CheckResult
	if err := e.checkCmd("a-one", &one); err != nil {
		t.Fatal(err)
	}
	if one.Region != "a-one" || !one.Healthy || one.StatusCode != http.StatusOK || one.CheckedAt.IsZero() {
		t.Fatalf("one: %+v", one)
	}
	if rs.count("a-one") != before+1 {
		t.Fatal("the on-demand check did not probe the region")
	}

	var all model.HealthCheckAllResponse
	if err := e.checkCmd("", &all); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range all.Results {
		names = append(names, r.Region)
		if r.Healthy != (r.Region != "b-one") {
			t.Fatalf("result %+v", r)
		}
	}
	if fmt.Sprint(names) != "[a-one b-one c-one]" {
		t.Fatalf("all: %v", names)
	}

	err := e.checkCmd("nope", &one)
	var me *model.Error
	if !errors.As(err, &me) || me.Status != http.StatusNotFound || me.Code != "region_not_found" {
		t.Fatalf("unknown region: %v", err)
	}
	err = e.checkCmd("Bad Name", &one)
	if !errors.As(err, &me) || me.Status != http.StatusBadRequest {
		t.Fatalf("invalid region: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := e.nc.RequestWithContext(ctx, bus.SubjectCmdHealthCheck, []byte(`{"region":"a-one","extra":1}`))
	if err != nil || reply.Header.Get("Nats-Service-Error-Code") != "400" {
		t.Fatalf("unknown field: %v %v", err, reply)
	}
}

// Added or changed regions are checked at once; removed ones lose their
// health entry and are no longer probed.
func TestRegionLifecycle(t *testing.T) {
	interval := 300 * time.Millisecond
	e := newEnv(t, testConfig(interval))
	rs := newRegionServer(t, false)
	e.start("hc-1", nil)
	e.putRegion(model.Region{Region: "seed", Endpoint: rs.URL + "/seed"})
	e.waitStatus("seed", model.StatusHealthy, 10*time.Second) // the replica is up and watching

	added := time.Now()
	e.putRegion(model.Region{Region: "late", Endpoint: rs.URL + "/late"})
	poll.Until(t, 10*time.Second, "new region checked", func() error {
		if rs.count("late") == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	first, _ := rs.firstAfter("late", added)
	if d := first.Sub(added); d > interval {
		t.Fatalf("new region first checked after %v (interval %v)", d, interval)
	}

	changed := time.Now()
	e.putRegion(model.Region{Region: "late", Endpoint: rs.URL + "/late", HealthPath: "/ready"})
	poll.Until(t, 10*time.Second, "changed region checked", func() error {
		if _, ok := rs.firstAfter("late", changed); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	// Changing the weight only is not a reason to probe out of schedule.
	e.putRegion(model.Region{Region: "late", Endpoint: rs.URL + "/late", HealthPath: "/ready", Weight: 5})

	e.deleteRegion("late")
	poll.Until(t, 10*time.Second, "health deleted", func() error {
		if _, ok, err := e.health("late"); err != nil || ok {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	settled := time.Now().Add(interval) // a check in flight may still land
	poll.Until(t, 10*time.Second, "seed checked thrice more", func() error {
		if rs.countBetween("seed", settled, time.Now()) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n := rs.countBetween("late", settled, time.Now()); n != 0 {
		t.Fatalf("removed region probed %d times", n)
	}
	if _, ok, _ := e.health("late"); ok {
		t.Fatal("health of the removed region came back")
	}
	if n := len(e.streamMessages(bus.StreamHealth, bus.HealthResultsSubject("late"))); n != 0 {
		t.Fatalf("removed region's history kept %d results", n)
	}
}

// After NATS restarts, the watches are re-opened: a region added after the
// restart is checked.
func TestSurvivesNATSRestart(t *testing.T) {
	e := newEnv(t, testConfig(300*time.Millisecond))
	rs := newRegionServer(t, false)
	e.putRegion(model.Region{Region: "before", Endpoint: rs.URL + "/before"})
	e.start("hc-1", nil)
	e.waitStatus("before", model.StatusHealthy, 10*time.Second)

	e.ns = embeddednats.RestartForTest(t, e.ns)
	poll.Until(t, 15*time.Second, "client reconnected", func() error {
		if !e.nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	e.putRegion(model.Region{Region: "after", Endpoint: rs.URL + "/after"})
	e.waitStatus("after", model.StatusHealthy, 15*time.Second)
	rs.setMode("before", "fail")
	e.waitStatus("before", model.StatusUnhealthy, 15*time.Second)
}
