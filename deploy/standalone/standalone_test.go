package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/poll"
)

// binary returns bin/standalone from LB_BIN_DIR (make test builds it), or
// builds it into a temporary directory.
func binary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LB_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, "standalone")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "standalone")
	cmd := exec.Command("go", "build", "-o", p, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build standalone: %v\n%s", err, out)
	}
	return p
}

// handedOut holds the ports freePort returned: a port released by one call
// may come back from the next, and two listeners of one process on the same
// port fail with "address already in use".
var handedOut sync.Map

// freePort returns a loopback port nothing listens on, never the same twice.
func freePort(t *testing.T) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if _, dup := handedOut.LoadOrStore(port, true); !dup {
			return port
		}
	}
}

// proc is a running bin/standalone.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String() + p.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func start(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin), done: make(chan error, 1)}
	p.cmd.Dir = t.TempDir() // no stray .env
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("standalone output:\n%s", p.output())
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatal("standalone did not stop within 30s of SIGTERM")
		return -1
	}
}

func call(method, url string, body any) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

func region(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
}

// The process-level test of issue 2: start bin/standalone, use the API, stop
// it with SIGTERM (exit 0), start it again: what the API changed is kept.
func TestStandaloneProcessKeepsStateAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	bin := binary(t)
	a, b := region("a"), region("b")
	defer a.Close()
	defer b.Close()
	data := t.TempDir()
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	routerAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := []string{
		"STANDALONE_DATA_DIR=" + data,
		"API_ADDR=" + api,
		"ROUTER_ADDR=" + routerAddr,
		"ROUTER_STATE_FILE=" + filepath.Join(data, "router-state.json"),
		fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", freePort(t)),
		"REGIONAL_ENDPOINTS=alpha:" + a.URL,
		"HEALTH_CHECK_INTERVAL=1",
	}
	base := "http://" + api + "/api/v1/lb"

	p := start(t, bin, env)
	poll.Until(t, 30*time.Second, "condition", func() error {
		st, body, _, err := call("GET", base+"/regions", nil)
		if err != nil || st != 200 || !strings.Contains(string(body), `"alpha"`) {
			return fmt.Errorf("%d %s %v", st, body, err)
		}
		return nil
	})
	out := p.output()
	for _, want := range []string{"http://" + routerAddr, base + "/status", "curl"} {
		if !strings.Contains(out, want) {
			t.Errorf("banner does not show %q:\n%s", want, out)
		}
	}

	st, body, _, err := call("POST", base+"/regions", map[string]any{"region": "beta", "endpoint": b.URL, "weight": 3})
	if err != nil || st != http.StatusCreated {
		t.Fatalf("add region: %d %s %v", st, body, err)
	}
	st, body, _, err = call("PUT", base+"/strategy", map[string]any{"strategy": "weighted"})
	if err != nil || st != http.StatusOK {
		t.Fatalf("set strategy: %d %s %v", st, body, err)
	}
	st, body, _, _ = call("POST", base+"/regions", map[string]any{"region": "beta", "endpoint": b.URL})
	if st != http.StatusConflict {
		t.Fatalf("duplicate add: %d %s", st, body)
	}
	// Traffic reaches both regions through the router.
	seen := map[string]bool{}
	poll.Until(t, 10*time.Second, "condition", func() error {
		st, body, h, err := call("GET", "http://"+routerAddr+"/hello", nil)
		if err != nil || st != 200 {
			return fmt.Errorf("router: %d %s %v", st, body, err)
		}
		seen[h.Get("X-LB-Region")] = true
		if !seen["alpha"] || !seen["beta"] {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM exit code %d, want 0\n%s", code, p.output())
	}

	p2 := start(t, bin, env)
	poll.Until(t, 30*time.Second, "condition", func() error {
		st, body, _, err := call("GET", base+"/regions", nil)
		if err != nil || st != 200 {
			return fmt.Errorf("%d %s %v", st, body, err)
		}
		var got struct {
			Regions []struct {
				Region string  `json:"region"`
				Weight float64 `json:"weight"`
			} `json:"regions"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			return err
		}
		if len(got.Regions) != 2 || got.Regions[1].Region != "beta" || got.Regions[1].Weight != 3 {
			return fmt.Errorf("regions after restart: %s", body)
		}
		return nil
	})
	st, body, _, _ = call("GET", base+"/status", nil)
	if st != 200 || !strings.Contains(string(body), `"strategy":"weighted"`) {
		t.Fatalf("status after restart: %d %s", st, body)
	}
	if code := p2.stop(t); code != 0 {
		t.Fatalf("second SIGTERM exit code %d", code)
	}
}

// With no REGIONAL_ENDPOINTS, standalone starts the three demo regions and
// routes to them.
func TestStandaloneDemoRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	bin := binary(t)
	data := t.TempDir()
	// Three consecutive free ports for the demo regions.
	var demo int
	for range 50 {
		demo = freePort(t)
		ok := true
		for i := range 3 {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", demo+i))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok && demo+2 < 65536 {
			break
		}
	}
	routerAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, bin, []string{
		"STANDALONE_DATA_DIR=" + data,
		"API_ADDR=" + api,
		"ROUTER_ADDR=" + routerAddr,
		"ROUTER_STATE_FILE=" + filepath.Join(data, "router-state.json"),
		"METRICS_ADDR=off",
		"REGIONAL_ENDPOINTS=",
		fmt.Sprintf("STANDALONE_DEMO_PORT=%d", demo),
	})
	seen := map[string]bool{}
	poll.Until(t, 30*time.Second, "condition", func() error {
		st, body, h, err := call("GET", "http://"+routerAddr+"/", nil)
		if err != nil || st != 200 {
			return fmt.Errorf("router: %d %s %v", st, body, err)
		}
		var echo struct{ Region string }
		if err := json.Unmarshal(body, &echo); err != nil || echo.Region != h.Get("X-LB-Region") {
			return fmt.Errorf("echo %s vs header %q", body, h.Get("X-LB-Region"))
		}
		seen[echo.Region] = true
		if len(seen) < 3 {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	for _, name := range []string{"us-east", "eu-west", "ap-south"} {
		if !seen[name] {
			t.Errorf("demo region %s not seen", name)
		}
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// A bad variable stops start-up with exit code 2 naming it.
func TestStandaloneBadEnvExits2(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	bin := binary(t)
	for _, tc := range []struct{ env, name string }{
		{"HEALTH_CHECK_INTERVAL=soon", "HEALTH_CHECK_INTERVAL"},
		{"LOAD_BALANCING_STRATEGY=random", "LOAD_BALANCING_STRATEGY"},
		{"API_ADDR=0.0.0.0:8080", "API_ADDR"},
		{"ROUTER_ADDR=nope", "ROUTER_ADDR"},
		{"ROUTER_EVENT_LOOP=maybe", "ROUTER_EVENT_LOOP"},
		{"FAILOVER_THRESHOLD=2", "FAILOVER_THRESHOLD"},
		{"REGIONAL_ENDPOINTS=bad name:http://127.0.0.1:1", "REGIONAL_ENDPOINTS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "STANDALONE_DATA_DIR="+t.TempDir(), tc.env)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want code 2; stderr: %s", err, stderr.String())
			}
			first, _ := bufio.NewReader(&stderr).ReadString('\n')
			if !strings.Contains(first, tc.name) {
				t.Fatalf("stderr %q does not name %s", first, tc.name)
			}
		})
	}
}
