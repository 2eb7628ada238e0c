//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/regiontls"
)

// tlsRegion is an https region (httptest, certificate for localhost) that
// counts the connections it accepted and closed.
type tlsRegion struct {
	srv            *httptest.Server
	url            string // https://127.0.0.1:<port> (an address: no lookup)
	opened, closed atomic.Int64
}

func newTLSRegion(t *testing.T, cert tls.Certificate, h http.Handler, configure func(*http.Server)) *tlsRegion {
	t.Helper()
	g := &tlsRegion{srv: httptest.NewUnstartedServer(h)}
	g.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	g.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			g.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			g.closed.Add(1)
		}
	}
	if configure != nil {
		configure(g.srv.Config)
	}
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	g.url = g.srv.URL
	return g
}

// tlsLoopRouter is a router with the event loop on and the test CA trusted.
func tlsLoopRouter(t *testing.T, caFile string, o Options, regions map[string]string) *testRouter {
	t.Helper()
	cfg, err := regiontls.Build(config.RegionTLS{CAFile: caFile}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	o.TLS = cfg
	r := startRouter(t, o, model.StrategyRoundRobin, regions)
	if !bbLoopOn(r) {
		t.Skip("ROUTER_TEST_EVENT_LOOP=false: these tests are about the event loop")
	}
	return r
}

// bigBody is n deterministic bytes.
func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26 + i/26%7)
	}
	return b
}

// An https region is served by the event loop: no hand-off, bodies of every
// size and framing arrive whole, and connections are kept alive (TLS session
// tickets reaching an idle connection do not close it).
func TestEventLoopServesHTTPSRegions(t *testing.T) {
	t.Parallel()
	cert, caFile := testCA(t)
	big := bigBody(3 << 20)
	g := newTLSRegion(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big": // Content-Length, many TLS records
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = w.Write(big)
		case "/chunked":
			for i := 0; i < len(big); i += 100 << 10 {
				_, _ = w.Write(big[i:min(i+100<<10, len(big))])
				w.(http.Flusher).Flush()
			}
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s %s %d %x", r.Method, r.Host, len(b), sha256.Sum256(b))
		default:
			_, _ = io.WriteString(w, "hello "+r.URL.Path)
		}
	}), nil)
	r := tlsLoopRouter(t, caFile, Options{}, map[string]string{"secure": g.url})
	hc := client()
	get := func(path string) (int, []byte, http.Header) {
		t.Helper()
		resp, err := hc.Get(r.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode, b, resp.Header
	}
	for i := range 200 {
		code, body, h := get("/n" + strconv.Itoa(i))
		if want := "hello /n" + strconv.Itoa(i); code != 200 || string(body) != want || h.Get("X-LB-Region") != "secure" {
			t.Fatalf("request %d: %d %q region %q, want 200 %q from secure", i, code, body, h.Get("X-LB-Region"), want)
		}
	}
	for _, path := range []string{"/big", "/chunked"} {
		code, body, _ := get(path)
		if code != 200 || !bytes.Equal(body, big) {
			t.Fatalf("%s: %d, %d bytes (equal: %v), want the region's %d bytes", path, code, len(body), bytes.Equal(body, big), len(big))
		}
	}
	upload := bigBody(12 << 10) // buffered by the loop (larger ones stream on the general path)
	resp, err := hc.Post(r.url+"/echo", "application/octet-stream", bytes.NewReader(upload))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if want := fmt.Sprintf("POST %s %d %x", strings.TrimPrefix(g.url, "https://"), len(upload), sha256.Sum256(upload)); string(b) != want {
		t.Fatalf("upload: %q, want %q", b, want)
	}
	if n := testutil.ToFloat64(r.m.Handoffs); n != 0 {
		t.Fatalf("%v connections handed to the general path, want 0: the loop serves https regions", n)
	}
	// One client connection at a time: one region connection does it all
	// (a second one at most, when a close raced with a request).
	if n := g.opened.Load(); n > 2 {
		t.Fatalf("the region saw %d connections for 203 sequential requests, want 1 or 2 (keep-alive)", n)
	}
}

