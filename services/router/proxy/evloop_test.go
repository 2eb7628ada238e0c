package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// rawWrkRequest is the request wrk sends, as bytes on the wire.
var rawWrkRequest = []byte("GET /bench?x=1 HTTP/1.1\r\nHost: lb.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")

// serveBench serves benchProxy's proxy on a loopback listener and returns a
// client connection to it.
func serveBench(tb testing.TB, eventLoop bool) net.Conn {
	tb.Helper()
	if eventLoop && (runtime.GOOS != "linux" || os.Getenv("ROUTER_TEST_EVENT_LOOP") == "false") {
		tb.Skip("the event loop runs on Linux only")
	}
	p := benchProxy(tb)
	p.opts.DisableEventLoop = !eventLoop
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-done
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTripRaw sends the wrk request on c and reads one answer of the size
// the first one had (the bench regions always send the same answer).
func roundTripRaw(tb testing.TB, c net.Conn, buf []byte, size *int) {
	if _, err := c.Write(rawWrkRequest); err != nil {
		tb.Fatal(err)
	}
	if *size > 0 {
		if _, err := io.ReadFull(c, buf[:*size]); err != nil {
			tb.Fatal(err)
		}
		return
	}
	n := 0
	for {
		k, err := c.Read(buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += k
		head, body, ok := bytes.Cut(buf[:n], []byte("\r\n\r\n"))
		if !ok {
			continue
		}
		i := bytes.Index(bytes.ToLower(head), []byte("content-length: "))
		if i < 0 || !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) || !bytes.Contains(head, []byte("\r\nX-LB-Region: b")) {
			tb.Fatalf("answer %q", buf[:n])
		}
		cl, _ := strconv.Atoi(string(bytes.TrimSpace(bytes.SplitN(head[i+16:], []byte("\r\n"), 2)[0])))
		if len(body) == cl {
			*size = n
			return
		}
	}
}

// The event loop's request path allocates nothing per request: buffers are
// per loop, the heads are parsed in place, connections are pooled.
func TestEventLoopAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; make test runs this test without it")
	}
	c := serveBench(t, true)
	buf := make([]byte, 4096)
	size := 0
	for range 50 { // open the region connections, size the answer
		roundTripRaw(t, c, buf, &size)
	}
	// Counted for the whole process: the client and the regions here too.
	assertNoAllocsPerRequest(t, func() { roundTripRaw(t, c, buf, &size) })
}

// BenchmarkServe is one proxied GET at a time on one client connection,
// client and region on loopback: the latency of each path.
func BenchmarkServe(b *testing.B) {
	for _, eventLoop := range []bool{true, false} {
		name := "fasthttp"
		if eventLoop {
			name = "eventloop"
		}
		b.Run(name, func(b *testing.B) {
			c := serveBench(b, eventLoop)
			buf := make([]byte, 4096)
			size := 0
			roundTripRaw(b, c, buf, &size)
			b.ReportAllocs()
			for b.Loop() {
				roundTripRaw(b, c, buf, &size)
			}
		})
	}
}

// Shutdown stops taking connections, lets the request in flight finish and
// closes the idle connections, on either path.
func TestShutdownFinishesInFlightRequests(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	release := make(chan struct{})
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	addr := strings.TrimPrefix(r.url, "http://")

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_ = idle.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := idle.Read(buf); err != nil || !bytes.Contains(buf[:n], []byte("done /fast")) {
		t.Fatalf("first answer %q %v", buf[:n], err)
	}

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client().Get(r.url + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-arrived
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- r.p.Shutdown(ctx)
	}()
	// The idle keep-alive connection is closed, new ones are refused.
	if n, err := idle.Read(buf); err == nil {
		t.Fatalf("idle connection still open after shutdown began: %q", buf[:n])
	}
	poll.True(t, 10*time.Second, "the listener refuses connections after shutdown began", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		_ = c.Close()
		return false
	})
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	res := <-got
	if res.err != nil || res.body != "done /slow" {
		t.Fatalf("in-flight request: %q %v", res.body, res.err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not return after the last request")
	}
	if v := r.m.InFlight.Value(); v != 0 {
		t.Fatalf("in-flight gauge %d after shutdown", v)
	}
}

// Pipelined requests followed by a half-close are all answered, in order,
// then the router closes.
func TestPipelinedRequestsThenHalfClose(t *testing.T) {
	t.Parallel()
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "path "+r.URL.Path)
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: x\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, raw)
	}
	got := string(raw)
	if strings.Count(got, "HTTP/1.1 200 OK") != 4 || !strings.Contains(got, "path /1") || !strings.Contains(got, "path /2") ||
		strings.Contains(got, "path /3") || !strings.HasSuffix(got, "path /4") || strings.Index(got, "path /1") > strings.Index(got, "path /2") {
		t.Fatalf("answers:\n%s", got)
	}
}

