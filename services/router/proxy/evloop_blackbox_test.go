//go:build linux

package proxy

// Black-box tests of the event loop's fast path (and of its hand-off to the
// fasthttp path), driven through the router's listener only: raw client
// connections on one side, httptest servers or hand-written raw TCP regions
// on the other.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// bbConnTimeout bounds every raw connection of these tests, so that a bug
// fails the test instead of hanging it.
const bbConnTimeout = 10 * time.Second

// bbLoopOn reports whether startRouter serves with the event loop (the
// proxy suite also runs with ROUTER_TEST_EVENT_LOOP=false, on the fasthttp
// path); a few checks hold for the event loop's design only.
func bbLoopOn(r *testRouter) bool { return !r.p.opts.DisableEventLoop }

// bbDial opens a raw connection to the router, with a deadline.
func bbDial(t *testing.T, r *testRouter) (net.Conn, *bufio.Reader) {
	t.Helper()
	var c net.Conn
	var err error
	if r.dial != nil {
		c, err = r.dial()
	} else {
		c, err = net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(bbConnTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func bbWrite(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("writing to the router: %v", err)
	}
}

// bbRead reads one whole response (for a request of method) from br.
func bbRead(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %s: %v", method, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body of the response to %s (status %d, %d bytes so far): %v", method, resp.StatusCode, len(b), err)
	}
	return resp, string(b)
}

// bbExpectClosed asserts that the router closes c with nothing more to
// read (EOF or a reset; a timeout means it kept the connection open).
func bbExpectClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := br.Peek(1)
	switch {
	case len(b) > 0:
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("unexpected bytes after the answer: %q", rest)
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("the router did not close the connection")
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("reading the close: %v", err)
	}
}

// bbCheck asserts a response's status, body and region header.
func bbCheck(t *testing.T, what string, resp *http.Response, body string, status int, wantBody, region string) {
	t.Helper()
	if resp.StatusCode != status || body != wantBody || resp.Header.Get("X-LB-Region") != region {
		t.Fatalf("%s: got %d %q region %q; want %d %q region %q", what, resp.StatusCode, body, resp.Header.Get("X-LB-Region"), status, wantBody, region)
	}
}

// bbEchoRegion answers "METHOD URI|body" and counts its requests.
func bbEchoRegion(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%s %s|%s", r.Method, r.URL.RequestURI(), b)
	}))
	t.Cleanup(s.Close)
	return s, hits
}

// bbRawRegion is a hand-written region: each connection's requests are read
// with net/http and answered by answer, which writes raw bytes and returns
// false to close the connection.
type bbRawRegion struct {
	url   string
	conns atomic.Int64
	reqs  atomic.Int64
}

func bbStartRawRegion(t *testing.T, answer func(c net.Conn, br *bufio.Reader, req *http.Request, body []byte) bool) *bbRawRegion {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := &bbRawRegion{url: "http://" + ln.Addr().String()}
	serveConns(t, ln, func(c net.Conn) {
		reg.conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			reg.reqs.Add(1)
			if !answer(c, br, req, body) {
				return
			}
		}
	})
	return reg
}

// bbOK is a raw 200 answer with a Content-Length.
func bbOK(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// bbCountingWriter counts what a region handler managed to write.
type bbCountingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c bbCountingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// bbWaitStalled waits until n stops growing for a while: the writer is held
// back by a full pipe.
func bbWaitStalled(t *testing.T, n *atomic.Int64, what string) int64 {
	t.Helper()
	last, since := n.Load(), time.Now()
	poll.Until(t, 15*time.Second, what, func() error {
		cur := n.Load()
		if cur != last || cur == 0 {
			last, since = cur, time.Now()
			return fmt.Errorf("still writing: %d bytes", cur)
		}
		if time.Since(since) < 300*time.Millisecond {
			return fmt.Errorf("stalled at %d bytes for %v only", cur, time.Since(since))
		}
		return nil
	})
	return last
}

// 1. Pipelining: requests sent in one write are answered in order.
func TestBlackboxPipelinedRequestsAnsweredInOrder(t *testing.T) {
	t.Parallel()
	region, hits := bbEchoRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /second?x=2 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /third/3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []string{"GET /first|", "GET /second?x=2|", "GET /third/3|"} {
		resp, body := bbRead(t, br, http.MethodGet)
		bbCheck(t, want, resp, body, 200, want, "r1")
		if resp.Close {
			t.Fatalf("%s: the router asked to close a keep-alive connection", want)
		}
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("region got %d requests, want 3", n)
	}
}

// A pipelined request asking to close ends the connection after its answer:
// what the client sent after it is not served.
func TestBlackboxPipelinedConnectionClose(t *testing.T) {
	t.Parallel()
	region, hits := bbEchoRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"+
		"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := bbRead(t, br, "GET")
	bbCheck(t, "GET /a", resp, body, 200, "GET /a|", "r1")
	resp, body = bbRead(t, br, "GET")
	bbCheck(t, "GET /b", resp, body, 200, "GET /b|", "r1")
	if !resp.Close {
		t.Fatalf("answer to a Connection: close request does not say close: %v", resp.Header)
	}
	bbExpectClosed(t, c, br)
	if n := hits.Load(); n != 2 {
		t.Fatalf("region got %d requests, want 2 (nothing after the close)", n)
	}
}

// Pipelined requests the router answers itself (no region answers): the
// errors come in order, one per request, and the connection stays usable.
func TestBlackboxPipelinedRouterErrorsInOrder(t *testing.T) {
	t.Parallel()
	r := startRouter(t, Options{OutlierConsecutive: -1}, model.StrategyRoundRobin, map[string]string{"gone": "http://" + deadAddr(t)})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for i, m := range []string{"GET", "POST", "GET"} {
		resp, body := bbRead(t, br, m)
		var e struct{ Error, Code string }
		if resp.StatusCode != 503 || resp.Header.Get("X-LB-Region") != "gone" || json.Unmarshal([]byte(body), &e) != nil || e.Code != "no_region_available" {
			t.Fatalf("request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
		if resp.Close {
			t.Fatalf("request %d: the router closed after its own error", i)
		}
	}
	bbWrite(t, c, "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := bbRead(t, br, "GET"); resp.StatusCode != 503 {
		t.Fatalf("after the pipeline: %d", resp.StatusCode)
	}
}

// Many pipelined requests, GETs and POSTs with bodies, more than the loop's
// 16 KiB read buffer holds, with heads straddling its end: all answered, in
// order, each with its own body.
func TestBlackboxPipelineLargerThanReadBuffer(t *testing.T) {
	t.Parallel()
	region, hits := bbEchoRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	const n = 400
	var sb strings.Builder
	want := make([]string, n)
	methods := make([]string, n)
	for i := range n {
		path := fmt.Sprintf("/p%d/%s", i, strings.Repeat("x", i%97))
		if i%4 == 3 {
			body := strings.Repeat(string(rune('a'+i%26)), i%300+1)
			fmt.Fprintf(&sb, "POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
			want[i], methods[i] = "POST "+path+"|"+body, http.MethodPost
		} else {
			fmt.Fprintf(&sb, "GET %s HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n", path, i)
			want[i], methods[i] = "GET "+path+"|", http.MethodGet
		}
	}
	if sb.Len() < 32<<10 {
		t.Fatalf("pipeline of %d bytes is too short for the test", sb.Len())
	}
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, sb.String())
		werr <- err
	}()
	for i := range n {
		resp, body := bbRead(t, br, methods[i])
		bbCheck(t, fmt.Sprintf("request %d", i), resp, body, 200, want[i], "r1")
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if got := hits.Load(); got != n {
		t.Fatalf("region got %d requests, want %d", got, n)
	}
}

// 2. A request the loop hands to the fasthttp path in the middle of a
// keep-alive connection (chunked upload, Expect: 100-continue), between
// requests the loop serves itself.
func TestBlackboxHandoffMidConnection(t *testing.T) {
	t.Parallel()
	region, _ := bbEchoRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	get1 := "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
	chunked := "POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n"
	get3 := "GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
	wants := []string{"GET /one|", "POST /two|abcdefg", "GET /three|"}
	methods := []string{"GET", "POST", "GET"}

	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		for i, req := range []string{get1, chunked, get3} {
			bbWrite(t, c, req)
			resp, body := bbRead(t, br, methods[i])
			bbCheck(t, wants[i], resp, body, 200, wants[i], "r1")
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, get1+chunked+get3)
		for i := range wants {
			resp, body := bbRead(t, br, methods[i])
			bbCheck(t, wants[i], resp, body, 200, wants[i], "r1")
		}
	})
	t.Run("absolute-form and HTTP/1.0", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		steps := []struct{ raw, method, want string }{
			{get1, "GET", "GET /one|"},
			{"GET http://front.example/abs?q=1 HTTP/1.1\r\nHost: front.example\r\n\r\n", "GET", "GET /abs?q=1|"},
			{"PUT /put HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz", "PUT", "PUT /put|xyz"},
			{"GET /ten HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", "GET", "GET /ten|"},
			{get3, "GET", "GET /three|"},
		}
		for _, st := range steps {
			bbWrite(t, c, st.raw)
			resp, body := bbRead(t, br, st.method)
			bbCheck(t, st.want, resp, body, 200, st.want, "r1")
			if resp.Close {
				t.Fatalf("%s: the router closed a keep-alive connection", st.want)
			}
		}
	})
	t.Run("expect-continue", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, get1)
		resp, body := bbRead(t, br, "GET")
		bbCheck(t, "first GET", resp, body, 200, "GET /one|", "r1")
		bbWrite(t, c, "POST /cont HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 100 {
			bbWrite(t, c, "hello")
			resp, body = bbRead(t, br, "POST")
		} else {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("no 100 Continue before the body was sent: %d %q", resp.StatusCode, b)
		}
		bbCheck(t, "POST with Expect", resp, body, 200, "POST /cont|hello", "r1")
		bbWrite(t, c, get3)
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "GET after", resp, body, 200, "GET /three|", "r1")
	})
}

