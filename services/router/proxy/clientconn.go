package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// clientConn is a client connection on the fasthttp path. It enforces what
// fasthttp's own timeouts cannot: a write may stall at most
// ClientWriteTimeout (fasthttp's WriteTimeout bounds a whole answer, which
// would cut downloads and SSE), and while a request body streams each read
// waits at most ClientBodyTimeout. It also carries the bytes the event loop
// read before handing the connection over, and the length of the line being
// read, which tells an over-long request target (414) from over-long headers
// (431) when fasthttp's buffer fills.
type clientConn struct {
	net.Conn
	pre    []byte
	secure bool // a TLS connection (the HTTPS listener)
	broken bool // a write failed: the peer gets no more

	writeTimeout, bodyTimeout, slack time.Duration
	wd, rd                           time.Time // deadlines in force (zero: none)
	body                             bool      // a request body is being read
	// lineLen counts the bytes read since the last LF.
	lineLen int
}

func newClientConn(c net.Conn, pre []byte, o *Options, secure bool) *clientConn {
	return &clientConn{Conn: c, pre: pre, secure: secure, writeTimeout: o.ClientWriteTimeout, bodyTimeout: o.ClientBodyTimeout, slack: min(o.ClientWriteTimeout, o.ClientBodyTimeout) / 16}
}

func (c *clientConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		c.count(b[:n])
		return n, nil
	}
	if c.body {
		armDeadline(&c.rd, c.bodyTimeout, c.slack, c.Conn.SetReadDeadline)
	}
	n, err := c.Conn.Read(b)
	c.count(b[:n])
	return n, err
}

func (c *clientConn) count(b []byte) {
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		c.lineLen = len(b) - i - 1
	} else {
		c.lineLen += len(b)
	}
}

func (c *clientConn) Write(b []byte) (int, error) {
	armDeadline(&c.wd, c.writeTimeout, c.slack, c.Conn.SetWriteDeadline)
	n, err := c.Conn.Write(b)
	if err != nil {
		c.broken = true
	}
	return n, err
}

// Close closes the connection; over TLS after a failed write it skips the
// close_notify alert, which would wait (up to 5 s) on a client that does
// not read.
func (c *clientConn) Close() error {
	if tc, ok := c.Conn.(*tls.Conn); ok && c.broken {
		return tc.NetConn().Close()
	}
	return c.Conn.Close()
}

// armDeadline moves the deadline *d to now+timeout unless it is already
// within slack of that, so that a busy connection moves its timer about
// once per slack instead of once per call: a stall bound, not a total one.
func armDeadline(d *time.Time, timeout, slack time.Duration, set func(time.Time) error) {
	now := time.Now()
	if !d.IsZero() && d.Sub(now) >= timeout-slack {
		return
	}
	*d = now.Add(timeout)
	_ = set(*d)
}

func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.rd = t
	return c.Conn.SetReadDeadline(t)
}

func (c *clientConn) SetWriteDeadline(t time.Time) error {
	c.wd = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *clientConn) SetDeadline(t time.Time) error {
	c.rd, c.wd = t, t
	return c.Conn.SetDeadline(t)
}

// CloseWrite half-closes, for upgraded connections.
func (c *clientConn) CloseWrite() error { return closeWrite(c.Conn) }

// bodyReads switches the per-read body timeout on or off; off, the read
// deadline is fasthttp's again (head or idle).
func (c *clientConn) bodyReads(on bool) {
	c.body = on
}

// clientListener serves the fasthttp path's own listener (the event loop
// off). A new connection reaches fasthttp only once its first request head
// is in, read by a goroutine of its own into a buffer that grows with what
// the client sent: a client that trickles a head (or sends nothing) costs a
// small buffer until ClientHeaderTimeout ends it, not fasthttp's 16 KiB
// reader. The same read answers a head with a bare LF at once (fasthttp
// would wait for a CRLF CRLF that never comes).
type clientListener struct {
	ln    net.Listener
	p     *Proxy
	tls   *tls.Config // HTTPS: the handshake comes first (front.go)
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	reading map[net.Conn]struct{} // connections whose head is being read
	closed  bool
	wg      sync.WaitGroup
	err     error // the listener's error, once it stopped
}

