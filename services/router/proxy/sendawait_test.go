//go:build unix

package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// rawPair is a connected loopback TCP pair: the client side's RawConn and
// the server side.
func rawPair(t *testing.T) (*net.TCPConn, syscall.RawConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), raw, s
}

// The answer may come at once or late; either way sendAwait returns once it
// can be read, and it is then read whole without waiting.
func TestSendAwaitWaitsForTheAnswer(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{0, 150 * time.Millisecond} {
		c, raw, s := rawPair(t)
		go func() {
			buf := make([]byte, 4)
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			time.Sleep(delay) // the region's think time, not synchronisation
			_, _ = s.Write([]byte("pong"))
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		n, err := sendAwait(raw, []byte("ping"), false)
		waited := time.Since(start)
		if err != nil || n != 4 {
			t.Fatalf("delay %v: sendAwait = %d, %v", delay, n, err)
		}
		if waited < delay {
			t.Fatalf("delay %v: returned after %v, before the answer was sent", delay, waited)
		}
		// The answer is there: one non-blocking read finds it.
		buf := make([]byte, 8)
		m := 0
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			m, rerr = syscall.Read(int(fd), buf)
			return true
		}); err != nil || rerr != nil || m != 4 || string(buf[:4]) != "pong" {
			t.Fatalf("delay %v: one read after sendAwait = %d %q, %v %v", delay, m, buf, err, rerr)
		}
	}
}

// A region that never answers: the wait ends at the read deadline with a
// timeout error.
func TestSendAwaitHonoursTheReadDeadline(t *testing.T) {
	t.Parallel()
	c, raw, _ := rawPair(t)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	_, err := sendAwait(raw, []byte("ping"), false)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("err = %v, want a deadline timeout", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about 200ms", d)
	}
}

// A peer that closed: the wait ends (EOF is readable) instead of lasting
// until the deadline.
func TestSendAwaitSeesAClosedPeer(t *testing.T) {
	t.Parallel()
	c, raw, s := rawPair(t)
	_ = s.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	_, _ = sendAwait(raw, []byte("ping"), false) // the write may or may not fail
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("waited %v on a closed peer", d)
	}
}

// More than the socket buffers hold: sendAwait writes what fits and leaves
// the rest to the caller without blocking.
func TestSendAwaitShortWrite(t *testing.T) {
	t.Parallel()
	c, raw, s := rawPair(t)
	big := make([]byte, 64<<20)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := sendAwait(raw, big, false)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n >= len(big) {
		t.Fatalf("wrote %d of %d bytes, want a short write", n, len(big))
	}
	go func() { _, _ = io.Copy(io.Discard, s) }()
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(big[n:]); err != nil {
		t.Fatalf("writing the rest: %v", err)
	}
}

// A peer that half-closed while the connection was idle (shutdown of its
// side, still reading: Apache's lingering close): the end-of-file came
// before the wait and cannot wake it, so the probe must find it and send
// nothing; without the probe the wait would last until the deadline.
func TestSendAwaitProbeFindsAHalfClosedPeer(t *testing.T) {
	t.Parallel()
	c, raw, s := rawPair(t)
	if err := s.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, s) }() // reads on, never answers
	// The end-of-file is there: wait for it with a plain read of nothing.
	poll.Until(t, 5*time.Second, "the peer's end-of-file", func() error {
		var m int
		var e error
		_ = raw.Read(func(fd uintptr) bool {
			m, _, e = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		if m == 0 && e == nil {
			return nil
		}
		return fmt.Errorf("peek: %d %v", m, e)
	})
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	n, err := sendAwait(raw, []byte("ping"), true)
	if !errors.Is(err, errPeerClosed) || n != 0 {
		t.Fatalf("sendAwait with probe = %d, %v; want nothing sent and errPeerClosed", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// oneShotRegion serves one request per connection with answer (a
// 200 "ok" without Connection: close), then hands the connection to after
// (nil: close it at once). It returns the region's endpoint and a count of
// the connections it accepted.
func oneShotRegion(t *testing.T, after func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	conns := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				if after != nil {
					after(c, br)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), conns
}

// Through the router: a region that half-closes every connection after its
// answer but keeps reading. The pooled connection, idle past probeIdle, is
// found closed and the request goes on a fresh one at once, for POST too
// (nothing was sent), instead of waiting for the header timeout.
func TestHalfClosedKeepAliveConnectionIsRedialled(t *testing.T) {
	t.Parallel()
	region, conns := oneShotRegion(t, func(c net.Conn, br *bufio.Reader) {
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, br) // lingers, reading, until the router closes
	})
	r := startRouter(t, Options{OutlierConsecutive: -1, ResponseHeaderTimeout: 20 * time.Second}, model.StrategyRoundRobin,
		map[string]string{"one": region})
	cl := client()
	for i := range 4 {
		if i > 0 {
			time.Sleep(probeIdle + 50*time.Millisecond) // the scenario: the connection idles in the pool
		}
		start := time.Now()
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, r.url+"/", strings.NewReader("body"))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d (%s): %d %q", i, method, resp.StatusCode, b)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("request %d (%s) took %v: the half-closed connection was waited on", i, method, d)
		}
	}
	if got := conns.Load(); got != 4 {
		t.Fatalf("region saw %d connections for 4 requests, want 4 (each reused one found closed)", got)
	}
}

// A region that closes every connection after one answer, without saying
// Connection: close (so the close comes as a reset to the next request):
// GETs are sent again on a fresh connection, each without delay.
func TestStaleKeepAliveConnectionIsRedialled(t *testing.T) {
	t.Parallel()
	region, _ := oneShotRegion(t, nil)
	r := startRouter(t, Options{OutlierConsecutive: -1, ResponseHeaderTimeout: 20 * time.Second}, model.StrategyRoundRobin,
		map[string]string{"one": region})
	cl := client()
	for i := range 20 {
		start := time.Now()
		resp, err := cl.Get(r.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("request %d took %v", i, d)
		}
	}
}