// Request bodies around the size the loop buffers itself (its 16 KiB read
// buffer less the head): below it the loop serves them, above it the
// fasthttp path; both relay the body intact, on one connection.
func TestBlackboxBodySizeAroundTheBufferLimit(t *testing.T) {
	t.Parallel()
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	head := func(n int) string {
		return fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %05d\r\n\r\n", n)
	}
	limit := 16<<10 - len(head(0))
	for _, n := range []int{0, 1, limit - 1, limit, limit + 1, 40000, 10} {
		body := bytes.Repeat([]byte{byte('a' + n%26)}, n)
		bbWrite(t, c, head(n)+string(body))
		resp, got := bbRead(t, br, "POST")
		want := fmt.Sprintf("%d %x", n, sha256.Sum256(body))
		bbCheck(t, fmt.Sprintf("body of %d bytes", n), resp, got, 200, want, "r1")
	}
}

// A request head trickled in one byte per write is answered.
func TestBlackboxRequestTrickledByteByByte(t *testing.T) {
	t.Parallel()
	region, _ := bbEchoRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	req := "POST /slow?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
	for i := range len(req) {
		bbWrite(t, c, req[i:i+1])
	}
	resp, body := bbRead(t, br, "POST")
	bbCheck(t, "trickled", resp, body, 200, "POST /slow?q=1|body", "r1")
}

// 3. A client that half-closes after its request still gets the whole
// answer, then the router closes.
func TestBlackboxClientHalfClose(t *testing.T) {
	t.Parallel()
	const big = 1 << 20
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.Copy(w, newPattern(big))
			return
		}
		_, _ = io.WriteString(w, "path "+r.URL.Path)
	}))
	t.Cleanup(region.Close)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})

	t.Run("one request", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		resp, body := bbRead(t, br, "GET")
		bbCheck(t, "after half-close", resp, body, 200, "path /small", "r1")
		bbExpectClosed(t, c, br)
	})
	t.Run("large answer", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != big || fmt.Sprintf("%x", h.Sum(nil)) != patternHash(big) {
			t.Fatalf("got %d of %d bytes, err %v, hash ok %v", n, big, err, fmt.Sprintf("%x", h.Sum(nil)) == patternHash(big))
		}
		bbExpectClosed(t, c, br)
	})
	// Pipelined requests, then the half-close: every request sent before
	// the end-of-file is answered, as net/http servers and the router's own
	// fasthttp path (the control) do.
	t.Run("pipelined then half-close", func(t *testing.T) {
		t.Parallel()
		bbPipelinedThenHalfClose(t, r)
	})
	t.Run("pipelined then half-close, fasthttp path (control)", func(t *testing.T) {
		t.Parallel()
		bbPipelinedThenHalfClose(t, startRouter(t, Options{DisableEventLoop: true}, model.StrategyRoundRobin, map[string]string{"r1": region.URL}))
	})
}

