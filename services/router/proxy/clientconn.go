package proxy

import (
	"bytes"
	"net"
	"time"
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
	pre []byte

	writeTimeout, bodyTimeout, slack time.Duration
	wd, rd                           time.Time // deadlines in force (zero: none)
	body                             bool      // a request body is being read
	// lineLen counts the bytes read since the last LF.
	lineLen int
}

func newClientConn(c net.Conn, pre []byte, o *Options) *clientConn {
	return &clientConn{Conn: c, pre: pre, writeTimeout: o.ClientWriteTimeout, bodyTimeout: o.ClientBodyTimeout, slack: min(o.ClientWriteTimeout, o.ClientBodyTimeout) / 16}
}

func (c *clientConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		c.count(b[:n])
		return n, nil
	}
	if c.body {
		c.arm(&c.rd, c.bodyTimeout, c.Conn.SetReadDeadline)
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
	c.arm(&c.wd, c.writeTimeout, c.Conn.SetWriteDeadline)
	return c.Conn.Write(b)
}

// arm moves the deadline *d to now+timeout unless it is already within
// slack of that, so that a busy connection moves its timer about once per
// slack instead of once per call.
func (c *clientConn) arm(d *time.Time, timeout time.Duration, set func(time.Time) error) {
	now := time.Now()
	if !d.IsZero() && d.Sub(now) >= timeout-c.slack {
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
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// bodyReads switches the per-read body timeout on or off; off, the read
// deadline is fasthttp's again (head or idle).
func (c *clientConn) bodyReads(on bool) {
	c.body = on
}

// clientListener wraps the accepted connections of the fasthttp path.
type clientListener struct {
	net.Listener
	o *Options
}

func (l clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newClientConn(c, nil, l.o), nil
}
