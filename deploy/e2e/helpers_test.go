package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// client has short timeouts and no keep-alive, so a request after a restart
// never lands on a stale connection of the previous process.
var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// hit sends one GET through a router and returns the status and the
// region that served it (X-LB-Region).
func hit(url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-LB-Region"), nil
}

// burst sends n GETs through the router at base and counts the regions that
// served them; any error or non-200 answer is returned as an error.
func burst(base string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for i := range n {
		code, region, err := hit(fmt.Sprintf("%s/e2e/%d?q=%d", base, i, i))
		if err != nil {
			return seen, fmt.Errorf("request %d of %d: %w", i+1, n, err)
		}
		if code != http.StatusOK {
			return seen, fmt.Errorf("request %d of %d: status %d (region %q)", i+1, n, code, region)
		}
		seen[region]++
	}
	return seen, nil
}

// exactly checks that the regions seen are exactly want.
func exactly(seen map[string]int, want ...string) error {
	got := make([]string, 0, len(seen))
	for r := range seen {
		got = append(got, r)
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("served by %v, want exactly %v", seen, want)
	}
	return nil
}

// api calls the REST API; key may be empty (loopback, protected mode).
func api(method, url, key string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// apiRegion is the part of the API's Region document the tests compare.
type apiRegion struct {
	Region       string  `json:"region"`
	Endpoint     string  `json:"endpoint"`
	Weight       float64 `json:"weight"`
	HealthPath   string  `json:"health_path"`
	Status       string  `json:"status"`
	InRotation   bool    `json:"in_rotation"`
	FailedOverTo string  `json:"failed_over_to"`
}

// config is the registry as the tests compare it: region -> endpoint|weight.
func registry(base, key string) (map[string]string, error) {
	code, b, err := api(http.MethodGet, base+"/api/v1/lb/regions", key, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET regions: %d %s", code, b)
	}
	var out struct {
		Regions []apiRegion `json:"regions"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, r := range out.Regions {
		m[r.Region] = fmt.Sprintf("%s|%g|%s", r.Endpoint, r.Weight, r.HealthPath)
	}
	return m, nil
}

// activeFailovers returns from_region -> to_region of the API's failover status.
func activeFailovers(base, key string) (map[string]string, error) {
	code, b, err := api(http.MethodGet, base+"/api/v1/lb/failover/status", key, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET failover/status: %d %s", code, b)
	}
	var out struct {
		Active []struct {
			From string `json:"from_region"`
			To   string `json:"to_region"`
		} `json:"active"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, f := range out.Active {
		m[f.From] = f.To
	}
	return m, nil
}

// events records every event on lb.events.> seen by one NATS client.
type events struct {
	mu  sync.Mutex
	all []model.Event
	sub *nats.Subscription
}

// watchEvents subscribes nc to lb.events.> (the subscription survives
// reconnects).
func watchEvents(t testing.TB, nc *nats.Conn) *events {
	t.Helper()
	ev := &events{}
	sub, err := nc.Subscribe("lb.events.>", func(m *nats.Msg) {
		var e model.Event
		if json.Unmarshal(m.Data, &e) != nil {
			return
		}
		ev.mu.Lock()
		ev.all = append(ev.all, e)
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("subscribe lb.events.>: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	ev.sub = sub
	return ev
}

// mark is a position in the event log; find only looks after it.
func (ev *events) mark() int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return len(ev.all)
}

// find returns the first event after mark that matches.
func (ev *events) find(mark int, match func(model.Event) bool) (model.Event, bool) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.all[min(mark, len(ev.all)):] {
		if match(e) {
			return e, true
		}
	}
	return model.Event{}, false
}

// wait polls for an event after mark that matches.
func (ev *events) wait(t testing.TB, d time.Duration, mark int, what string, match func(model.Event) bool) model.Event {
	t.Helper()
	var got model.Event
	poll.Until(t, d, "event "+what, func() error {
		e, ok := ev.find(mark, match)
		if !ok {
			return errors.New("not seen on lb.events.>")
		}
		got = e
		return nil
	})
	return got
}

func isFailover(typ, from string) func(model.Event) bool {
	return func(e model.Event) bool { return e.Type == typ && e.FromRegion == from }
}

// fakeRegion is an in-process region for the multi-process test: it echoes
// its name, and its /health answer can be switched to 503.
type fakeRegion struct {
	name string
	srv  *httptest.Server
	sick atomic.Bool
}

func newRegion(t testing.TB, name string) *fakeRegion {
	t.Helper()
	r := &fakeRegion{name: name}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/health" {
			if r.sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok")
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"region":%q,"path":%q}`, name, req.URL.Path)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// observer is the test's own NATS client: it reconnects forever, follows
// every event, and is closed when the test ends.
func observer(t testing.TB, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, *events) {
	t.Helper()
	base := []nats.Option{nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(100 * time.Millisecond)}
	nc, err := nats.Connect(urls, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, watchEvents(t, nc)
}