func bbPipelinedThenHalfClose(t *testing.T, r *testRouter) {
	t.Helper()
	for _, handoff := range []bool{false, true} {
		second := "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
		if handoff { // one the loop hands to the fasthttp path
			second = "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
		}
		c, br := bbDial(t, r)
		bbWrite(t, c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"+second+"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
		bbHalfCloseAndReadAll(t, c, br, handoff)
	}
}

func bbHalfCloseAndReadAll(t *testing.T, c net.Conn, br *bufio.Reader, handoff bool) {
	t.Helper()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{"/a", "/b", "/c"} {
		method := "GET"
		if handoff && i == 1 {
			method = "POST"
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response to %s %s of 3 pipelined before the half-close (hand-off %v): %v", method, p, handoff, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		bbCheck(t, method+" "+p, resp, string(b), 200, "path "+p, "r1")
	}
	bbExpectClosed(t, c, br)
}

// 4. Chunked answers from a hand-written region, with chunk extensions, a
// trailer, odd spacing and sizes, and split into tiny writes: net/http
// reads the exact body through the router, and the connection stays usable.
func TestBlackboxChunkedResponseFromRawRegion(t *testing.T) {
	t.Parallel()
	extHead := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Kind: ext\r\n\r\n"
	extBody := "5;name=value\r\nhello\r\n" +
		"6;q=\"a;b\"\r\n world\r\n" +
		"A;x\r\n0123456789\r\n" +
		"0;last=1\r\nX-Checksum: abc\r\nX-Other: def\r\n\r\n"
	extWant := "hello world0123456789"
	// Chunk extensions with optional whitespace (RFC 9112 7.1.1 BWS), which
	// net/http's client does not accept: checked on the raw bytes.
	bwsBody := "5 ;a=b\r\nhello\r\n3\t; x ; y=\"q;r\"\r\nabc\r\n0 ;z\r\nT: 1\r\n\r\n"

	var bigRaw, bigWant strings.Builder
	for i, n := range []int{1, 4095, 4096, 65536, 100000, 3} {
		chunk := strings.Repeat(string(rune('A'+i)), n)
		fmt.Fprintf(&bigRaw, "%X\r\n%s\r\n", n, chunk)
		bigWant.WriteString(chunk)
	}
	bigRaw.WriteString("0\r\n\r\n")

	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		switch req.URL.Path {
		case "/ext":
			_, err := io.WriteString(c, extHead+extBody)
			return err == nil
		case "/bws":
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+bwsBody)
			return err == nil
		case "/tiny":
			all := extHead + extBody
			for i := 0; i < len(all); {
				n := min(1+i%3, len(all)-i)
				if _, err := io.WriteString(c, all[i:i+n]); err != nil {
					return false
				}
				i += n
				time.Sleep(time.Millisecond) // the region's pace, not synchronisation
			}
			return true
		case "/big":
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+bigRaw.String())
			return err == nil
		}
		return false
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	// The event loop relays a chunked body byte for byte (extensions with
	// whitespace too, RFC 9112 7.1.1 BWS), and finds its end. The fasthttp
	// path decodes and re-encodes, and net/http's client rejects BWS, so
	// this part is the loop's only.
	c, br := bbDial(t, r)
	rawPaths := []string{"/bws", "/ext", "/bws"}
	if !bbLoopOn(r) {
		rawPaths = nil
	}
	for _, p := range rawPaths {
		bbWrite(t, c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		head, err := br.ReadString('\n')
		for err == nil {
			var l string
			l, err = br.ReadString('\n')
			head += l
			if l == "\r\n" {
				break
			}
		}
		want := bwsBody
		if p == "/ext" {
			want = extBody
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != want || !strings.HasPrefix(head, "HTTP/1.1 200 ") {
			t.Fatalf("raw %s: head %q body %q (%v), want body %q", p, head, got, err, want)
		}
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for round := range 2 {
		for _, tc := range []struct{ path, want string }{{"/ext", extWant}, {"/tiny", extWant}, {"/big", bigWant.String()}} {
			resp, err := cl.Get(r.url + tc.path)
			if err != nil {
				t.Fatalf("round %d %s: %v", round, tc.path, err)
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatalf("round %d %s: body: %v (after %d bytes)", round, tc.path, err, len(b))
			}
			if resp.StatusCode != 200 || string(b) != tc.want || resp.Header.Get("X-LB-Region") != "raw" {
				t.Fatalf("round %d %s: %d region %q body %d bytes (want %d), equal %v", round, tc.path, resp.StatusCode,
					resp.Header.Get("X-LB-Region"), len(b), len(tc.want), string(b) == tc.want)
			}
			// The loop relays the trailer section as sent (the fasthttp path
			// re-encodes the body and may drop trailers, RFC 9110 6.5.1).
			if tc.want == extWant && bbLoopOn(r) && (resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("X-Other") != "def") {
				t.Fatalf("round %d %s: trailers %v", round, tc.path, resp.Trailer)
			}
			if !resp.Uncompressed && len(resp.TransferEncoding) != 1 {
				t.Fatalf("round %d %s: transfer encoding %v", round, tc.path, resp.TransferEncoding)
			}
		}
	}
}

// A chunked answer that breaks its framing mid-body must not reach the
// client as a complete body: the client sees an error, and soon (the region
// keeps the connection open, so only the router can end it).
func TestBlackboxMalformedChunkedResponseIsCutOff(t *testing.T) {
	t.Parallel()
	region := bbStartRawRegion(t, func(c net.Conn, br *bufio.Reader, req *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		if strings.HasPrefix(req.URL.Path, "/later") {
			time.Sleep(20 * time.Millisecond) // the region's think time: the head goes out first
		}
		switch strings.TrimPrefix(req.URL.Path, "/later") {
		case "/badsize":
			_, _ = io.WriteString(c, "XYZ\r\nabc\r\n0\r\n\r\n")
		case "/hugesize":
			_, _ = io.WriteString(c, "FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n")
		case "/nocrlf":
			_, _ = io.WriteString(c, "3\r\nabcXY0\r\n\r\n")
		}
		_, _ = io.Copy(io.Discard, br) // keeps the connection until the router closes it
		return false
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	for _, path := range []string{"/badsize", "/hugesize", "/nocrlf", "/later/badsize", "/later/hugesize", "/later/nocrlf"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			cl := &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{}}
			start := time.Now()
			resp, err := cl.Get(r.url + path)
			if err != nil {
				return // cut off before the head: fine
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				t.Fatalf("malformed chunked body read as complete: %d %q", resp.StatusCode, b)
			}
			if err == nil && (resp.StatusCode != 502 || resp.Header.Get("X-LB-Region") != "raw") {
				t.Fatalf("refused with %d %q region %q, want a 502 naming the region", resp.StatusCode, b, resp.Header.Get("X-LB-Region"))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the broken answer was noticed after %v only (%v)", d, err)
			}
		})
	}
}

// A region's answer with both Content-Length and Transfer-Encoding: chunked
// is relayed as chunked only (the Content-Length dropped, RFC 9112 6.3), and
// the connection stays in step.
func TestBlackboxResponseWithContentLengthAndChunked(t *testing.T) {
	t.Parallel()
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		if req.URL.Path == "/both" {
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			return err == nil
		}
		_, err := io.WriteString(c, bbOK("after"))
		return err == nil
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /both HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := bbRead(t, br, "GET")
	if resp.StatusCode == 502 {
		t.Logf("the router refused the answer with 502 (acceptable)")
	} else {
		bbCheck(t, "CL+TE answer", resp, body, 200, "hello", "raw")
		if _, ok := resp.Header["Content-Length"]; ok || resp.ContentLength != -1 {
			t.Fatalf("Content-Length relayed next to Transfer-Encoding: %v", resp.Header)
		}
	}
	bbWrite(t, c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body = bbRead(t, br, "GET")
	bbCheck(t, "next", resp, body, 200, "after", "raw")
}

// 5. A close-delimited answer (no Content-Length, not chunked, the body
// ends at the close): the client gets all of it, marked Connection: close,
// and then the router closes the client connection.
func TestBlackboxCloseDelimitedResponse(t *testing.T) {
	t.Parallel()
	const size = 512 << 10
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		status := "HTTP/1.1 200 OK"
		if req.URL.Path == "/http10" {
			status = "HTTP/1.0 200 OK"
		}
		if _, err := io.WriteString(c, status+"\r\nContent-Type: text/plain\r\nX-Kind: close-delimited\r\n\r\n"); err != nil {
			return false
		}
		_, _ = io.Copy(c, newPattern(size))
		return false
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	want := patternHash(size)
	for _, path := range []string{"/http11", "/http10"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			c, br := bbDial(t, r)
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			bbWrite(t, c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil || n != size || fmt.Sprintf("%x", h.Sum(nil)) != want {
				t.Fatalf("body: %d of %d bytes, err %v, hash ok %v (answer %s, Connection: close %v, Transfer-Encoding %v)",
					n, size, err, fmt.Sprintf("%x", h.Sum(nil)) == want, resp.Proto, resp.Close, resp.TransferEncoding)
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "raw" || resp.Header.Get("X-Kind") != "close-delimited" {
				t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
			}
			if resp.Close {
				bbExpectClosed(t, c, br)
				return
			}
			// Re-framed (the fasthttp path chunks it): the connection must
			// then be in step for the next request.
			if bbLoopOn(r) {
				t.Fatalf("close-delimited answer relayed without Connection: close: %v", resp.Header)
			}
			bbWrite(t, c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err = http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			n, err = io.Copy(io.Discard, resp.Body)
			if err != nil || n != size {
				t.Fatalf("second answer on the connection: %d of %d bytes, err %v", n, size, err)
			}
		})
	}
	t.Run("net/http client, twice", func(t *testing.T) {
		t.Parallel()
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
		for i := range 2 {
			resp, err := cl.Get(r.url + "/http11")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			_ = resp.Body.Close()
			if err != nil || n != size || fmt.Sprintf("%x", h.Sum(nil)) != want {
				t.Fatalf("request %d: %d bytes, err %v", i, n, err)
			}
		}
	})
}

// 6. A region answer that cannot be relayed (garbage status line, two
// different Content-Length values) is a 502 JSON answer naming the region;
// a POST is not retried elsewhere, a GET is.
func TestBlackboxMalformedRegionAnswerIs502(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, answer string }{
		{"garbage status line", "SPDY/9 banana split\r\nContent-Length: 2\r\n\r\nok"},
		{"non-digit status", "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"},
		{"two Content-Length values", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"},
		{"unasked-for 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\nraw bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
				_, _ = io.WriteString(c, tc.answer)
				return false
			})
			var goodHits atomic.Int64
			good := okRegion("good", &goodHits)
			defer good.Close()
			r := startRouter(t, Options{OutlierConsecutive: -1, BudgetFloor: 1000}, model.StrategyRoundRobin,
				map[string]string{"bad": bad.url, "good": good.URL})
			c, br := bbDial(t, r)
			const n = 6
			got502 := 0
			for i := range n {
				bbWrite(t, c, "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
				resp, body := bbRead(t, br, "POST")
				switch resp.StatusCode {
				case 200:
					bbCheck(t, fmt.Sprintf("POST %d", i), resp, body, 200, "good", "good")
				case 502:
					got502++
					var e struct{ Error, Code string }
					if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "bad_gateway" || e.Error == "" {
						t.Fatalf("POST %d: 502 body %q: %v", i, body, err)
					}
					if resp.Header.Get("X-LB-Region") != "bad" || resp.Header.Get("Content-Type") != "application/json" {
						t.Fatalf("POST %d: 502 headers %v", i, resp.Header)
					}
				default:
					t.Fatalf("POST %d: status %d %q %v, want the router's 502 or the good region's 200", i, resp.StatusCode, body, resp.Header)
				}
			}
			if got502 != n/2 || goodHits.Load() != n/2 || bad.reqs.Load() != n/2 {
				t.Fatalf("POST: %d answers 502, good region %d requests, bad region %d; want %d each (no retry for POST)",
					got502, goodHits.Load(), bad.reqs.Load(), n/2)
			}
			// A GET meeting the bad region goes once to the good one.
			for i := range n {
				bbWrite(t, c, "GET /read HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, body := bbRead(t, br, "GET")
				bbCheck(t, fmt.Sprintf("GET %d", i), resp, body, 200, "good", "good")
			}
			if bad.reqs.Load() != n {
				t.Fatalf("bad region got %d requests in all, want %d", bad.reqs.Load(), n)
			}
		})
	}
}

// 7. Backpressure: a region sends a large body fast to a client that does
// not read. The router holds the region back instead of buffering, resumes
// when the client reads, and the body arrives whole.
func TestBlackboxBackpressureSlowClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		size    int64
		chunked bool
	}{{"content-length", 64 << 20, false}, {"chunked", 48 << 20, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var written atomic.Int64
			finished := make(chan error, 1)
			region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/big" {
					_, _ = io.WriteString(w, "small")
					return
				}
				if !tc.chunked {
					w.Header().Set("Content-Length", strconv.FormatInt(tc.size, 10))
				}
				_, err := io.Copy(bbCountingWriter{w: w, n: &written}, newPattern(tc.size))
				finished <- err
			}))
			defer region.Close()
			r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
			c, br := bbDial(t, r)
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			want := make(chan string, 1)
			go func() { want <- patternHash(tc.size) }()
			bbWrite(t, c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")

			stalled := bbWaitStalled(t, &written, "the region held back by the unread client")
			if stalled >= tc.size-(8<<20) {
				t.Fatalf("the region wrote %d of %d bytes to a client that read nothing: the router buffers instead of pushing back", stalled, tc.size)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-LB-Region") != "r1" {
				t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
			}
			h := sha256.New()
			// Read a little, then stop again: the region must resume, then
			// be held back once more.
			if _, err := io.CopyN(h, resp.Body, 8<<20); err != nil {
				t.Fatal(err)
			}
			poll.True(t, 10*time.Second, "the region resumed once the client read", func() bool { return written.Load() > stalled })
			second := bbWaitStalled(t, &written, "the region held back again")
			t.Logf("region held back at %d MiB, then at %d MiB after the client read 8 MiB", stalled>>20, second>>20)
			if second >= tc.size {
				t.Fatalf("the region finished while the client still had %d bytes to read", tc.size-8<<20)
			}
			n, err := io.Copy(h, resp.Body)
			n += 8 << 20
			if err != nil || n != tc.size {
				t.Fatalf("body: %d of %d bytes, err %v", n, tc.size, err)
			}
			if got := fmt.Sprintf("%x", h.Sum(nil)); got != <-want {
				t.Fatalf("body of %d bytes arrived corrupted", n)
			}
			if err := <-finished; err != nil {
				t.Fatalf("region write: %v", err)
			}
			// The connection is still in step.
			bbWrite(t, c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, body := bbRead(t, br, "GET")
			bbCheck(t, "after the large body", resp, body, 200, "small", "r1")
		})
	}
}

