package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// frontEnv is a router with its HTTPS listener, the test CA's certificate
// served for localhost, and handshake results counted.
type frontEnv struct {
	r          *testRouter
	httpsAddr  string
	cert       tls.Certificate // signed for localhost by roots
	roots      *x509.CertPool
	handshakes sync.Map // result -> *atomic.Int64
}

func (f *frontEnv) count(result string) int64 {
	v, ok := f.handshakes.Load(result)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func startFront(t *testing.T, o Options, fd FrontDoor, regions map[string]string) *frontEnv {
	t.Helper()
	cert, caFile := testCA(t)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	f := &frontEnv{roots: x509.NewCertPool(), cert: cert}
	f.roots.AppendCertsFromPEM(pem)
	if fd.TLS == nil {
		fd.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	fd.OnHandshake = func(result string) {
		v, _ := f.handshakes.LoadOrStore(result, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.httpsAddr = ln.Addr().String()
	f.r = startRouter(t, o, model.StrategyRoundRobin, regions, func(p *Proxy) func() {
		p.SetFrontDoor(fd)
		done := make(chan struct{})
		go func() { defer close(done); _ = p.ServeTLS(ln) }()
		return func() { <-done }
	})
	return f
}

// client1 speaks HTTP/1.1 over TLS to the front door, h2 when asked.
func (f *frontEnv) client(h2 bool) *http.Client {
	cfg := &tls.Config{RootCAs: f.roots, ServerName: "localhost"}
	if h2 {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
}

func (f *frontEnv) url(path string) string { return "https://" + f.httpsAddr + path }

// echoRegion answers with what it saw: protocol-independent facts the
// tests compare.
func echoRegion(t *testing.T) *httptest.Server {
	t.Helper()
	big := bigBody(1 << 20)
	g := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write(big)
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			for { // heartbeats until the client goes (a proxy learns of that when it writes)
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := io.WriteString(w, ": ping\n\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		default:
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s %s xfp=%s len=%d sha=%x", r.Method, r.URL.RequestURI(), r.Header.Get("X-Forwarded-Proto"), len(b), sha256.Sum256(b))
		}
	}))
	t.Cleanup(g.Close)
	return g
}

// reader reads whole answers: reader{t}.all(client.Get(url)).
type reader struct{ t *testing.T }

func (r reader) all(resp *http.Response, err error) (*http.Response, string) {
	t := r.t
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// HTTPS with HTTP/1.1 and HTTP/2: routed like plain requests, with
// X-Forwarded-Proto https, X-LB-Region and HSTS; bodies both ways whole;
// streamed answers flushed as they come.
func TestFrontDoorServesHTTP1AndHTTP2(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	f := startFront(t, Options{}, FrontDoor{HTTP2: true, HSTS: "max-age=63072000"}, map[string]string{"r1": g.URL})
	upload := bigBody(200 << 10)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			hc := f.client(h2)
			resp, body := reader{t}.all(hc.Get(f.url("/a?b=c")))
			wantProto := map[bool]int{false: 1, true: 2}[h2]
			if resp.StatusCode != 200 || body != "GET /a?b=c xfp=https len=0 sha="+fmt.Sprintf("%x", sha256.Sum256(nil)) || resp.ProtoMajor != wantProto {
				t.Fatalf("GET: %d %s %q", resp.StatusCode, resp.Proto, body)
			}
			if resp.Header.Get("X-LB-Region") != "r1" || resp.Header.Get("Strict-Transport-Security") != "max-age=63072000" {
				t.Fatalf("headers %v, want X-LB-Region r1 and the HSTS value", resp.Header)
			}
			want := fmt.Sprintf("POST /up xfp=https len=%d sha=%x", len(upload), sha256.Sum256(upload))
			_, body = reader{t}.all(hc.Post(f.url("/up"), "application/octet-stream", bytes.NewReader(upload)))
			if body != want {
				t.Fatalf("upload with a length: %q, want %q", body, want)
			}
			pr, pw := io.Pipe()
			go func() { _, _ = pw.Write(upload); _ = pw.Close() }()
			_, body = reader{t}.all(hc.Post(f.url("/up"), "application/octet-stream", pr)) // no length: chunked or h2 DATA frames
			if body != want {
				t.Fatalf("upload without a length: %q, want %q", body, want)
			}
			_, body = reader{t}.all(hc.Get(f.url("/big")))
			if body != string(bigBody(1<<20)) {
				t.Fatalf("1 MiB answer: %d bytes, want it whole", len(body))
			}
			resp, err := hc.Get(f.url("/events"))
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			_ = resp.Body.Close()
			if err != nil || line != "data: first\n" {
				t.Fatalf("first event %q %v, want it while the stream is still open", line, err)
			}
		})
	}
	// The plain listener has no HSTS and says http.
	resp, body := reader{t}.all(client().Get(f.r.url + "/p"))
	if resp.Header.Get("Strict-Transport-Security") != "" || !strings.Contains(body, "xfp=http ") {
		t.Fatalf("plain listener: HSTS %q, body %q", resp.Header.Get("Strict-Transport-Security"), body)
	}
	if f.count("ok") == 0 {
		t.Fatal("no successful handshake counted")
	}
}

// HTTP/2 streams get the plain path's retries: a dead region beside a good
// one costs no request.
func TestFrontDoorHTTP2Retries(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	f := startFront(t, Options{}, FrontDoor{HTTP2: true}, map[string]string{"good": g.URL, "dead": "http://" + deadAddr(t)})
	hc := f.client(true)
	for i := range 10 {
		resp, body := reader{t}.all(hc.Get(f.url(fmt.Sprintf("/r%d", i))))
		if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "good" || !strings.HasPrefix(body, "GET /r") {
			t.Fatalf("request %d: %d %q from %q", i, resp.StatusCode, body, resp.Header.Get("X-LB-Region"))
		}
	}
}

// ROUTER_HTTPS_REDIRECT: plain requests get 308 to the HTTPS address,
// except ACME HTTP-01 challenges, which are proxied.
func TestFrontDoorRedirect(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	f := startFront(t, Options{}, FrontDoor{RedirectPort: 8443}, map[string]string{"r1": g.URL})
	c, br := bbDial(t, f.r)
	bbWrite(t, c, "GET /a/b?c=d HTTP/1.1\r\nHost: shop.example:8000\r\n\r\n")
	resp, _ := bbRead(t, br, "GET")
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://shop.example:8443/a/b?c=d" {
		t.Fatalf("redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	bbWrite(t, c, "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	resp, body := bbRead(t, br, "GET")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /.well-known/acme-challenge/tok") {
		t.Fatalf("ACME challenge: %d %q, want it proxied", resp.StatusCode, body)
	}
	// HTTPS itself is served.
	resp, _ = reader{t}.all(f.client(false).Get(f.url("/x")))
	if resp.StatusCode != 200 {
		t.Fatalf("https: %d", resp.StatusCode)
	}
}

// ACME: HTTP-01 requests are answered by the hook on both listeners (the
// event loop hands them to the general path, and the connection stays
// usable), unknown tokens are proxied, and a TLS-ALPN-01 validation
// (acme-tls/1 alone) gets its handshake and then the connection is closed.
func TestFrontDoorACMEChallenges(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	var asked atomic.Int64
	var hellos sync.Map                        // SNI -> offered protocols, as GetCertificate saw them
	var served atomic.Pointer[tls.Certificate] // startFront's, set before any handshake
	fd := FrontDoor{
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			hellos.Store(h.ServerName, strings.Join(h.SupportedProtos, ","))
			return served.Load(), nil
		}},
		ALPNChallenge: true,
		HTTP2:         true,
		ACMEChallenge: func(ctx *fasthttp.RequestCtx) bool {
			asked.Add(1)
			if string(ctx.Path()) != "/.well-known/acme-challenge/known" {
				return false
			}
			ctx.SetContentType("text/plain")
			ctx.SetBodyString("known.thumbprint")
			return true
		},
	}
	f := startFront(t, Options{}, fd, map[string]string{"r1": g.URL})
	served.Store(&f.cert)
	c, br := bbDial(t, f.r)
	for i := range 2 {
		bbWrite(t, c, "GET /.well-known/acme-challenge/known HTTP/1.1\r\nHost: shop.example\r\n\r\n")
		resp, body := bbRead(t, br, "GET")
		if resp.StatusCode != 200 || body != "known.thumbprint" {
			t.Fatalf("challenge %d: %d %q", i, resp.StatusCode, body)
		}
	}
	bbWrite(t, c, "GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	if resp, body := bbRead(t, br, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /.well-known/acme-challenge/other") {
		t.Fatalf("unknown token: %d %q, want it proxied", resp.StatusCode, body)
	}
	bbWrite(t, c, "GET /plain HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	if resp, body := bbRead(t, br, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /plain") {
		t.Fatalf("plain request after the challenges: %d %q", resp.StatusCode, body)
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("the hook saw %d requests, want the 3 challenge paths only", n)
	}
	if _, body := (reader{t}).all(f.client(false).Get(f.url("/.well-known/acme-challenge/known"))); body != "known.thumbprint" {
		t.Fatalf("challenge over HTTPS: %q", body)
	}

	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", f.httpsAddr,
		&tls.Config{ServerName: "alpn.example", RootCAs: f.roots, InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}}) //nolint:gosec // the test CA did not sign for alpn.example
	if err != nil {
		t.Fatalf("TLS-ALPN-01 handshake: %v", err)
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; p != "acme-tls/1" {
		t.Fatalf("negotiated %q, want acme-tls/1", p)
	}
	if v, _ := hellos.Load("alpn.example"); v != "acme-tls/1" {
		t.Errorf("GetCertificate saw protocols %q, want acme-tls/1 alone", v)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after an acme-tls/1 handshake: read %d, %v; want the connection closed (EOF)", n, err)
	}
	// Ordinary clients still get h2 or http/1.1, never acme-tls/1.
	resp, _ := reader{t}.all(f.client(true).Get(f.url("/x")))
	if resp.ProtoMajor != 2 {
		t.Errorf("h2 client got HTTP/%d", resp.ProtoMajor)
	}
}

