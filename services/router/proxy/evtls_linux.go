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
	n, e, broken, full := u.l.tlsFill(u.fd, u.tls, u.wire, b)
	if len(u.wire.out) > 0 {
		u.queueWire() // TLS answered something (a key update)
	}
	if broken {
		u.broken = true
	}
	u.more = full
	if full {
		u.l.more = append(u.l.more, u)
	}
	return n, e
}

// tlsFill reads plaintext from tc into b for a connection the loop drives
// (a region's or a client's), reading its socket fd at most once. broken:
// data came with an error (a close_notify after it, say), which comes again
// on the next read, so the connection must not be kept; full: b filled up
// and TLS may hold more. What TLS wrote meanwhile is left in w.out.
func (l *evLoop) tlsFill(fd int, tc *tls.Conn, w *tlsWire, b []byte) (n int, e unix.Errno, broken, full bool) {
	total, fetched := 0, false
	for total < len(b) {
		n, err := tc.Read(b[total:])
		total += n
		switch {
		case err == nil:
			continue
		case errors.Is(err, errWouldBlock):
			if fetched || total > 0 {
				if total == 0 {
					return 0, unix.EAGAIN, false, false
				}
				return total, 0, false, false
			}
			if w.in == nil {
				w.in = l.getBuf()
			}
			m, e := rawRead(fd, w.in[w.w:])
			if e != 0 {
				return 0, e, false, false
			}
			if m == 0 {
				w.eof = true
			}
			w.w += m
			fetched = true
		case total > 0:
			return total, 0, true, false
		case errors.Is(err, io.EOF):
			return 0, 0, false, false // close_notify, or a close between records
		default:
			return 0, unix.EPROTO, false, false // a broken record or an alert
		}
	}
	return total, 0, false, true
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

// HTTPS clients on the event loop. The HTTPS listener's goroutine shakes
// hands (clientListener.handshake, through a tlsWire that passes to the
// socket); a connection that chose HTTP/1.1 is then given to a loop
// (adoptTLS), which drives its tls.Conn as it drives an https region's:
// ciphertext read into the wire, plaintext out of tls.Conn.Read into the
// client's buffer, answers sealed into records and written as plain answers
// are. A connection the loop hands off goes to the fasthttp path with its
// tls.Conn, the wire then passing to the socket again.

// adoptTLS gives a handshaken connection to an event loop; false when no
// loop runs (the caller serves it on the general path). raw is closed: the
// loop keeps a duplicate of its descriptor.
func (p *Proxy) adoptTLS(raw net.Conn, tc *tls.Conn, wire *tlsWire) bool {
	p.evMu.Lock()
	e := p.ev
	p.evMu.Unlock()
	tcp, ok := raw.(*net.TCPConn)
	if e == nil || !ok || e.closing.Load() {
		return false
	}
	fd, err := dupSocket(tcp)
	if err != nil {
		return false
	}
	ip := []byte("unknown")
	if a, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.AddrPort().Addr().Unmap().AppendTo(nil)
	}
	_ = raw.Close() // leaves Go's poller; the duplicate keeps the socket open
	wire.loop = true
	l := e.loops[int(e.next.Add(1))%len(e.loops)]
	e.fdsMu.Lock()
	defer e.fdsMu.Unlock()
	if e.fdsClosed {
		_ = unix.Close(fd)
		return true
	}
	e.tlsAdopted.Add(1)
	l.give(evNew{fd: fd, ip: ip, tc: tc, wire: wire})
	return true
}

// tlsRead reads plaintext into b (see tlsFill).
func (c *evClient) tlsRead(b []byte) (int, unix.Errno) {
	w := c.wire
	n, e, broken, full := c.l.tlsFill(c.fd, c.tls, w, b)
	if len(w.out) > 0 {
		// TLS answered something (a key update, an alert): it goes out
		// before any answer sealed later. The write timer starts only if
		// nothing was waiting: records the client provokes never move it.
		if len(c.out) == 0 {
			c.writeDeadline = c.l.now + int64(c.l.p.opts.ClientWriteTimeout)
		}
		c.out = append(c.out, w.out...)
		w.out = w.out[:0]
		c.setEvents(c.events | unix.EPOLLOUT)
	}
	// Data then the client's close_notify: a half-close (readable answers
	// what is complete, then closes).
	c.tlsEOF = broken
	c.tlsMore = full
	if full && c.state == cIdle {
		c.l.moreClients = append(c.l.moreClients, c)
	}
	if w.r == w.w && w.in != nil {
		// The loop's buffer goes back (tls.Conn keeps its own record
		// buffer, a few KiB to 17 KiB per connection).
		c.l.putBuf(w.in)
		w.in = nil
	}
	return n, e
}

// seal encrypts b into records, in the loop's buffer: write sends them or
// keeps what the socket does not take.
func (c *evClient) seal(b []byte) ([]byte, error) {
	w := c.wire
	w.out = c.l.sealed[:0]
	_, err := c.tls.Write(b)
	out := w.out
	c.l.sealed, w.out = out[:0], nil
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return out, nil
}

// releaseWire returns the read buffer of a closed client.
func (c *evClient) releaseWire() {
	if w := c.wire; w.in != nil {
		c.l.putBuf(w.in)
		w.in = nil
	}
}

// readMoreClients reads again the HTTPS clients whose TLS may still hold
// requests.
func (l *evLoop) readMoreClients() {
	list := l.moreClients
	l.moreClients = l.moreSpareC[:0]
	for _, c := range list {
		if c.tlsMore && c.fd >= 0 && c.state == cIdle {
			c.readable(unix.EPOLLIN)
		}
	}
	clear(list)
	l.moreSpareC = list[:0]
}

// handoffTLS makes c's connection a blocking one again for the fasthttp
// path: the wire passes to nc, after the ciphertext the loop read and did
// not use; records not yet written go out before the next ones, from the
// fasthttp path's goroutine (the loop never blocks on a write).
func (c *evClient) handoffTLS(nc net.Conn) net.Conn {
	w := c.wire
	w.Conn, w.loop = nc, false
	if len(c.out) > 0 {
		w.pending = append([]byte(nil), c.out...)
		c.out = nil
	}
	tc := c.tls
	c.tls, c.wire = nil, nil
	return tc
}