// A client that goes away in the middle of a large answer: the router lets
// go of the region's connection (the region's write ends) instead of
// keeping it paused forever, and serves the next client.
func TestBlackboxClientGoneMidBody(t *testing.T) {
	t.Parallel()
	const size = 256 << 20
	var written atomic.Int64
	var done atomic.Bool
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "small")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = io.Copy(bbCountingWriter{w: w, n: &written}, newPattern(size))
		done.Store(true)
	}))
	defer region.Close()
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"r1": region.URL})
	c, br := bbDial(t, r)
	bbWrite(t, c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	bbWaitStalled(t, &written, "the region held back by the client")
	_ = c.Close()
	poll.True(t, 10*time.Second, "the region's write to end after the client left", done.Load)
	if w := written.Load(); w >= size {
		t.Logf("the router drained the whole answer (%d bytes)", w)
	}
	resp2, err := client().Get(r.url + "/small")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	_ = resp2.Body.Close()
	if resp2.StatusCode != 200 || string(b) != "small" {
		t.Fatalf("next client: %d %q", resp2.StatusCode, b)
	}
}

// bbStrictRegion is a raw region that records every request it parses and
// every way the router's requests break strict HTTP/1.1 framing.
type bbStrictRegion struct {
	url        string
	mu         sync.Mutex
	seen       []string
	violations []string
}

