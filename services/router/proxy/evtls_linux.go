//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// https regions on the event loop. A handshake blocks, and crypto/tls cannot
// resume one that was told "not yet", so each new connection is dialled and
// shaken hands with in a goroutine of its own, bounded by DialTimeout plus
// TLSHandshakeTimeout. The loop then takes the socket over and drives the
// tls.Conn through tlsWire, an in-memory transport: the loop reads
// ciphertext from the socket into it and writes out what the tls.Conn left
// in it. After the handshake crypto/tls treats a temporary net.Error from its
// transport as "no data yet" (a partial record is kept), which is what lets
// a loop that never blocks feed it. Requests on a kept-alive connection cost
// the same reads and writes as plain http, plus the record crypto.

// errWouldBlock is tlsWire's "no ciphertext yet": temporary, so crypto/tls
// keeps what it has and returns it.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no data yet" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// tlsWire is a tls.Conn's transport: the dialled connection during the
// handshake, the loop's buffers after it.
type tlsWire struct {
	net.Conn // closed once the loop has the socket; kept for its addresses
	loop     bool
	in       []byte // ciphertext read from the socket: in[r:w] is unread
	r, w     int
	eof      bool
	out      []byte // ciphertext for the socket
}

func (t *tlsWire) Read(b []byte) (int, error) {
	if !t.loop {
		return t.Conn.Read(b)
	}
	if t.r == t.w {
		if t.eof {
			return 0, io.EOF
		}
		return 0, errWouldBlock
	}
	n := copy(b, t.in[t.r:t.w])
	t.r += n
	if t.r == t.w {
		t.r, t.w = 0, 0
	}
	return n, nil
}

func (t *tlsWire) Write(b []byte) (int, error) {
	if !t.loop {
		return t.Conn.Write(b)
	}
	t.out = append(t.out, b...)
	return len(b), nil
}

func (t *tlsWire) Close() error {
	if !t.loop {
		return t.Conn.Close()
	}
	return nil // the loop closes the socket
}

func (t *tlsWire) SetDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetDeadline(d)
	}
	return nil // the loop's own deadlines apply
}

func (t *tlsWire) SetReadDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetReadDeadline(d)
	}
	return nil
}

func (t *tlsWire) SetWriteDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetWriteDeadline(d)
	}
	return nil
}

// tlsDial is a finished dial on its way to the loop that asked for it.
type tlsDial struct {
	u        *evUpstream
	fd       int // -1 on error
	tc       *tls.Conn
	wire     *tlsWire
	err      error
	dialFail bool // the TCP dial failed (the name may have moved)
}

// dialTLS starts a connection to an https region: u is counted in the pool
// and takes requests (kept in u.out) until the dial's goroutine reports.
func (l *evLoop) dialTLS(pool *evPool, sa unix.Sockaddr) *evUpstream {
	u := &evUpstream{l: l, fd: -1, pool: pool, g: l.nextGen(), state: uDialing, async: true}
	pool.open++
	e, o := l.e, &l.p.opts
	addr := sockaddrString(sa)
	cfg := pool.up.TLSConfig
	e.dialWG.Go(func() {
		r := dialRegionTLS(e.dialCtx, addr, cfg, o.DialTimeout, o.TLSHandshakeTimeout, o.sndBuf)
		r.u = u
		l.deliver(r)
	})
	return u
}

// dialRegionTLS dials addr and does the handshake; the socket it returns
// (a duplicate of the dialled one, which is closed) belongs to the caller.
func dialRegionTLS(ctx context.Context, addr string, cfg *tls.Config, dialTimeout, handshakeTimeout time.Duration, sndBuf int) tlsDial {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tlsDial{fd: -1, err: fmt.Errorf("dial %s: %w", addr, err), dialFail: true}
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		_ = nc.Close()
		return tlsDial{fd: -1, err: fmt.Errorf("dial %s: not a TCP connection", addr)}
	}
	if sndBuf > 0 {
		_ = tcp.SetWriteBuffer(sndBuf)
	}
	wire := &tlsWire{Conn: nc}
	tc := tls.Client(wire, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = nc.Close()
		return tlsDial{fd: -1, err: fmt.Errorf("tls handshake with %s: %w", addr, err)}
	}
	fd, err := dupSocket(tcp)
	_ = nc.Close() // leaves Go's poller; the duplicate keeps the socket open
	if err != nil {
		return tlsDial{fd: -1, err: fmt.Errorf("dial %s: %w", addr, err)}
	}
	wire.loop = true
	return tlsDial{fd: fd, tc: tc, wire: wire}
}

// dupSocket duplicates c's descriptor, non-blocking as c's (the flag belongs
// to the socket, not to the descriptor).
func dupSocket(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			ip = ip.WithZone(strconv.Itoa(int(a.ZoneId))) // a link-local region
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)).String()
	}
	return ""
}