// A client that reads slowly gets a large https answer whole: the loop
// stops reading the region while the client is behind and resumes with
// what TLS still holds.
func TestEventLoopHTTPSSlowReader(t *testing.T) {
	t.Parallel()
	cert, caFile := testCA(t)
	big := bigBody(4 << 20)
	g := newTLSRegion(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, _ = w.Write(big)
	}), nil)
	r := tlsLoopRouter(t, caFile, Options{}, map[string]string{"secure": g.url})
	// A small receive window from the start (set before connecting), so
	// that the router's writes to the client stall again and again.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10) })
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	bbWrite(t, c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 8<<10)
	for got.Len() < len(big) {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		if got.Len()%(256<<10) < n {
			time.Sleep(10 * time.Millisecond) // the client's pace, not synchronisation
		}
	}
	if resp.StatusCode != 200 || !bytes.Equal(got.Bytes(), big) {
		t.Fatalf("slow reader: %d, %d of %d bytes, equal %v", resp.StatusCode, got.Len(), len(big), bytes.Equal(got.Bytes(), big))
	}
}

// Failed TLS is a failure to send: an untrusted certificate or a region
// that does not speak TLS is retried on another region, and alone gets 503
// promptly; neither is handed off.
func TestEventLoopHTTPSRegionFailures(t *testing.T) {
	t.Parallel()
	cert, caFile := testCA(t)
	good := newTLSRegion(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "good")
	}), nil)
	otherCert, _ := testCA(t) // signed by a CA the router does not trust
	untrusted := newTLSRegion(t, otherCert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "untrusted")
	}), nil)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "plain")
	}))
	t.Cleanup(plain.Close)
	notTLS := "https://" + strings.TrimPrefix(plain.URL, "http://")

	for _, bad := range []struct{ name, url string }{{"untrusted", untrusted.url}, {"not-tls", notTLS}} {
		t.Run(bad.name, func(t *testing.T) {
			o := Options{DialTimeout: 2 * time.Second, TLSHandshakeTimeout: 2 * time.Second}
			alone := tlsLoopRouter(t, caFile, o, map[string]string{"bad": bad.url})
			t0 := time.Now()
			resp, err := client().Get(alone.url + "/x")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 503 { // as on the general path: nothing was sent
				t.Fatalf("only region %s: %d, want 503", bad.name, resp.StatusCode)
			}
			if took := time.Since(t0); took > 3*time.Second {
				t.Fatalf("503 after %v, want it as soon as the handshake failed", took)
			}
			both := tlsLoopRouter(t, caFile, o, map[string]string{"bad": bad.url, "good": good.url})
			for i := range 6 {
				resp, err := client().Get(both.url + "/x")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "good" {
					t.Fatalf("request %d with a %s region beside a good one: %d %q, want 200 good", i, bad.name, resp.StatusCode, b)
				}
			}
			if n := testutil.ToFloat64(both.m.Handoffs) + testutil.ToFloat64(alone.m.Handoffs); n != 0 {
				t.Fatalf("%v hand-offs, want 0", n)
			}
		})
	}
}

// A region that closes its idle https connections (close_notify, then FIN)
// costs nothing: the next request goes out on a fresh connection.
func TestEventLoopHTTPSRegionClosesIdleConnections(t *testing.T) {
	t.Parallel()
	cert, caFile := testCA(t)
	g := newTLSRegion(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}), func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	r := tlsLoopRouter(t, caFile, Options{}, map[string]string{"secure": g.url})
	for i := range 5 {
		closed := g.closed.Load()
		resp, err := client().Get(r.url + "/r" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok /r"+strconv.Itoa(i) {
			t.Fatalf("request %d after the region closed its idle connection: %d %q", i, resp.StatusCode, b)
		}
		poll.True(t, 5*time.Second, "the region closes the idle connection", func() bool { return g.closed.Load() > closed })
	}
}