func (s *bbStrictRegion) snapshot() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...), append([]string(nil), s.violations...)
}

func bbStartStrictRegion(t *testing.T) *bbStrictRegion {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bbStrictRegion{url: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		cmu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	violate := func(f string, a ...any) {
		s.mu.Lock()
		s.violations = append(s.violations, fmt.Sprintf(f, a...))
		s.mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var lines []string
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if !strings.HasSuffix(l, "\r\n") {
							violate("bare LF in %q", l)
						}
						l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
						if strings.Contains(l, "\r") {
							violate("bare CR in %q", l)
						}
						if l == "" {
							break
						}
						lines = append(lines, l)
					}
					if len(lines) == 0 {
						violate("empty request line")
						continue
					}
					parts := strings.Split(lines[0], " ")
					if len(parts) != 3 || parts[2] != "HTTP/1.1" {
						violate("request line %q", lines[0])
						return
					}
					var cl []string
					te := ""
					for _, h := range lines[1:] {
						name, val, ok := strings.Cut(h, ":")
						if !ok || name == "" || strings.TrimRight(name, " \t") != name || strings.ContainsAny(name, " \t") {
							violate("header line %q", h)
							return
						}
						val = strings.TrimSpace(val)
						switch strings.ToLower(name) {
						case "content-length":
							cl = append(cl, val)
						case "transfer-encoding":
							if te != "" {
								violate("two Transfer-Encoding headers")
							}
							te = val
						}
					}
					if len(cl) > 1 {
						violate("%d Content-Length headers on %s", len(cl), lines[0])
					}
					if len(cl) > 0 && te != "" {
						violate("Content-Length and Transfer-Encoding on %s", lines[0])
					}
					var body []byte
					switch {
					case strings.EqualFold(te, "chunked"):
						body, err = io.ReadAll(httputil.NewChunkedReader(br))
						if err != nil {
							violate("chunked body: %v", err)
							return
						}
						for { // the trailer section
							l, err := br.ReadString('\n')
							if err != nil {
								return
							}
							if l == "\r\n" {
								break
							}
						}
					case te != "":
						violate("transfer-encoding %q", te)
						return
					case len(cl) > 0:
						n, err := strconv.Atoi(cl[0])
						if err != nil {
							violate("content-length %q", cl[0])
							return
						}
						body = make([]byte, n)
						if _, err := io.ReadFull(br, body); err != nil {
							return
						}
					}
					s.mu.Lock()
					s.seen = append(s.seen, parts[0]+" "+parts[1])
					s.mu.Unlock()
					answer := parts[0] + " " + parts[1] + "|" + string(body)
					if _, err := io.WriteString(c, bbOK(answer)); err != nil {
						return
					}
				}
			})
		}
	})
	return s
}

