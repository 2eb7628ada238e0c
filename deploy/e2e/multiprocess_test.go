package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// The binaries the multi-process test runs.
var mpBinaries = []string{"nats-server", "configmgr", "healthchecker", "failover", "router", "apigw"}

// binDir returns LB_BIN_DIR (make test sets it after `make build`), or
// builds the binaries into a temporary folder when it is not set.
func binDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LB_BIN_DIR"); dir != "" {
		for _, b := range mpBinaries {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				t.Fatalf("LB_BIN_DIR=%s has no %s (run make build): %v", dir, b, err)
			}
		}
		return dir
	}
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	build := func(wd, out string, args ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", filepath.Join(dir, out)}, args...)...)
		cmd.Dir = wd
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", out, err, b)
		}
	}
	for _, s := range mpBinaries[1:] {
		build(root, s, "./services/"+s+"/cmd/"+s)
	}
	build(filepath.Join(root, "shared"), "nats-server", "github.com/nats-io/nats-server/v2")
	return dir
}

// proc is one service process that can be killed and started again with the
// same command line and environment.
type proc struct {
	name, bin, dir, log string
	args, env           []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fmt.Fprintf(f, "==== start %s at %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir // no stray .env is read from the test's folder
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.dir}, p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// stop sends sig and waits for the exit (SIGKILL after 20s); it returns the
// exit code, -1 for a signal, and is a no-op when the process is not running.
func (p *proc) stop(sig syscall.Signal) int {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return 0
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return cmd.ProcessState.ExitCode()
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// mpStack is the whole system as separate processes on loopback.
type mpStack struct {
	t       *testing.T
	procs   map[string]*proc
	order   []string
	routers map[string]string // name -> base URL
	states  map[string]string // router name -> its state file
	api     string
}

func (s *mpStack) add(name, bin string, args []string, env ...string) *proc {
	dir := filepath.Join(s.t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	p := &proc{name: name, bin: bin, dir: dir, log: filepath.Join(dir, "log"), args: args, env: env}
	s.procs[name] = p
	s.order = append(s.order, name)
	p.start(s.t)
	return p
}

func (s *mpStack) burstAll(n int, want ...string) error {
	for _, name := range sortedKeys(s.routers) {
		seen, err := burst(s.routers[name], n)
		if err == nil {
			err = exactly(seen, want...)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func leaseHolder(ctx context.Context, js jetstream.JetStream) (string, error) {
	kv, err := js.KeyValue(ctx, "lb_leases")
	if err != nil {
		return "", err
	}
	e, err := kv.Get(ctx, "failover")
	if err != nil {
		return "", err
	}
	var doc struct {
		Holder string `json:"holder"`
	}
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		return "", err
	}
	return doc.Holder, nil
}

// TestMultiProcess runs the real binaries (bin/*) and bin/nats-server on
// loopback: two routers, two healthcheckers, two failover managers,
// configmgr and apigw. It kills and restarts replicas and the NATS server
// (same store) and checks that routing goes on, that the routers keep
// serving while NATS is down, and that the state is intact afterwards.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	if runtime.GOOS == "windows" {
		t.Skip("signals")
	}
	started := time.Now()
	bin := binDir(t)
	s := &mpStack{t: t, procs: map[string]*proc{}, routers: map[string]string{}, states: map[string]string{}}
	t.Cleanup(func() {
		for i := len(s.order) - 1; i >= 0; i-- {
			s.procs[s.order[i]].stop(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, name := range s.order {
				t.Logf("---- %s (last lines)\n%s", name, tail(s.procs[name].output(), 40))
			}
		}
	})

	regions := map[string]*fakeRegion{}
	var seed []string
	for _, name := range []string{"us-east", "eu-west", "ap-south"} {
		regions[name] = newRegion(t, name)
		seed = append(seed, name+":"+regions[name].srv.URL)
	}

	natsPort := freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	store := filepath.Join(t.TempDir(), "jetstream")
	natsProc := s.add("nats", filepath.Join(bin, "nats-server"),
		[]string{"-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", store, "-n", "mp-nats"})

	ops := func() string { return fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", freePort(t)) }
	common := []string{"NATS_URL=" + natsURL, "NATS_REQUEST_TIMEOUT=2s", "LOG_LEVEL=info"}
	env := func(extra ...string) []string { return append(append(append([]string{}, common...), ops()), extra...) }

	s.add("configmgr", filepath.Join(bin, "configmgr"), nil, env("REGIONAL_ENDPOINTS="+strings.Join(seed, ","))...)
	for i := 1; i <= 2; i++ {
		s.add(fmt.Sprintf("healthchecker-%d", i), filepath.Join(bin, "healthchecker"), nil,
			env(fmt.Sprintf("HEALTHCHECKER_ID=hc-%d", i), "HEALTH_CHECK_INTERVAL=300ms", "HEALTH_CHECK_TIMEOUT=500ms")...)
		s.add(fmt.Sprintf("failover-%d", i), filepath.Join(bin, "failover"), nil,
			env(fmt.Sprintf("FAILOVER_ID=fo-%d", i), "FAILBACK_DELAY=2s", "FAILOVER_LEASE_TTL=2s")...)
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("router-%d", i)
		port := freePort(t)
		s.routers[name] = fmt.Sprintf("http://127.0.0.1:%d", port)
		s.states[name] = filepath.Join(t.TempDir(), name+".json")
		s.add(name, filepath.Join(bin, "router"), nil,
			env(fmt.Sprintf("ROUTER_ID=r-%d", i), fmt.Sprintf("ROUTER_ADDR=127.0.0.1:%d", port),
				"ROUTER_STATE_FILE="+s.states[name], "ROUTER_PRESENCE_INTERVAL=1s")...)
	}
	apiPort := freePort(t)
	s.api = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	s.add("apigw", filepath.Join(bin, "apigw"), nil, env(fmt.Sprintf("API_ADDR=127.0.0.1:%d", apiPort))...)

	// The test's own NATS client: events and the failover lease.
	nc, js, ev := observer(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	all := []string{"us-east", "eu-west", "ap-south"}
	poll.Until(t, 30*time.Second, "both routers serve every region", func() error { return s.burstAll(30, all...) })
	t.Logf("%s: stack up, both routers serve %v", time.Since(started).Round(time.Millisecond), all)

	// 1. Kill replicas outright: a router, a healthchecker and the failover leader.
	var leader string
	poll.Until(t, 15*time.Second, "a failover leader", func() error {
		h, err := leaseHolder(ctx, js)
		leader = h
		return err
	})
	standby := map[string]string{"fo-1": "fo-2", "fo-2": "fo-1"}[leader]
	if standby == "" {
		t.Fatalf("unexpected lease holder %q", leader)
	}
	leaderProc := s.procs["failover-"+strings.TrimPrefix(leader, "fo-")]
	leaderProc.stop(syscall.SIGKILL)
	s.procs["router-1"].stop(syscall.SIGKILL)
	s.procs["healthchecker-1"].stop(syscall.SIGKILL)
	if seen, err := burst(s.routers["router-2"], 30); err != nil || exactly(seen, all...) != nil {
		t.Fatalf("router-2 after router-1 was killed: %v %v", seen, err)
	}
	poll.Until(t, 15*time.Second, "the standby failover manager takes the lease", func() error {
		h, err := leaseHolder(ctx, js)
		if err == nil && h != standby {
			err = fmt.Errorf("holder %q, want %q", h, standby)
		}
		return err
	})
	s.procs["router-1"].start(t)
	s.procs["healthchecker-1"].start(t)
	leaderProc.start(t)
	poll.Until(t, 20*time.Second, "restarted router-1 serves every region", func() error { return s.burstAll(20, all...) })
	t.Logf("%s: replicas killed and restarted; %s took over from %s", time.Since(started).Round(time.Millisecond), standby, leader)

	// 2. A sick region fails over (decided by the new leader); a config change
	// reaches every router.
	mark := ev.mark()
	regions["us-east"].sick.Store(true)
	started1 := ev.wait(t, 20*time.Second, mark, "failover.started us-east", isFailover(model.EventFailoverStarted, "us-east"))
	t.Logf("failover: %+v", started1)
	regions["sa-east"] = newRegion(t, "sa-east")
	code, b, err := api(http.MethodPost, s.api+"/api/v1/lb/regions", "", map[string]any{"region": "sa-east", "endpoint": regions["sa-east"].srv.URL, "weight": 2})
	if err != nil || code != http.StatusCreated {
		t.Fatalf("add sa-east: %d %s %v", code, b, err)
	}
	afterFailover := []string{"eu-west", "ap-south", "sa-east"}
	poll.Until(t, 20*time.Second, "routers follow the failover and the new region", func() error { return s.burstAll(30, afterFailover...) })
	var before map[string]string
	poll.Until(t, 10*time.Second, "registry", func() error { before, err = registry(s.api, ""); return err })
	if len(before) != 4 {
		t.Fatalf("registry before the NATS restart: %v", before)
	}
	if fo, err := activeFailovers(s.api, ""); err != nil || fo["us-east"] == "" {
		t.Fatalf("active failovers before the NATS restart: %v %v", fo, err)
	}

	// 3. NATS goes away: the routers keep serving from their last state, even
	// one restarted while NATS is down; writes are refused (503), not lost.
	natsProc.stop(syscall.SIGKILL)
	poll.Until(t, 10*time.Second, "test client sees NATS down", func() error {
		if nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	if err := s.burstAll(30, afterFailover...); err != nil {
		t.Fatalf("routers with NATS down: %v", err)
	}
	code, b, err = api(http.MethodPut, s.api+"/api/v1/lb/regions/sa-east", "", map[string]any{"weight": 7})
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("a config change with NATS down: %d %s %v (want 503)", code, b, err)
	}
	// The router saves its state 200 ms after a change: a kill sooner would
	// lose the newest change by design, so wait until it is on disk.
	poll.Until(t, 10*time.Second, "router-2 saved the failover and sa-east", func() error {
		b, err := os.ReadFile(s.states["router-2"])
		var st struct {
			Regions  map[string]json.RawMessage `json:"regions"`
			Failover map[string]json.RawMessage `json:"failover"`
		}
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil || st.Regions["sa-east"] == nil || st.Failover["us-east"] == nil {
			return fmt.Errorf("state file regions %d, failovers %d (%v)", len(st.Regions), len(st.Failover), err)
		}
		return nil
	})
	s.procs["router-2"].stop(syscall.SIGKILL)
	s.procs["router-2"].start(t)
	poll.Until(t, 10*time.Second, "router-2 listens again", func() error { _, _, err := hit(s.routers["router-2"] + "/"); return err })
	if seen, err := burst(s.routers["router-2"], 30); err != nil || exactly(seen, afterFailover...) != nil {
		t.Fatalf("router-2 restarted with NATS down (state file): %v %v", seen, err)
	}
	t.Logf("%s: NATS down: both routers served, router-2 restarted from its state file", time.Since(started).Round(time.Millisecond))

	// 4. NATS comes back on the same store: state intact, control plane works.
	natsProc.start(t)
	poll.Until(t, 30*time.Second, "registry intact after the NATS restart", func() error {
		after, err := registry(s.api, "")
		if err != nil {
			return err
		}
		if fmt.Sprint(after) != fmt.Sprint(before) {
			return fmt.Errorf("registry %v, want %v", after, before)
		}
		return nil
	})
	if fo, err := activeFailovers(s.api, ""); err != nil || fo["us-east"] == "" {
		t.Fatalf("active failovers after the NATS restart: %v %v", fo, err)
	}
	if err := s.burstAll(30, afterFailover...); err != nil {
		t.Fatalf("routers after the NATS restart: %v", err)
	}
	mark = ev.mark()
	regions["us-east"].sick.Store(false)
	ev.wait(t, 30*time.Second, mark, "failover.ended us-east", isFailover(model.EventFailoverEnded, "us-east"))
	poll.Until(t, 20*time.Second, "us-east back in every router", func() error {
		return s.burstAll(40, "us-east", "eu-west", "ap-south", "sa-east")
	})
	code, b, err = api(http.MethodDelete, s.api+"/api/v1/lb/regions/sa-east", "", nil)
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("remove sa-east: %d %s %v", code, b, err)
	}
	poll.Until(t, 20*time.Second, "sa-east gone from every router", func() error { return s.burstAll(30, all...) })
	poll.Until(t, 20*time.Second, "both routers present in the status", func() error {
		code, b, err := api(http.MethodGet, s.api+"/api/v1/lb/status", "", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %s %v", code, b, err)
		}
		var st struct {
			Routers []struct {
				ID string `json:"id"`
			} `json:"routers"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		ids := map[string]bool{}
		for _, r := range st.Routers {
			ids[r.ID] = true
		}
		if !ids["r-1"] || !ids["r-2"] {
			return fmt.Errorf("routers %v", ids)
		}
		return nil
	})
	t.Logf("%s: NATS restarted: state intact, failback and config changes reach the routers", time.Since(started).Round(time.Millisecond))

	// 5. Every service shuts down cleanly on SIGTERM.
	for i := len(s.order) - 1; i >= 0; i-- {
		p := s.procs[s.order[i]]
		if code := p.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("%s exited %d on SIGTERM", p.name, code)
		}
	}
	t.Logf("multi-process test took %s", time.Since(started).Round(time.Millisecond))
}
