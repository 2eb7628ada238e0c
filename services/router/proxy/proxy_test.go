package proxy

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/regiontls"
)

func TestPathPrefixAndQuery(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Method + " " + r.RequestURI)
		_, _ = io.WriteString(w, "ok")
	}))
	defer region.Close()
	tests := []struct {
		desc, endpoint, path, want string
	}{
		{"no prefix", region.URL, "/a/b?x=1&y=%20z", "GET /a/b?x=1&y=%20z"},
		{"prefix kept", region.URL + "/base", "/a/b?x=1", "GET /base/a/b?x=1"},
		{"prefix with trailing slash", region.URL + "/base/", "/a?q", "GET /base/a?q"},
		{"root under prefix", region.URL + "/base", "/", "GET /base/"},
		{"escaped path kept as sent", region.URL, "/a%2Fb/../c", "GET /a%2Fb/../c"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": tc.endpoint})
			req, _ := http.NewRequest(http.MethodGet, r.url+tc.path, nil)
			req.URL.Opaque = tc.path[:strings.IndexAny(tc.path+"?", "?")] // keep the path unnormalised
			resp, err := client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "r1" {
				t.Fatalf("status %d region %q", resp.StatusCode, resp.Header.Get("X-LB-Region"))
			}
			if g := got.Load(); g != tc.want {
				t.Fatalf("region saw %q, want %q", g, tc.want)
			}
		})
	}
}

func TestHopByHopAndForwardedHeaders(t *testing.T) {
	t.Parallel()
	seen := make(chan http.Header, 1)
	var host atomic.Value
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		seen <- h
		host.Store(r.Host)
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "yes")
		_, _ = io.WriteString(w, "ok")
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	req, _ := http.NewRequest(http.MethodGet, r.url+"/h", nil)
	req.Host = "public.example"
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "drop me")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Te", "gzip")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Keep", "kept")
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	h := <-seen
	for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade"} {
		if v := h.Get(k); v != "" {
			t.Errorf("hop-by-hop %s reached the region: %q", k, v)
		}
	}
	if h.Get("X-Keep") != "kept" {
		t.Errorf("end-to-end header lost")
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := h.Get("X-Forwarded-Host"); got != "public.example" {
		t.Errorf("X-Forwarded-Host = %q", got)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if got := host.Load(); got != strings.TrimPrefix(region.URL, "http://") {
		t.Errorf("Host sent to region = %q, want the region's host", got)
	}
	if resp.Header.Get("X-Resp-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if resp.Header.Get("X-End-To-End") != "yes" || resp.Header.Get("X-LB-Region") != "r1" {
		t.Errorf("response headers: %v", resp.Header)
	}
}

// patternReader yields n deterministic pseudo-random bytes.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newPattern(n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{1, 2, 3}), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	_, _ = p.rng.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func patternHash(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, newPattern(n))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// peakHeap samples the heap while f runs and returns the growth over the start.
func peakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// Not parallel: it measures the process's heap, which the parallel tests
// (the hostile-input suite among them) would grow meanwhile.
func TestStreamingBothWays(t *testing.T) {
	const size = 64 << 20 // far larger than any buffer on the way
	const maxGrowth = 24 << 20
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, newPattern(size))
		}
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	want := patternHash(size)

	growth := peakHeap(func() {
		req, _ := http.NewRequest(http.MethodPost, r.url+"/upload", newPattern(size)) // chunked
		resp, err := client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if got := string(body); got != fmt.Sprintf("%d %s", size, want) {
			t.Fatalf("upload: region got %q, want %d %s", got, size, want)
		}
	})
	if growth > maxGrowth {
		t.Errorf("upload grew the heap by %d MiB", growth>>20)
	}

	growth = peakHeap(func() {
		resp, err := client().Get(r.url + "/download")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		_ = resp.Body.Close()
		if err != nil || n != size || fmt.Sprintf("%x", h.Sum(nil)) != want {
			t.Fatalf("download: %d bytes, err %v, hash mismatch=%v", n, err, fmt.Sprintf("%x", h.Sum(nil)) != want)
		}
	})
	if growth > maxGrowth {
		t.Errorf("download grew the heap by %d MiB", growth>>20)
	}
}

func TestWebSocketEcho(t *testing.T) {
	t.Parallel()
	region := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, msg); err != nil {
				return
			}
		}
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	ws, err := websocket.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i := range 20 {
		msg := fmt.Sprintf("hello %d %s", i, strings.Repeat("x", i*1000))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo %d mismatch", i)
		}
	}
}

func TestServerSentEventsAreNotBuffered(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	resp, err := client().Get(r.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		// The region sends the next event only after we got this one, so a
		// buffering proxy would hang here.
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("got %q, want %q", line, want)
		}
		_, _ = br.ReadString('\n')
		next <- struct{}{}
	}
}