// deliver passes a finished dial to l; once the loops stopped, it closes it.
func (l *evLoop) deliver(r tlsDial) {
	e := l.e
	e.fdsMu.Lock()
	defer e.fdsMu.Unlock()
	if e.fdsClosed {
		if r.fd >= 0 {
			_ = unix.Close(r.fd)
		}
		return
	}
	l.mu.Lock()
	l.dialed = append(l.dialed, r)
	l.mu.Unlock()
	l.wake()
}

// tlsDialed takes over a finished dial: the request it waited for goes out,
// or it joins the pool; a failed one fails its request (not sent: it may go
// elsewhere).
func (l *evLoop) tlsDialed(r tlsDial) {
	u := r.u
	u.async = false
	if r.err == nil {
		if err := l.register(u, r.fd, unix.EPOLLIN); err != nil {
			_ = unix.Close(r.fd)
			r.err = err
		}
	}
	if r.err != nil {
		if r.dialFail {
			l.e.resolver.failed(u.pool.up.Addr)
		}
		u.pool.open--
		l.signal(u.pool)
		if c := u.c; c != nil {
			u.c = nil
			c.upstreamFailed(u, fmt.Errorf("%w: %w", errNotSent, r.err))
		}
		return
	}
	u.fd, u.tls, u.wire = r.fd, r.tc, r.wire
	u.state, u.events = uIdle, unix.EPOLLIN
	u.headerDeadline = max(u.headerDeadline, l.now+int64(l.p.opts.ResponseHeaderTimeout))
	if u.c != nil {
		w := u.out
		u.out = u.out[:0]
		u.send(w)
		return
	}
	u.out = u.out[:0] // its client left while it was dialled
	u.release()
}

// tlsRead reads plaintext into b. It drains what TLS holds and reads the
// socket at most once: level-triggered epoll tells when more comes. When b
// fills up TLS may hold more, which no socket event will announce; u.more
// puts u on the loop's list to be read again.
func (u *evUpstream) tlsRead(b []byte) (int, unix.Errno) {
	w := u.wire
	total, fetched := 0, false
	u.more = false
	for total < len(b) {
		n, err := u.tls.Read(b[total:])
		total += n
		if len(w.out) > 0 {
			u.queueWire() // TLS answered something (a key update)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, errWouldBlock):
			if fetched || total > 0 {
				if total == 0 {
					return 0, unix.EAGAIN
				}
				return total, 0
			}
			if w.in == nil {
				w.in = u.l.getBuf()
			}
			m, e := rawRead(u.fd, w.in[w.w:])
			if e != 0 {
				return 0, e
			}
			if m == 0 {
				w.eof = true
			}
			w.w += m
			fetched = true
		case total > 0:
			// The error (a close_notify after the data, say) comes again on
			// the next read; the connection is not kept meanwhile.
			u.broken = true
			return total, 0
		case errors.Is(err, io.EOF):
			return 0, 0 // close_notify, or a close between records
		default:
			return 0, unix.EPROTO // a broken record or an alert
		}
	}
	u.more = true
	u.l.more = append(u.l.more, u)
	return total, 0
}

// seal encrypts w into u.wire.out, which send empties once it has written
// or kept them.
func (u *evUpstream) seal(w []byte) ([]byte, error) {
	u.wire.out = u.wire.out[:0]
	if _, err := u.tls.Write(w); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return u.wire.out, nil
}

// queueWire moves records TLS wrote while reading to u.out, sent when the
// socket is writable.
func (u *evUpstream) queueWire() {
	u.out = append(u.out, u.wire.out...)
	u.wire.out = u.wire.out[:0]
	u.setEvents(u.writeEvents())
}

// idleTLS reads what an idle https connection received: session tickets
// and other TLS-level messages keep it; data, an alert or a close end it.
func (u *evUpstream) idleTLS() bool {
	var b [1]byte
	n, e := u.tlsRead(b[:])
	keep := n == 0 && e == unix.EAGAIN && len(u.out) == 0
	if keep {
		u.releaseWire()
	}
	return keep
}

// drained reports whether TLS holds nothing more for an https connection
// whose last read filled its buffer (u.more): a read that finds no record
// costs no system call.
func (u *evUpstream) drained() bool {
	var b [1]byte
	n, err := u.tls.Read(b[:])
	return n == 0 && errors.Is(err, errWouldBlock) && len(u.wire.out) == 0
}

// releaseWire returns the read buffer of an https connection with nothing
// buffered; false when ciphertext is left in it.
func (u *evUpstream) releaseWire() bool {
	w := u.wire
	if w == nil {
		return true
	}
	if w.r != w.w {
		return false
	}
	if w.in != nil {
		u.l.putBuf(w.in)
		w.in = nil
	}
	return true
}

// readMore reads again the https connections whose TLS still held
// plaintext when their buffer filled.
func (l *evLoop) readMore() {
	list := l.more
	l.more = l.moreSpare[:0]
	for _, u := range list {
		if u.more && u.fd >= 0 && u.c != nil && !u.paused && u.state >= uSending {
			u.readable()
		}
	}
	clear(list)
	l.moreSpare = list[:0]
}