// 8. Request smuggling guards: requests whose framing is ambiguous are
// refused (4xx) or end the connection; the region never sees a request the
// client hid inside another one, and what reaches it is strictly framed.
func TestBlackboxRequestSmugglingGuards(t *testing.T) {
	t.Parallel()
	region := bbStartStrictRegion(t)
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"strict": region.url})
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	sl := strconv.Itoa(len(smuggled))
	tePrefixed := "0\r\n\r\n" + smuggled
	teWrapped := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	cases := []struct {
		name string
		raw  string
		// mustClose: a 2xx answer must be followed by the router closing
		// the connection (RFC 9112 6.1 for Content-Length with
		// Transfer-Encoding); otherwise a sentinel request must come next.
		mustClose bool
	}{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(tePrefixed)) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + tePrefixed, true},
		{"TE.CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + teWrapped, true},
		{"two Content-Length", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: " + sl + "\r\n\r\n" + smuggled, true},
		{"two Content-Length, longer first", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + sl + "\r\nContent-Length: 0\r\n\r\n" + smuggled, true},
		{"Content-Length list", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, " + sl + "\r\n\r\n" + smuggled, true},
		{"space before colon", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : " + sl + "\r\n\r\n" + smuggled, true},
		{"tab before colon", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length\t: " + sl + "\r\n\r\n" + smuggled, true},
		{"space before colon on TE", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: " + sl + "\r\n\r\n" + smuggled, true},
		{"obs-fold hides TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + sl + "\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\n\r\n" + smuggled, false},
		{"two Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + teWrapped, true},
		{"unknown Transfer-Encoding", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n" + teWrapped, true},
		{"bare LF request", "POST /a HTTP/1.1\nHost: x\nContent-Length: " + sl + "\n\n" + smuggled, false},
		{"bare LF hides Content-Length", "POST /a HTTP/1.1\r\nHost: x\r\nX-Pad: y\nContent-Length: " + sl + "\r\n\r\n" + smuggled, false},
		{"bare CR in header", "POST /a HTTP/1.1\r\nHost: x\r\nX-Pad: y\rContent-Length: " + sl + "\r\n\r\n" + smuggled, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := bbDial(t, r)
			bbWrite(t, c, tc.raw)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("no answer and no close: %v", err)
				}
				t.Logf("closed without an answer (%v)", err)
				return
			}
			t.Logf("answered %d", resp.StatusCode)
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			switch {
			case resp.StatusCode >= 400 && resp.StatusCode < 500:
				// Refused. Anything after must not be served as a request.
				_, _ = io.WriteString(c, "GET /sentinel HTTP/1.1\r\nHost: x\r\n\r\n")
				if resp2, err := http.ReadResponse(br, &http.Request{Method: "GET"}); err == nil {
					b2, _ := io.ReadAll(resp2.Body)
					if !strings.HasPrefix(string(b2), "GET /sentinel|") {
						t.Fatalf("after the %d, the router answered %d %q", resp.StatusCode, resp2.StatusCode, b2)
					}
				} else if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("after the %d the connection neither closed nor served", resp.StatusCode)
				}
			case resp.StatusCode == 200:
				if !strings.HasPrefix(string(b), "POST /a|") || strings.Contains(string(b), "/smuggled|") {
					t.Fatalf("answer %q", b)
				}
				if tc.mustClose {
					bbExpectClosed(t, c, br)
					break
				}
				bbWrite(t, c, "GET /sentinel HTTP/1.1\r\nHost: x\r\n\r\n")
				resp2, b2 := bbRead(t, br, "GET")
				bbCheck(t, "sentinel", resp2, b2, 200, "GET /sentinel|", "strict")
			default:
				t.Fatalf("status %d %q, want a 4xx or a close", resp.StatusCode, b)
			}
			seen, violations := region.snapshot()
			for _, s := range seen {
				if strings.Contains(s, "/smuggled") {
					t.Fatalf("the region saw the smuggled request; all it saw: %q", seen)
				}
			}
			if len(violations) > 0 {
				t.Fatalf("the router sent the region ill-framed requests: %q", violations)
			}
		})
	}
}

// 9. A region that closes every connection after one answer: every request
// of one client keep-alive connection still succeeds, and the client's
// connection stays open.
func TestBlackboxRegionClosesEveryConnection(t *testing.T) {
	t.Parallel()
	echo := func(req *http.Request, body []byte) string {
		return req.Method + " " + req.URL.Path + "|" + string(body)
	}
	// Each region is started per subtest: url and its request count.
	raw := func(answer func(a string) string) func(t *testing.T) (string, func() int64) {
		return func(t *testing.T) (string, func() int64) {
			reg := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, body []byte) bool {
				_, _ = io.WriteString(c, answer(echo(req, body)))
				return false
			})
			return reg.url, reg.reqs.Load
		}
	}
	noKeepAlive := func(t *testing.T) (string, func() int64) {
		var n atomic.Int64
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			b, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, echo(r, b))
		}))
		s.Config.SetKeepAlivesEnabled(false)
		s.Start()
		t.Cleanup(s.Close)
		return s.URL, n.Load
	}
	for _, tc := range []struct {
		name    string
		start   func(t *testing.T) (string, func() int64)
		methods []string
	}{
		{"SetKeepAlivesEnabled(false)", noKeepAlive, []string{"GET", "POST"}},
		{"raw Connection: close", raw(func(a string) string {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(a)) + "\r\n\r\n" + a
		}), []string{"GET", "POST"}},
		{"raw HTTP/1.0", raw(func(a string) string {
			return "HTTP/1.0 200 OK\r\nContent-Length: " + strconv.Itoa(len(a)) + "\r\n\r\n" + a
		}), []string{"GET", "POST"}},
		// Closing without saying so: the next request on that connection
		// fails, which only idempotent requests may be retried after.
		{"raw close without saying so", raw(bbOK), []string{"GET"}},
	} {
		for _, method := range tc.methods {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				t.Parallel()
				url, reqs := tc.start(t)
				r := startRouter(t, Options{OutlierConsecutive: -1}, model.StrategyRoundRobin, map[string]string{"r1": url})
				c, br := bbDial(t, r)
				const n = 50
				for i := range n {
					body := ""
					req := fmt.Sprintf("%s /i/%d HTTP/1.1\r\nHost: a\r\n", method, i)
					if method == "POST" {
						body = strings.Repeat("b", i+1)
						req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
					}
					bbWrite(t, c, req+"\r\n"+body)
					resp, got := bbRead(t, br, method)
					bbCheck(t, fmt.Sprintf("request %d", i), resp, got, 200, fmt.Sprintf("%s /i/%d|%s", method, i, body), "r1")
					if resp.Close {
						t.Fatalf("request %d: the region's close reached the client: the router's answer is %s with Connection %q",
							i, resp.Proto, resp.Header.Get("Connection"))
					}
				}
				if got := reqs(); got != n {
					t.Fatalf("region answered %d requests, want %d (each exactly once)", got, n)
				}
			})
		}
	}
}