// Shutting down while a handshake is in progress ends promptly: the dial's
// goroutine is cancelled and the waiting client gets an answer.
func TestEventLoopHTTPSShutdownDuringHandshake(t *testing.T) {
	t.Parallel()
	_, caFile := testCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	serveConns(t, ln, func(c net.Conn) { // accepts and never answers
		select {
		case accepted <- struct{}{}:
		default:
		}
		_, _ = io.Copy(io.Discard, c)
	})
	url := "https://" + ln.Addr().String()
	r := tlsLoopRouter(t, caFile, Options{TLSHandshakeTimeout: time.Minute}, map[string]string{"mute": url})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the router never dialled the region")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_ = r.p.Shutdown(ctx)
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("shutdown took %v with a handshake in progress", took)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(br)
	if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 50")) {
		t.Fatalf("the waiting client got %q, want a 5xx or a close", b)
	}
}

// engine is r's event loop engine (nil until Serve started it, or when off).
func (r *testRouter) engine() *evEngine {
	r.p.evMu.Lock()
	defer r.p.evMu.Unlock()
	return r.p.ev
}

// awaitLoop waits until r's event loop runs, when it is on: HTTPS
// connections that finish their handshake before it are served by the
// general path.
func (r *testRouter) awaitLoop(t *testing.T) {
	t.Helper()
	if bbLoopOn(r) {
		poll.True(t, 5*time.Second, "the event loop started", func() bool { return r.engine() != nil })
	}
}