func TestTLSRegionWithTestCA(t *testing.T) {
	t.Parallel()
	cert, caFile := testCA(t)
	var sni atomic.Value
	region := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secure")
	}))
	region.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni.Store(h.ServerName)
			return nil, nil
		},
	}
	region.StartTLS()
	defer region.Close()
	tlsCfg, err := regiontls.Build(config.RegionTLS{CAFile: caFile}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "https://localhost:" + region.URL[strings.LastIndex(region.URL, ":")+1:]
	r := startRouter(t, Options{TLS: tlsCfg}, model.StrategyRoundRobin, map[string]string{"secure": endpoint})
	resp, err := client().Get(r.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "secure" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if got := sni.Load(); got != "localhost" {
		t.Fatalf("SNI = %v, want localhost", got)
	}

	// Without the CA the region is not trusted: verification is on by default.
	untrusted := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"secure": endpoint})
	resp, err = client().Get(untrusted.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("untrusted region answered %d, want 503", resp.StatusCode)
	}
}

func okRegion(name string, hits *atomic.Int64) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, name)
	}))
}

func statusRegion(status int, hits *atomic.Int64) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
	}))
}

func TestRetryOnConnectionRefusedForPOST(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	live := okRegion("live", &hits)
	defer live.Close()
	r := startRouter(t, Options{OutlierConsecutive: -1}, model.StrategyRoundRobin, map[string]string{
		"dead": "http://" + deadAddr(t), "live": live.URL,
	})
	for i := range 20 {
		body := strings.Repeat("p", 100+i)
		resp, err := client().Post(r.url+"/submit", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "live" {
			t.Fatalf("request %d: status %d region %q", i, resp.StatusCode, resp.Header.Get("X-LB-Region"))
		}
	}
	if hits.Load() != 20 {
		t.Fatalf("live region got %d requests, want 20 (each exactly once)", hits.Load())
	}
}

func TestRetryOn503ForGETButNotPOST(t *testing.T) {
	t.Parallel()
	var badHits, goodHits atomic.Int64
	bad := statusRegion(503, &badHits)
	defer bad.Close()
	good := okRegion("good", &goodHits)
	defer good.Close()
	r := startRouter(t, Options{OutlierConsecutive: -1, BudgetFloor: 1000}, model.StrategyRoundRobin, map[string]string{"bad": bad.URL, "good": good.URL})
	for i := range 10 {
		resp, err := client().Get(r.url + "/get")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "good" {
			t.Fatalf("GET %d: status %d region %q", i, resp.StatusCode, resp.Header.Get("X-LB-Region"))
		}
	}
	if badHits.Load() != 5 {
		t.Fatalf("bad region tried %d times, want 5 (every other pick)", badHits.Load())
	}
	got503 := 0
	for range 10 {
		resp, err := client().Post(r.url+"/post", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == 503 {
			got503++
			if resp.Header.Get("X-LB-Region") != "bad" {
				t.Fatalf("503 without the region that sent it")
			}
		}
	}
	if got503 != 5 {
		t.Fatalf("POST: %d answers were 503, want 5 (no retry for POST)", got503)
	}
}

func TestRetryBudgetHoldsUnderFailingRegion(t *testing.T) {
	t.Parallel()
	var badHits, goodHits atomic.Int64
	bad := statusRegion(503, &badHits)
	defer bad.Close()
	good := okRegion("good", &goodHits)
	defer good.Close()
	const n = 1000
	r := startRouter(t, Options{OutlierConsecutive: -1, BudgetRatio: 0.2, BudgetFloor: 10}, model.StrategyRoundRobin, map[string]string{"bad": bad.URL, "good": good.URL})
	c := client()
	for range n {
		resp, err := c.Get(r.url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	retries := badHits.Load() + goodHits.Load() - n
	if limit := int64(0.2*n) + 10; retries > limit {
		t.Fatalf("%d retries for %d requests, budget allows %d", retries, n, limit)
	}
	if retries < 50 {
		t.Fatalf("only %d retries: the budget should allow about 20%%", retries)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	var flakyHits, goodHits atomic.Int64
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flakyHits.Add(1)
		if failing.Load() {
			w.WriteHeader(500)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer flaky.Close()
	good := okRegion("good", &goodHits)
	defer good.Close()
	r := startRouter(t, Options{OutlierConsecutive: 3, OutlierBaseEjection: 300 * time.Millisecond, OutlierMaxEjection: time.Minute},
		model.StrategyRoundRobin, map[string]string{"flaky": flaky.URL, "good": good.URL})
	c := client()
	get := func() {
		resp, err := c.Get(r.url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	for range 6 {
		get()
	}
	ev := <-r.events
	if ev.Type != model.EventOutlierEjected || ev.Region != "flaky" {
		t.Fatalf("event %+v, want flaky ejected", ev)
	}
	before := flakyHits.Load()
	for range 20 {
		get()
	}
	if flakyHits.Load() != before {
		t.Fatalf("ejected region still got traffic")
	}
	failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for r.table.Snapshot().Candidates[0].Name != "flaky" && len(r.table.Snapshot().Candidates) != 2 {
		r.table.ReturnExpired(time.Now())
		if time.Now().After(deadline) {
			t.Fatal("ejected region did not return")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ev := <-r.events; ev.Type != model.EventOutlierReturned || ev.Region != "flaky" {
		t.Fatalf("event %+v, want flaky returned", ev)
	}
	poll.True(t, 5*time.Second, "traffic back on the returned region", func() bool {
		get()
		return flakyHits.Load() > before
	})
}

func TestOutlierNeverEjectsTheLastRegion(t *testing.T) {
	t.Parallel()
	var a, b atomic.Int64
	ra := statusRegion(500, &a)
	defer ra.Close()
	rb := statusRegion(500, &b)
	defer rb.Close()
	r := startRouter(t, Options{OutlierConsecutive: 2, OutlierBaseEjection: time.Minute}, model.StrategyRoundRobin, map[string]string{"a": ra.URL, "b": rb.URL})
	for range 20 {
		resp, err := client().Get(r.url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	if n := len(r.table.Snapshot().Candidates); n != 1 {
		t.Fatalf("%d candidates left, want exactly 1 (one ejected, never the last)", n)
	}
}

func Test503JSONWhenNoRegion(t *testing.T) {
	t.Parallel()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, nil)
	resp, err := client().Get(r.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error, Code string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || body.Error == "" || body.Code == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d body %+v", resp.StatusCode, body)
	}
}

func TestPanicRoutingWhenNoneInRotation(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	region := okRegion("r1", &hits)
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL, "r2": "http://" + deadAddr(t)})
	st := r.table.State()
	st.Health["r1"] = model.Health{Region: "r1", Status: model.StatusUnhealthy}
	st.Health["r2"] = model.Health{Region: "r2", Status: model.StatusUnhealthy}
	r.table.Replace(st)
	if !r.table.Snapshot().Panic {
		t.Fatal("snapshot not in panic mode")
	}
	for range 10 {
		resp, err := client().Get(r.url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("panic routing answered %d", resp.StatusCode)
		}
	}
}

func TestHeadAndNoContent(t *testing.T) {
	t.Parallel()
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(204)
			return
		}
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	resp, err := client().Head(r.url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 5 {
		t.Fatalf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	resp, err = client().Get(r.url + "/empty")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("204 became %d", resp.StatusCode)
	}
}

// The region header goes on the wire spelled as the contract writes it.
func TestHeaderNamesOnTheWire(t *testing.T) {
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["x-custom-lower"] = []string{"v"}
		_, _ = io.WriteString(w, "ok")
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	for _, want := range []string{"\r\nX-LB-Region: r1\r\n", "ok"} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("response lacks %q:\n%s", want, raw)
		}
	}
	// Errors answered by the router carry the header too.
	dead := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"gone": "http://" + deadAddr(t)})
	resp, err := client().Get(dead.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 500 || resp.Header.Get("X-LB-Region") != "gone" {
		t.Fatalf("dead region: status %d region %q", resp.StatusCode, resp.Header.Get("X-LB-Region"))
	}
}

// Repeated X-Forwarded-* headers from a client cannot reach the region next
// to the router's own: with no trusted proxy, X-Forwarded-For is the client's
// address alone, and -Proto/-Host are the router's only.
func TestForwardedHeadersCannotBeSpoofedByRepeating(t *testing.T) {
	got := make(chan http.Header, 1)
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: front.example\r\n"+
		"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n"+
		"X-Forwarded-Host: evil\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n")
	_, _ = io.ReadAll(conn)
	h := <-got
	if xff := h.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
		t.Fatalf("X-Forwarded-For = %q", xff)
	}
	if p := h.Values("X-Forwarded-Proto"); len(p) != 1 || p[0] != "http" {
		t.Fatalf("X-Forwarded-Proto = %q", p)
	}
	if v := h.Values("X-Forwarded-Host"); len(v) != 1 || v[0] != "front.example" {
		t.Fatalf("X-Forwarded-Host = %q", v)
	}
}

// A region that does not answer within the response-header timeout is a
// 504 gateway_timeout (after one retry for GET), and the router adds no
// Content-Type a region did not send; a lone Proxy-Authenticate is stripped.
func TestTimeoutIs504AndHeadersPassAsSent(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
			return
		}
		w.Header()["Content-Type"] = nil // Go would sniff one otherwise
		w.Header().Set("Proxy-Authenticate", "Basic")
		_, _ = io.WriteString(w, "plain")
	}))
	defer slow.Close()
	r := startRouter(t, Options{ResponseHeaderTimeout: 300 * time.Millisecond}, model.StrategyRoundRobin, map[string]string{"r1": slow.URL})
	resp, err := client().Get(r.url + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), `"code":"gateway_timeout"`) {
		t.Fatalf("slow region: %d %s", resp.StatusCode, body)
	}

	resp, err = client().Get(r.url + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Fatalf("router added Content-Type %q", ct)
	}
	if pa := resp.Header.Get("Proxy-Authenticate"); pa != "" {
		t.Fatalf("hop-by-hop Proxy-Authenticate passed: %q", pa)
	}
}