// 10. HEAD (and 304) answers carry a Content-Length but no body: the client
// gets the headers, and the next request on the connection still works.
func TestBlackboxHEADWithContentLength(t *testing.T) {
	t.Parallel()
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		var a string
		switch {
		case req.Method == "HEAD":
			a = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Head: yes\r\n\r\n"
		case req.URL.Path == "/nm":
			a = "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"v1\"\r\n\r\n"
		default:
			a = bbOK("body of " + req.URL.Path)
		}
		_, err := io.WriteString(c, a)
		return err == nil
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	checkHead := func(t *testing.T, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != 200 || resp.ContentLength != 1000 || resp.Header.Get("X-Head") != "yes" || body != "" || resp.Header.Get("X-LB-Region") != "raw" {
			t.Fatalf("HEAD: %d length %d headers %v body %q", resp.StatusCode, resp.ContentLength, resp.Header, body)
		}
	}
	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := bbRead(t, br, "HEAD")
		checkHead(t, resp, body)
		bbWrite(t, c, "GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "GET after HEAD", resp, body, 200, "body of /g", "raw")
		bbWrite(t, c, "GET /nm HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n")
		resp, body = bbRead(t, br, "GET")
		if resp.StatusCode != 304 || body != "" || resp.Header.Get("ETag") != `"v1"` {
			t.Fatalf("304: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		bbWrite(t, c, "GET /g2 HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "GET after 304", resp, body, 200, "body of /g2", "raw")
	})
	t.Run("pipelined", func(t *testing.T) {
		t.Parallel()
		c, br := bbDial(t, r)
		bbWrite(t, c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\nHEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g3 HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := bbRead(t, br, "HEAD")
		checkHead(t, resp, body)
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "GET after HEAD", resp, body, 200, "body of /g", "raw")
		resp, body = bbRead(t, br, "HEAD")
		checkHead(t, resp, body)
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "GET after HEAD", resp, body, 200, "body of /g3", "raw")
	})
	t.Run("net/http client", func(t *testing.T) {
		t.Parallel()
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		for i := range 3 {
			resp, err := cl.Head(r.url + "/h")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || resp.ContentLength != 1000 {
				t.Fatalf("HEAD %d: %d length %d", i, resp.StatusCode, resp.ContentLength)
			}
			resp, err = cl.Get(r.url + "/g")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if string(b) != "body of /g" {
				t.Fatalf("GET %d: %q", i, b)
			}
		}
	})
}

// A region that answers with more bytes than its framing says (a second
// response glued to the first): the extra bytes are dropped with the
// connection, never served as the answer to a later request.
func TestBlackboxExtraBytesAfterAnswerNeverReachAnotherRequest(t *testing.T) {
	t.Parallel()
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		a := bbOK("path " + req.URL.Path)
		if req.URL.Path == "/split" {
			a = bbOK("ok") + bbOK("evil!")
		}
		_, err := io.WriteString(c, a)
		return err == nil
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	c, br := bbDial(t, r)
	for i := range 10 {
		bbWrite(t, c, "GET /split HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := bbRead(t, br, "GET")
		bbCheck(t, "split", resp, body, 200, "ok", "raw")
		p := fmt.Sprintf("/n/%d", i)
		bbWrite(t, c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body = bbRead(t, br, "GET")
		bbCheck(t, "request after the split answer", resp, body, 200, "path "+p, "raw")
	}
}

// Informational answers before the final one are not taken as the answer.
func TestBlackboxInformationalAnswersBeforeTheFinalOne(t *testing.T) {
	t.Parallel()
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		parts := []string{"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", bbOK("final " + req.URL.Path)}
		if req.URL.Path == "/together" {
			parts = []string{strings.Join(parts, "")}
		}
		for _, p := range parts {
			if _, err := io.WriteString(c, p); err != nil {
				return false
			}
			time.Sleep(5 * time.Millisecond) // the region's think time, not synchronisation
		}
		return true
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
	c, br := bbDial(t, r)
	for _, p := range []string{"/together", "/apart", "/together"} {
		bbWrite(t, c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		var resp *http.Response
		var body string
		for {
			resp, body = bbRead(t, br, "GET")
			if resp.StatusCode >= 200 {
				break
			}
		}
		bbCheck(t, p, resp, body, 200, "final "+p, "raw")
	}
}

// Region answers that are unusual but valid HTTP/1.1 are relayed, on the
// event loop as on the fasthttp path (the control): no reason phrase, many
// headers, a long Connection list, an empty header value, obs-text, a
// keep-alive HTTP/1.0 answer.
func TestBlackboxUnusualValidRegionHeads(t *testing.T) {
	t.Parallel()
	var many strings.Builder
	for i := range 100 {
		fmt.Fprintf(&many, "X-H-%d: v%d\r\n", i, i)
	}
	heads := map[string]string{
		"/noreason":    "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
		"/manyheaders": "HTTP/1.1 200 OK\r\n" + many.String() + "Content-Length: 2\r\n\r\nok",
		"/connlist":    "HTTP/1.1 200 OK\r\nConnection: keep-alive, a1, a2, a3, a4, a5, a6, a7, a8, a9\r\nA1: x\r\nX-Keep: y\r\nContent-Length: 2\r\n\r\nok",
		"/emptyvalue":  "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Keep: y\r\nContent-Length: 2\r\n\r\nok",
		"/obstext":     "HTTP/1.1 200 OK\r\nX-Keep: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
		"/http10ka":    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"/lowercase":   "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-keep: y\r\n\r\nok",
	}
	region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ []byte) bool {
		_, err := io.WriteString(c, heads[req.URL.Path])
		return err == nil
	})
	routers := map[bool]*testRouter{
		true:  startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url}),
		false: startRouter(t, Options{DisableEventLoop: true}, model.StrategyRoundRobin, map[string]string{"raw": region.url}),
	}
	for _, path := range []string{"/noreason", "/manyheaders", "/connlist", "/emptyvalue", "/obstext", "/http10ka", "/lowercase"} {
		for _, fast := range []bool{true, false} {
			name := path + " event loop"
			if !fast {
				name = path + " fasthttp path (control)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				c, br := bbDial(t, routers[fast])
				for i := range 2 {
					bbWrite(t, c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
					resp, body := bbRead(t, br, "GET")
					bbCheck(t, fmt.Sprintf("%s #%d", path, i), resp, body, 200, "ok", "raw")
					switch path {
					case "/manyheaders":
						for k := range 100 {
							if v := resp.Header.Get(fmt.Sprintf("X-H-%d", k)); v != fmt.Sprintf("v%d", k) {
								t.Fatalf("header X-H-%d = %q", k, v)
							}
						}
					case "/connlist":
						if resp.Header.Get("A1") != "" || resp.Header.Get("X-Keep") != "y" {
							t.Fatalf("headers %v", resp.Header)
						}
					case "/emptyvalue", "/lowercase":
						if resp.Header.Get("X-Keep") != "y" {
							t.Fatalf("headers %v", resp.Header)
						}
					}
				}
			})
		}
	}
}