// HTTPS clients on the event loop: a kept-alive connection is adopted by a
// loop after its handshake; pipelined requests beyond the read buffer (TLS
// holds the rest, which no socket event announces) are all answered in
// order; HSTS and X-Forwarded-Proto https are set; a chunked upload is
// handed to the fasthttp path with what the loop had read, on the same
// connection, which goes on working there. With the loop off the same
// traffic is served and nothing is adopted.
func TestEventLoopServesHTTPSClients(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	f := startFront(t, Options{}, FrontDoor{HSTS: "max-age=60"}, map[string]string{"r1": g.URL})
	loop := bbLoopOn(f.r)
	f.r.awaitLoop(t)
	c, err := tls.Dial("tcp", f.httpsAddr, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	get := func(path string) {
		t.Helper()
		resp, body := bbRead(t, br, "GET")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "GET "+path+" xfp=https ") || resp.Header.Get("Strict-Transport-Security") != "max-age=60" {
			t.Fatalf("%s: %d %q HSTS %q", path, resp.StatusCode, body, resp.Header.Get("Strict-Transport-Security"))
		}
	}
	bbWrite(t, c, "GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
	get("/first")
	var got int64
	if e := f.r.engine(); e != nil {
		got = e.tlsAdopted.Load()
	}
	if (got > 0) != loop {
		t.Fatalf("adopted %d HTTPS clients with the event loop on=%v", got, loop)
	}

	// 600 pipelined requests, about 30 KiB: more than a loop's 16 KiB
	// buffer, sent in one go.
	var burst strings.Builder
	for i := range 600 {
		fmt.Fprintf(&burst, "GET /p/%03d HTTP/1.1\r\nHost: localhost\r\nX-Pad: %s\r\n\r\n", i, strings.Repeat("x", 8))
	}
	bbWrite(t, c, burst.String())
	for i := range 600 {
		get(fmt.Sprintf("/p/%03d", i))
	}

	// A chunked upload goes to the fasthttp path mid-connection.
	bbWrite(t, c, "POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
	resp, body := bbRead(t, br, "POST")
	if want := fmt.Sprintf("POST /up xfp=https len=5 sha=%x", sha256.Sum256([]byte("hello"))); resp.StatusCode != 200 || body != want {
		t.Fatalf("chunked upload: %d %q, want %q", resp.StatusCode, body, want)
	}
	get("/after")
	bbWrite(t, c, "GET /last HTTP/1.1\r\nHost: localhost\r\n\r\n")
	get("/last")

	// The router's own error answers carry HSTS too.
	dead := startFront(t, Options{}, FrontDoor{HSTS: "max-age=60"}, map[string]string{"dead": "http://127.0.0.1:1"})
	dead.r.awaitLoop(t)
	resp, _ = reader{t}.all(dead.client(false).Get(dead.url("/x")))
	if resp.StatusCode < 500 || resp.Header.Get("Strict-Transport-Security") != "max-age=60" || resp.Header.Get("X-LB-Region") != "dead" {
		t.Fatalf("dead region over HTTPS: %d HSTS %q region %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"), resp.Header.Get("X-LB-Region"))
	}
}

// An idle HTTPS client that sends part of a record and stalls is cut: on
// the loop by the header timeout, as a plain client trickling a head is; on
// the general path (loop off), where no plaintext means no head yet, by the
// idle timeout.
func TestEventLoopHTTPSPartialRecordTimesOut(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	f := startFront(t, Options{ClientHeaderTimeout: 500 * time.Millisecond, ClientIdleTimeout: 4 * time.Second}, FrontDoor{}, map[string]string{"r1": g.URL})
	bound := 2500 * time.Millisecond
	if !bbLoopOn(f.r) {
		bound = 8 * time.Second
	}
	raw, err := net.Dial("tcp", f.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	// One request first: the connection is then idle, its head timer off.
	bbWrite(t, c, "GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if resp, _ := bbRead(t, bufio.NewReader(c), "GET"); resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	if _, err := raw.Write([]byte{0x17, 0x03, 0x03}); err != nil { // a record header, cut short
		t.Fatal(err)
	}
	start := time.Now()
	_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.Copy(io.Discard, raw)
	if waited := time.Since(start); err != nil || waited > bound {
		t.Fatalf("closed after %s (%v); want within %s", waited, err, bound)
	}
}

// flightConn holds a tls.Conn's records while batch is set, so that several
// (a request and a close_notify) reach the router in one TCP write.
type flightConn struct {
	net.Conn
	buf   bytes.Buffer
	batch bool
}

func (f *flightConn) Write(p []byte) (int, error) {
	if f.batch {
		return f.buf.Write(p)
	}
	return f.Conn.Write(p)
}

func (f *flightConn) send(t *testing.T) {
	t.Helper()
	f.batch = false
	_ = f.Conn.SetWriteDeadline(time.Time{}) // CloseWrite set one
	if _, err := f.Conn.Write(f.buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	f.buf.Reset()
}

// A client's close_notify after its requests is a half-close: every
// complete request is answered (one in flight, one pipelined behind it),
// then the connection closes, at once, not at the idle timeout.
func TestHTTPSCloseNotifyAfterRequests(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	g := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	defer g.Close()
	f := startFront(t, Options{ClientIdleTimeout: 30 * time.Second}, FrontDoor{}, map[string]string{"r1": g.URL})
	f.r.awaitLoop(t)
	dial := func() (*tls.Conn, *flightConn, *bufio.Reader) {
		t.Helper()
		raw, err := net.Dial("tcp", f.httpsAddr)
		if err != nil {
			t.Fatal(err)
		}
		fc := &flightConn{Conn: raw}
		c := tls.Client(fc, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		bbWrite(t, c, "GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if _, body := bbRead(t, br, "GET"); body != "/warm" {
			t.Fatalf("warm-up: %q", body)
		}
		return c, fc, br
	}
	closedWithin := func(br *bufio.Reader, d time.Duration) {
		t.Helper()
		start := time.Now()
		_, err := br.ReadByte()
		if err == nil || time.Since(start) > d {
			t.Fatalf("after the answers: %v after %s; want the connection closed within %s", err, time.Since(start), d)
		}
	}

	// A request and close_notify in one flight.
	c, fc, br := dial()
	fc.batch = true
	bbWrite(t, c, "GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n")
	_ = c.CloseWrite()
	fc.send(t)
	if resp, body := bbRead(t, br, "GET"); resp.StatusCode != 200 || body != "/one" {
		t.Fatalf("request before close_notify: %d %q", resp.StatusCode, body)
	}
	closedWithin(br, 5*time.Second)

	// One request in flight, a second one and close_notify behind it.
	c, fc, br = dial()
	bbWrite(t, c, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the region")
	}
	fc.batch = true
	bbWrite(t, c, "GET /second HTTP/1.1\r\nHost: localhost\r\n\r\n")
	_ = c.CloseWrite()
	fc.send(t)
	close(release)
	for _, want := range []string{"/slow", "/second"} {
		if resp, body := bbRead(t, br, "GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("pipelined before close_notify: %d %q, want %q", resp.StatusCode, body, want)
		}
	}
	closedWithin(br, 5*time.Second)
}