func newClientListener(ln net.Listener, p *Proxy, tlsCfg *tls.Config) *clientListener {
	l := &clientListener{ln: ln, p: p, tls: tlsCfg, ready: make(chan net.Conn), done: make(chan struct{}), reading: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l
}

func (l *clientListener) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			_ = l.Close()
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.reading[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.firstHead(c)
	}
}

// firstHead reads c's first request head and passes c on to fasthttp with
// it, or answers and closes c itself.
func (l *clientListener) firstHead(c net.Conn) {
	defer l.wg.Done()
	o := &l.p.opts
	raw, secure := c, false // raw is the key in l.reading
	if l.tls != nil {
		tc, wire := l.handshake(c, o.ClientHeaderTimeout)
		if tc != nil && tc.ConnectionState().NegotiatedProtocol == acmeTLSProto {
			// A TLS-ALPN-01 validation: the handshake was the whole answer.
			l.mu.Lock()
			delete(l.reading, c)
			l.mu.Unlock()
			_ = tc.Close()
			return
		}
		if tc != nil && tc.ConnectionState().NegotiatedProtocol == "h2" {
			l.mu.Lock()
			delete(l.reading, c)
			l.mu.Unlock()
			if !l.p.startH2(tc) {
				_ = tc.Close()
			}
			return
		}
		if tc == nil {
			l.mu.Lock()
			delete(l.reading, c)
			l.mu.Unlock()
			return
		}
		if l.p.adoptTLS(c, tc, wire) {
			l.mu.Lock()
			delete(l.reading, c)
			l.mu.Unlock()
			return
		}
		c, secure = tc, true
	}
	buf, err := readFirstHead(c, o.ClientHeaderTimeout)
	l.mu.Lock()
	delete(l.reading, raw)
	closed := l.closed
	l.mu.Unlock()
	var r reqHead
	switch {
	case closed:
	case errors.Is(err, errBareLF):
		l.p.m.Refused.Inc()
		_, _ = c.Write(appendError(nil, fasthttp.StatusBadRequest, "", bodyBadRequest, true, false))
	case parseRequest(skipEmptyLines(buf), &r) == headBad:
		// Judged as the event loop judges it (fasthttp would take a long
		// target with headers over maxHead for a 431, and more).
		l.p.m.Refused.Inc()
		body := bodyBadRequest
		if r.bad == fasthttp.StatusRequestURITooLong {
			body = bodyTargetLong
		}
		_, _ = c.Write(appendError(nil, r.bad, "", body, true, false))
	case err != nil && isTimeout(err) && len(buf) > 0:
		l.p.m.Refused.Inc()
		_, _ = c.Write(appendError(nil, fasthttp.StatusRequestTimeout, "", bodyClientSlow, true, false))
	case err != nil && len(buf) == 0:
	default: // a head, or what fasthttp is to judge (too long, cut short)
		_ = c.SetReadDeadline(time.Time{})
		select {
		case l.ready <- newClientConn(c, buf, o, secure):
			return
		case <-l.done:
		}
	}
	_ = c.Close()
}

// skipEmptyLines skips the empty lines a client may send before a request
// (RFC 9112 2.2).
func skipEmptyLines(b []byte) []byte {
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	return b
}

// errBareLF is a request head with a line ended by LF alone.
var errBareLF = errors.New("bare LF in a request head")

// readFirstHead reads from c until a request head ends (CRLF CRLF), maxHead
// bytes are in, or an error; a bare LF is errBareLF. The whole head must
// arrive within timeout of the connection's start.
func readFirstHead(c net.Conn, timeout time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 0, 512)
	scanned := 0 // bytes checked for a bare LF
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for ; scanned < len(buf); scanned++ {
			if buf[scanned] != '\n' {
				continue
			}
			if scanned == 0 || buf[scanned-1] != '\r' {
				return buf, errBareLF
			}
			if scanned >= 3 && buf[scanned-2] == '\n' && buf[scanned-3] == '\r' {
				return buf, nil
			}
		}
		if len(buf) >= maxHead {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (l *clientListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections whose head is still
// being read.
func (l *clientListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.reading {
			_ = c.Close()
		}
		l.mu.Unlock()
		close(l.done)
		_ = l.ln.Close()
	})
	return nil
}

func (l *clientListener) Addr() net.Addr { return l.ln.Addr() }