// A region named by DNS is served by the event loop once its name resolved:
// the first connections may take the general path, later ones do not.
func TestEventLoopServesRegionsNamedByDNS(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" || os.Getenv("ROUTER_TEST_EVENT_LOOP") == "false" {
		t.Skip("the event loop runs on Linux only")
	}
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "named")
	}))
	defer region.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(region.URL, "http://"))
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": "http://localhost:" + port})
	get := func() {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(r.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "named" {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	}
	handoffs := func() float64 { return testutil.ToFloat64(r.m.Handoffs) }
	poll.True(t, 10*time.Second, "a connection served without a hand-off", func() bool {
		before := handoffs()
		get()
		return handoffs() == before
	})
	before := handoffs()
	for range 20 {
		get()
	}
	if n := handoffs() - before; n != 0 {
		t.Fatalf("%v of 20 connections handed off after the name resolved", n)
	}
}

// When a region has every connection the router may open to it busy, a
// request waits for one (up to the dial timeout) instead of failing.
func TestRequestsWaitForAFreeConnection(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var held, most atomic.Int64
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := held.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if r.URL.Path == "/hold" {
			<-release
		}
		held.Add(-1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer region.Close()
	r := startRouter(t, Options{MaxConnsPerRegion: 1, MaxIdleConnsPerRegion: 1, DialTimeout: 20 * time.Second},
		model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	const k = 6
	errs := make(chan error, k)
	for range k {
		go func() {
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get(r.url + "/hold")
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				errs <- fmt.Errorf("status %d body %q", resp.StatusCode, b)
				return
			}
			errs <- nil
		}()
	}
	poll.True(t, 10*time.Second, "the region holds requests", func() bool { return held.Load() > 0 })
	close(release)
	for range k {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// One connection per loop (or one in all on the fasthttp path).
	if limit := int64(runtime.GOMAXPROCS(0)); most.Load() > limit {
		t.Fatalf("%d requests at once at the region, want at most %d", most.Load(), limit)
	}
}

// A region that starts its answer before it read the whole request (one
// that echoes as it reads) still gets the rest of the body, and the client
// the whole answer, when the router's write to the region was partial.
func TestRegionAnsweringWhileReadingGetsTheWholeBody(t *testing.T) {
	t.Parallel()
	region := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		_, _ = io.WriteString(w, "first:")
		_ = http.NewResponseController(w).Flush()
		_, _ = io.Copy(w, r.Body)
	}))
	// A small receive window at the region, a small send buffer at the
	// router: the router's write of the request is partial.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	region.Listener = ln
	region.Start()
	defer region.Close()
	r := startRouter(t, Options{sndBuf: 1024}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	body := strings.Repeat("0123456789", 1500) // 15000 bytes: the loop buffers it
	for i := range 3 {
		resp, err := client().Post(r.url+"/echo", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || string(b) != "first:"+body {
			t.Fatalf("request %d: %d of %d bytes, err %v", i, len(b), len("first:"+body), err)
		}
	}
}

// A client that resets its connection while its request is in flight and
// its pipelined bytes fill the loop's buffer costs the router nothing: the
// reset is noticed at once (level-triggered, an unnoticed reset would spin).
func TestResetWithAFullBufferDoesNotSpin(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getenv("ROUTER_TEST_EVENT_LOOP") == "false" {
		t.Skip("the event loop runs on Linux only")
	}
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer region.Close()
	defer close(release)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /held HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-arrived
	if _, err := io.WriteString(c, strings.Repeat("GET /next HTTP/1.1\r\nHost: x\r\n\r\n", 1000)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close() // a reset
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, start := cpu(), time.Now()
	time.Sleep(time.Second) // the window measured, not a synchronisation
	used, wall := cpu()-before, time.Since(start)
	t.Logf("%v of CPU in %v after the reset", used, wall)
	if used > wall/2 {
		t.Fatalf("%v of CPU in %v after a client reset: a loop spins", used, wall)
	}
}

// Registration numbers never reach -1 (the listener's mark in epoll
// events) nor zero, however many connections a loop has seen.
func TestEventLoopGenerationsSkipTheListenerMark(t *testing.T) {
	l := &evLoop{gens: math.MaxInt32 - 1}
	got := []int32{l.nextGen(), l.nextGen(), l.nextGen()}
	if got[0] != math.MaxInt32 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("generations after MaxInt32-1: %v, want [%d 1 2]", got, int32(math.MaxInt32))
	}
}