// A router's own error answer to a HEAD carries no body: the next request
// on the connection is read in step.
func TestBlackboxRouterErrorToHEADHasNoBody(t *testing.T) {
	t.Parallel()
	bad := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "garbage\r\n\r\n")
		return false
	})
	for _, tc := range []struct{ name, endpoint, code string }{
		{"no region answered", "http://" + deadAddr(t), "no_region_available"},
		{"bad gateway", bad.url, "bad_gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startRouter(t, Options{OutlierConsecutive: -1}, model.StrategyRoundRobin, map[string]string{"r1": tc.endpoint})
			c, br := bbDial(t, r)
			for i := range 3 {
				bbWrite(t, c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, body := bbRead(t, br, "HEAD")
				if resp.StatusCode < 500 || body != "" || resp.Header.Get("X-LB-Region") != "r1" {
					t.Fatalf("HEAD %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
				}
				bbWrite(t, c, "GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, body = bbRead(t, br, "GET")
				var e struct{ Error, Code string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != tc.code || resp.StatusCode < 500 {
					t.Fatalf("GET after HEAD %d: %d %q (%v)", i, resp.StatusCode, body, err)
				}
			}
		})
	}
}

// A region that answers before it has read the request body (an early
// 413, then it drains and closes): the client gets the answer, and its
// connection stays in step for the next request.
func TestBlackboxRegionAnswersBeforeReadingTheBody(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(bbConnTimeout))
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntoo big")
				_, _ = io.Copy(io.Discard, br) // until the router closes
			})
		}
	})
	r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"early": "http://" + ln.Addr().String()})
	c, br := bbDial(t, r)
	for i, n := range []int{10, 12 << 10, 100, 15 << 10} {
		bbWrite(t, c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("z", n)))
		resp, body := bbRead(t, br, "POST")
		bbCheck(t, fmt.Sprintf("POST %d of %d bytes", i, n), resp, body, 413, "too big", "early")
	}
}

// A retry that meets a region whose connections (MaxConnsPerRegion) are all
// busy: the region is healthy, only busy, so the client must get its
// answer (as on the fasthttp path, which waits for a connection), not the
// router's "no region answered".
func TestBlackboxRetryToABusyRegionIsServed(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		name := "event loop"
		if !fast {
			name = "fasthttp path (control)"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			var inflight atomic.Int64
			good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				inflight.Add(1)
				select {
				case <-release:
				case <-time.After(5 * time.Second):
				}
				_, _ = io.WriteString(w, "good")
			}))
			defer good.Close()
			var badHits atomic.Int64
			bad := statusRegion(503, &badHits)
			defer bad.Close()
			r := startRouter(t, Options{MaxConnsPerRegion: 1, OutlierConsecutive: -1, BudgetFloor: 1000, DisableEventLoop: !fast},
				model.StrategyRoundRobin, map[string]string{"bad": bad.URL, "good": good.URL})
			const k = 16
			type result struct {
				status int
				body   string
				err    error
			}
			results := make(chan result, k)
			var answered atomic.Int64
			for i := range k {
				go func() {
					c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
					if err != nil {
						results <- result{err: err}
						return
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(bbConnTimeout))
					_, _ = fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
					resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
					if err != nil {
						results <- result{err: err}
						return
					}
					b, err := io.ReadAll(resp.Body)
					answered.Add(1)
					results <- result{status: resp.StatusCode, body: string(b), err: err}
				}()
			}
			// Every request is either held by the good region or answered.
			poll.Until(t, 5*time.Second, "all requests held or answered", func() error {
				if h, a := inflight.Load(), answered.Load(); h+a < k {
					return fmt.Errorf("%d held, %d answered of %d", h, a, k)
				}
				return nil
			})
			close(release)
			var failed []string
			for range k {
				res := <-results
				if res.err != nil || res.status != 200 || res.body != "good" {
					failed = append(failed, fmt.Sprintf("%d %q %v", res.status, res.body, res.err))
				}
			}
			if len(failed) > 0 {
				t.Fatalf("%d of %d requests failed while the good region was only busy (bad region hit %d times): %q", len(failed), k, badHits.Load(), failed)
			}
		})
	}
}

// Connections the loop hands to the fasthttp path stay there; answers that
// the loop relays well must be relayed well there too: a close-delimited
// HTTP/1.0 answer (no Content-Length, body ends at the close) arrives whole
// and well framed, and an unasked-for 101 is refused, after a chunked upload
// moved the connection to the fasthttp path.
func TestBlackboxHandedOffConnectionRelaysOddAnswers(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	// Each subtest has its own region and router: the region closes its
	// connection after these answers, which must not disturb the other.
	setup := func(t *testing.T) (net.Conn, *bufio.Reader) {
		region := bbStartRawRegion(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, b []byte) bool {
			switch req.URL.Path {
			case "/http10":
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+body)
				return false
			case "/101":
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\nraw bytes")
				return false
			}
			_, err := io.WriteString(c, bbOK(req.Method+" "+req.URL.Path+"|"+string(b)))
			return err == nil
		})
		r := startRouter(t, Options{}, model.StrategyRoundRobin, map[string]string{"raw": region.url})
		c, br := bbDial(t, r)
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		bbWrite(t, c, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
		resp, got := bbRead(t, br, "POST")
		bbCheck(t, "chunked upload", resp, got, 200, "POST /up|hi", "raw")
		return c, br
	}

	t.Run("HTTP/1.0 close-delimited", func(t *testing.T) {
		t.Parallel()
		c, br := setup(t)
		bbWrite(t, c, "GET /http10 HTTP/1.1\r\nHost: a\r\n\r\n")
		var head bytes.Buffer // the answer's head as sent, for the failure message
		tee := bufio.NewReader(io.TeeReader(br, &head))
		resp, err := http.ReadResponse(tee, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		h, _, _ := strings.Cut(head.String(), "\r\n\r\n")
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != body {
			t.Fatalf("HTTP/1.0 close-delimited answer relayed with head %q: the client read %d bytes (want %d), err %v, body intact %v",
				h, len(b), len(body), err, string(b) == body)
		}
		if resp.Proto != "HTTP/1.1" {
			t.Fatalf("the router relayed the region's %s status line (head %q): an intermediary sends its own version (RFC 9110 6.2)", resp.Proto, h)
		}
	})
	t.Run("unasked-for 101", func(t *testing.T) {
		t.Parallel()
		c, br := setup(t)
		bbWrite(t, c, "POST /101 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
		resp, got := bbRead(t, br, "POST")
		if resp.StatusCode != 502 || resp.Header.Get("X-LB-Region") != "raw" {
			t.Fatalf("a 101 the client did not ask for: got %d %q %v, want the router's 502 (as the event loop answers)", resp.StatusCode, got, resp.Header)
		}
	})
}