// A client that never finishes its handshake is cut by the header timeout;
// garbage instead of a ClientHello is refused; neither stops the listener.
func TestFrontDoorHandshakeFailures(t *testing.T) {
	t.Parallel()
	g := echoRegion(t)
	// 2 s: short for the test, long enough for a handshake on a loaded
	// machine (the last request must not be cut by it).
	f := startFront(t, Options{ClientHeaderTimeout: 2 * time.Second}, FrontDoor{HTTP2: true}, map[string]string{"r1": g.URL})
	silent, err := net.Dial("tcp", f.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	garbage, err := net.Dial("tcp", f.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	_, _ = io.WriteString(garbage, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	t0 := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent client got bytes")
	}
	if took := time.Since(t0); took > 8*time.Second {
		t.Fatalf("silent client cut after %v, want about the 2 s header timeout", took)
	}
	poll.True(t, 5*time.Second, "a timeout and an error counted", func() bool { return f.count("timeout") >= 1 && f.count("error") >= 1 })
	resp, _ := reader{t}.all(f.client(true).Get(f.url("/still")))
	if resp.StatusCode != 200 {
		t.Fatalf("after bad handshakes: %d", resp.StatusCode)
	}
}

// WebSocket keeps working on the HTTPS listener (HTTP/1.1 upgrade over TLS).
func TestFrontDoorWebSocket(t *testing.T) {
	t.Parallel()
	region := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(ws, &msg) == nil {
			if websocket.Message.Send(ws, "echo "+msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(region.Close)
	f := startFront(t, Options{}, FrontDoor{HTTP2: true}, map[string]string{"r1": region.URL})
	cfg, err := websocket.NewConfig("wss://"+f.httpsAddr+"/ws", "https://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TlsConfig = &tls.Config{RootCAs: f.roots, ServerName: "localhost"}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, m := range []string{"a", "bb"} {
		var got string
		if err := websocket.Message.Send(ws, m); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo "+m {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

// Shutdown sends GOAWAY: a stream in flight finishes, and Shutdown returns.
func TestFrontDoorHTTP2GracefulShutdown(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	g := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	}))
	t.Cleanup(g.Close)
	f := startFront(t, Options{}, FrontDoor{HTTP2: true}, map[string]string{"r1": g.URL})
	hc := f.client(true)
	got := make(chan string, 1)
	go func() {
		resp, err := hc.Get(f.url("/slow"))
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-arrived
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- f.r.p.Shutdown(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned (%v) with a stream in flight", err)
	case <-time.After(200 * time.Millisecond): // a bound on "not yet", not synchronisation
	}
	close(release)
	if b := <-got; b != "done /slow" {
		t.Fatalf("in-flight stream: %q", b)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not return after the last stream")
	}
}

// CVE-2023-44487: a client opening and resetting streams as fast as it can
// neither makes the router grow nor stops it serving others.
// Not parallel: it counts the process's goroutines.
func TestFrontDoorHTTP2RapidReset(t *testing.T) {
	g := echoRegion(t)
	f := startFront(t, Options{}, FrontDoor{HTTP2: true}, map[string]string{"r1": g.URL})
	// Warm up, then take the baseline.
	reader{t}.all(f.client(true).Get(f.url("/warm")))
	before := runtime.NumGoroutine()

	c, err := tls.Dial("tcp", f.httpsAddr, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(c)
	fr := http2.NewFramer(bw, c)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "localhost"}, {Name: ":path", Value: "/reset"}} {
		_ = enc.WriteField(hf)
	}
	const attempts = 20000
	peak := before
	writeErr := error(nil)
	for i := range attempts {
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			writeErr = err
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			writeErr = err
			break
		}
		if i%500 == 0 {
			if err := bw.Flush(); err != nil {
				writeErr = err
				break
			}
			peak = max(peak, runtime.NumGoroutine())
		}
	}
	_ = bw.Flush()
	t.Logf("rapid reset: %d streams attempted, write error %v, goroutines %d before, %d at most during", attempts, writeErr, before, peak)
	// Bounded: the streams the router works on at once are bounded by its
	// stream limit (plus what the region and the test hold), whatever the
	// client sends.
	if peak > before+8*h2MaxStreams {
		t.Fatalf("goroutines grew from %d to %d under rapid reset", before, peak)
	}
	// Others are still served, and the router settles back.
	resp, _ := reader{t}.all(f.client(true).Get(f.url("/after")))
	if resp.StatusCode != 200 {
		t.Fatalf("after the attack: %d", resp.StatusCode)
	}
	_ = c.Close()
	// What stays is the keep-alive pool to the region the streams filled
	// (a goroutine per connection on the region's side).
	poll.True(t, 10*time.Second, "goroutines back near the baseline", func() bool { return runtime.NumGoroutine() <= before+2*h2MaxStreams+20 })
}
