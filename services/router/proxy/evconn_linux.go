//go:build linux

package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mrlb/mrlb/services/router/table"
)

// evClient is a client connection served by an event loop.
type evClient struct {
	l      *evLoop
	fd     int
	g      int32
	ip     []byte // the client's address, for X-Forwarded-For
	buf    []byte // read buffer, held only while there are unread bytes
	off, n int    // buf[off:n] is read and not yet answered
	events uint32 // the epoll interest in force
	state  cState
	out    []byte // answer bytes the socket has not taken yet
	// serving is set while serve runs, so that finishing a request from
	// inside it does not recurse.
	serving    bool
	eof        bool // the client half-closed after its request
	closeAfter bool
	// deadline ends an idle connection (ClientIdleTimeout), or with
	// heading one reading a request (ClientHeaderTimeout for the head,
	// ClientBodyTimeout between body reads); writeDeadline ends one whose
	// answer the client does not take (ClientWriteTimeout without progress).
	deadline      int64
	heading       bool
	writeDeadline int64

	// The request in flight.
	req           reqHead
	reqLen        int // head and body
	u             *evUpstream
	snap          *table.Snapshot
	up            *table.Upstream
	tried         [maxAttempts]*table.Upstream
	ntried        int
	waiting       *evPool // the pool whose connection the request waits for
	waitUntil     int64
	statusRetried bool
	stale         int
	start         time.Time

	// An HTTPS client (the HTTPS listener's connections that chose
	// HTTP/1.1): the loop drives its tls.Conn through wire (evtls_linux.go);
	// tlsMore: its last read filled buf and TLS may hold more.
	tls     *tls.Conn
	wire    *tlsWire
	tlsMore bool
	tlsEOF  bool // the last read's data came with a close_notify
}

type cState uint8

const (
	cIdle     cState = iota // waiting for a request
	cBusy                   // a request is in flight
	cFlushing               // answered; the socket has not taken it all yet
	cClosed
)

func (c *evClient) gen() int32 { return c.g }

func (c *evClient) setEvents(ev uint32) {
	if ev != c.events && c.fd >= 0 {
		c.events = ev
		c.l.modify(c, c.fd, ev)
	}
}

func (c *evClient) idleDeadline() {
	c.deadline, c.heading = c.l.now+int64(c.l.p.opts.ClientIdleTimeout), false
}

// headDeadline starts the head's timer at its first byte (at accept for a
// new connection).
func (c *evClient) headDeadline() {
	if !c.heading {
		c.deadline, c.heading = c.l.now+int64(c.l.p.opts.ClientHeaderTimeout), true
	}
}

func (c *evClient) tick(now int64) {
	switch {
	case c.fd < 0:
	case c.state == cIdle && now > c.deadline:
		c.abort()
	case len(c.out) > 0 && now > c.writeDeadline:
		c.abort() // the client stopped reading; its region connection goes too
	case c.waiting != nil && now > c.waitUntil:
		c.stopWaiting() // the entry stays in the pool's list, skipped there
		c.upstreamFailed(nil, fmt.Errorf("%w: %w", errNotSent, errPoolFull))
	}
}

func (c *evClient) stopWaiting() {
	if c.waiting != nil {
		c.waiting.nwait--
		c.waiting = nil
	}
}

func (c *evClient) releaseBuf() {
	if c.buf != nil {
		c.l.putBuf(c.buf)
		c.buf, c.off, c.n = nil, 0, 0
	}
}

func (c *evClient) event(ev uint32) {
	if ev&unix.EPOLLOUT != 0 {
		c.flush()
	}
	if c.fd >= 0 && ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.readable(ev)
	}
}

func (c *evClient) readable(ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.abort() // reset, or closed both ways: nobody is left to answer
		return
	}
	if c.eof {
		return
	}
	if c.buf == nil {
		c.buf, c.off, c.n = c.l.getSmallBuf(), 0, 0
	}
	if c.n == len(c.buf) && len(c.buf) < evBufSize {
		c.grow()
	}
	if c.n == len(c.buf) {
		// Busy with a full buffer of pipelined requests: read again once
		// the one in flight is answered.
		c.setEvents(c.events &^ unix.EPOLLIN)
		return
	}
	var n int
	var e unix.Errno
	if c.tls != nil {
		n, e = c.tlsRead(c.buf[c.n:])
	} else {
		n, e = rawRead(c.fd, c.buf[c.n:])
	}
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		if c.tls != nil && c.state == cIdle {
			// Bytes of a record came (or a record without data): the
			// head's timer runs from the first byte, as on plain http.
			c.headDeadline()
		}
		if c.state == cIdle && c.off == c.n {
			c.releaseBuf()
		}
		return
	case e != 0 || n == 0:
		if e == unix.EPROTO && len(c.out) > 0 {
			_, _ = rawWrite(c.fd, c.out) // the alert TLS wrote says why, if the socket takes it
		}
		if c.state == cIdle || e != 0 {
			c.abort()
			return
		}
		// Half-closed after its requests: answer those complete, then
		// close.
		c.eof = true
		c.setEvents(c.events &^ unix.EPOLLIN)
		return
	}
	c.n += n
	if c.tlsEOF {
		// Requests then close_notify: answer those complete, then close.
		c.eof = true
		c.setEvents(c.events &^ unix.EPOLLIN)
	}
	if c.state == cIdle {
		c.serve()
	}
}

func (c *evClient) compact() {
	c.n = copy(c.buf, c.buf[c.off:c.n])
	c.off = 0
}

// grow moves c's bytes from a small buffer to a full one, compacted (the
// request in flight's spans are relative to c.off, which stays its start).
func (c *evClient) grow() {
	big := c.l.getBuf()
	c.n = copy(big, c.buf[c.off:c.n])
	c.off = 0
	c.l.putBuf(c.buf)
	c.buf = big
}

// serve starts the requests buffered in c, one at a time.
func (c *evClient) serve() {
	c.serving = true
	defer func() {
		c.serving = false
		if c.eof && c.fd >= 0 && c.state == cIdle {
			c.abort() // half-closed: no further request can complete
		}
	}()
	for c.state == cIdle && c.off < c.n {
		c.off = c.n - len(skipEmptyLines(c.buf[c.off:c.n]))
		if c.off == c.n {
			break
		}
		b := c.buf[c.off:c.n]
		switch parseRequest(b, &c.req) {
		case headIncomplete:
			if c.n == len(c.buf) {
				switch {
				case c.off > 0:
					c.compact()
				case len(c.buf) < evBufSize:
					c.grow()
				default:
					c.refuse(431, bodyHeadersLarge) // the buffer is maxHead
					return
				}
			}
			c.headDeadline()
			return
		case headHandoff:
			c.handoff()
			return
		case headBad:
			switch c.req.bad {
			case 414:
				c.refuse(c.req.bad, bodyTargetLong)
			default:
				c.refuse(c.req.bad, bodyBadRequest)
			}
			return
		}
		if f := c.l.p.front; f != nil && ((c.tls == nil && f.cfg.RedirectPort != 0) ||
			(f.cfg.ACMEChallenge != nil && bytes.HasPrefix(c.req.uri.of(b), acmeChallengePrefix))) {
			c.handoff() // the general path redirects to HTTPS and answers ACME HTTP-01 challenges
			return
		}
		cl := max(c.req.contentLength, 0)
		if cl > int64(min(evBufSize-c.req.end, c.l.p.opts.RetryBodyLimit)) {
			c.handoff() // a body too big to buffer streams on the fasthttp path
			return
		}
		total := c.req.end + int(cl)
		if len(b) < total {
			if c.off+total > len(c.buf) {
				c.compact()
				if total > len(c.buf) {
					c.grow()
				}
			}
			// The head is in: from now on the body timeout runs between
			// reads.
			c.deadline, c.heading = c.l.now+int64(c.l.p.opts.ClientBodyTimeout), true
			return
		}
		c.reqLen = total
		c.begin()
	}
	if c.state == cIdle && c.off == c.n {
		c.releaseBuf()
	}
}

// begin picks a region for the parsed request and sends it.
func (c *evClient) begin() {
	l, p := c.l, c.l.p
	snap := p.table.Snapshot()
	if !l.fast(snap) {
		c.handoff()
		return
	}
	up := snap.Pick()
	if up == nil {
		c.handoff() // the fasthttp path answers 503 and counts it
		return
	}
	p.m.InFlight.Inc()
	if snap.Panic {
		p.notePanic(snap)
	}
	c.state = cBusy
	c.snap, c.ntried, c.statusRetried, c.stale = snap, 0, false, 0
	c.closeAfter = c.req.close || l.e.closing.Load()
	c.start = time.Now()
	p.budget.Request(c.start)
	c.attempt(up)
}

// attempt sends the request to up.
func (c *evClient) attempt(up *table.Upstream) {
	c.tried[c.ntried] = up
	c.ntried++
	c.up = up
	if c.ntried > 1 || c.stale > 0 {
		c.start = time.Now()
	}
	c.send()
}

// send sends the request to c.up on a pooled or new connection; when the
// region has all the connections this loop may open and none is idle, the
// request waits for one (up to the dial timeout), as on the fasthttp path.
func (c *evClient) send() { c.sendQueued(false) }

// sendQueued is send; fromQueue is a waiter's turn, which goes ahead of the
// requests still waiting (others queue behind them: first come, first
// served).
func (c *evClient) sendQueued(fromQueue bool) {
	l, up := c.l, c.up
	pool := l.pool(up)
	var u *evUpstream
	var err error
	switch {
	case pool == nil: // fast() vouched for every candidate; not expected
		err = fmt.Errorf("%w: region %s is not for the event loop", errNotSent, up.Name)
	case pool.nwait > 0 && !fromQueue:
		err = errPoolFull
		l.signal(pool) // the queue may move now
	default:
		u, err = l.conn(pool)
	}
	if errors.Is(err, errPoolFull) {
		c.waiting = pool
		c.waitUntil = l.now + int64(l.p.opts.DialTimeout)
		pool.waiters = append(pool.waiters, c)
		pool.nwait++
		return
	}
	if err != nil {
		if !errors.Is(err, errNotSent) {
			err = fmt.Errorf("%w: %w", errNotSent, err)
		}
		c.upstreamFailed(nil, err)
		return
	}
	u.c, c.u = c, u
	b := c.buf[c.off:]
	proto := "http"
	if c.tls != nil {
		proto = "https"
	}
	w := appendRequest(l.scratch[:0], b, &c.req, up.Host, up.PathPrefix, c.ip, proto)
	w = append(w, b[c.req.end:c.reqLen]...)
	l.scratch = w[:0]
	u.headerDeadline = l.now + int64(l.p.opts.ResponseHeaderTimeout)
	if u.state == uDialing {
		u.out = append(u.out[:0], w...)
		return
	}
	u.send(w)
}

// upstreamFailed handles a failed attempt before any answer byte reached
// the client: as the fasthttp path, a fresh connection for a stale one, a
// retry elsewhere where safe, else the router's own error answer.
func (c *evClient) upstreamFailed(u *evUpstream, err error) {
	p := c.l.p
	up := c.up
	if u != nil {
		u.close()
	}
	c.u = nil
	if c.stale < 2 && staleRetry(err, c.req.idempotent) {
		c.stale++
		c.ntried--
		c.attempt(up)
		return
	}
	// The body is buffered: any method may go elsewhere if not sent.
	f := p.failedAttempt(up, err, c.req.idempotent, true, &c.statusRetried)
	if f.retry && c.ntried < maxAttempts {
		if alt := p.alternative(c.snap, c.tried[:c.ntried], up, f.reason); alt != nil {
			c.attempt(alt)
			return
		}
	}
	p.log.Debug("proxy error", "region", up.Name, "err", err, "retry", f.retry)
	c.answerError(p.answer(f))
}

// refuse answers a request that is not valid HTTP/1.1 framing and closes
// the connection once the answer is out: nothing of it reaches a region.
func (c *evClient) refuse(status int, body []byte) {
	c.l.p.m.Refused.Inc()
	c.closeAfter = true
	c.state = cFlushing
	w := appendError(c.l.scratch[:0], status, "", body, true, false)
	c.l.scratch = w[:0]
	c.write(w)
	if c.fd >= 0 && len(c.out) == 0 {
		c.finish()
	}
}

func (c *evClient) answerError(status int, body []byte) {
	w := appendError(c.l.scratch[:0], status, c.up.Name, body, c.closeAfter, c.req.head)
	if h := c.hsts(); len(h) > 0 {
		// After the status line, as the general path sets it on every
		// answer it routes.
		i := bytes.Index(w, crlf) + len(crlf)
		w = append(w[:i:i], append(appendHeader(nil, headerSTS, h), w[i:]...)...)
	}
	c.l.scratch = w[:0]
	c.write(w)
	if c.fd >= 0 {
		c.answered()
	}
}

// hsts is the Strict-Transport-Security value of c's answers: set for an
// HTTPS client when ROUTER_HSTS is.
func (c *evClient) hsts() []byte {
	if c.tls != nil && c.l.p.front != nil {
		return c.l.p.front.hsts
	}
	return nil
}

var crlf = []byte("\r\n")

// onHead handles the region's response head once it is buffered.
func (c *evClient) onHead(u *evUpstream) {
	p := c.l.p
	r := &u.resp
	for {
		switch parseResponse(u.buf[:u.n], r) {
		case headIncomplete:
			if u.n == len(u.buf) {
				c.upstreamFailed(u, errBadResponse)
			}
			return
		case headInvalid:
			c.upstreamFailed(u, errBadResponse)
			return
		}
		if r.status >= 200 {
			break
		}
		if r.status == 101 {
			c.upstreamFailed(u, errBadResponse) // no upgrade was asked for
			return
		}
		// Informational answers are dropped, as on the fasthttp path.
		u.n = copy(u.buf, u.buf[r.end:u.n])
		if u.n == 0 {
			return
		}
	}
	if u.state == uSending {
		// The region answers before it read the whole request. The
		// connection is not kept either way; an error or a close means it
		// wants no more of the body (a 413, say), else the rest is still
		// sent while the answer is relayed (a region echoing as it reads).
		u.early = true
		if r.status >= 400 || r.close {
			u.out = u.out[:0]
			u.setEvents(unix.EPOLLIN)
		}
	}
	switch {
	case r.bodyless(c.req.head):
		u.framing, u.left = fLength, 0
	case r.chunked:
		u.framing, u.chunk = fChunked, chunkScanner{}
	case r.contentLength >= 0:
		u.framing, u.left = fLength, r.contentLength
	default:
		u.framing = fClose
	}
	body := u.buf[r.end:u.n]
	take, done, ok := u.bodyTake(body)
	if !ok {
		c.upstreamFailed(u, errBadResponse)
		return
	}
	up := c.up
	if p.answeredBy(up, r.status, time.Since(c.start)) && c.req.idempotent && !c.statusRetried && c.ntried < maxAttempts {
		if alt := p.alternative(c.snap, c.tried[:c.ntried], up, "status"); alt != nil {
			c.statusRetried = true
			u.close() // the answer is discarded
			c.u = nil
			c.attempt(alt)
			return
		}
	}
	if u.framing == fClose {
		c.closeAfter = true // the client sees the end as the close
	}
	u.keep = r.reusable() && u.framing != fClose && !u.early
	if c.l.e.closing.Load() {
		c.closeAfter = true
	}
	w := appendResponse(c.l.scratch[:0], u.buf, r, up.Name, c.closeAfter, c.hsts())
	w = append(w, body[:take]...)
	c.l.scratch = w[:0]
	if take < len(body) {
		u.keep = false // bytes after the answer: the region broke framing
	}
	u.n = 0
	u.state = uBody
	c.write(w)
	if c.fd >= 0 && done {
		c.answered()
	}
}

// relayBody passes on the body bytes read into u.buf.
func (c *evClient) relayBody(u *evUpstream) {
	take, done, ok := u.bodyTake(u.buf[:u.n])
	if !ok {
		c.abort()
		return
	}
	if take < u.n {
		u.keep = false
	}
	c.write(u.buf[:take])
	u.n = 0
	if c.fd >= 0 && done {
		c.answered()
	}
}

// write sends b to the client; what the socket does not take waits in
// c.out, and the region is not read until it is gone.
func (c *evClient) write(b []byte) {
	if c.tls != nil {
		var err error
		if b, err = c.seal(b); err != nil {
			c.abort()
			return
		}
	}
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	n, e := rawWrite(c.fd, b)
	if e == unix.EAGAIN || e == unix.EINTR {
		n, e = 0, 0
	}
	if e != 0 {
		c.abort()
		return
	}
	if n < len(b) {
		c.out = append(c.out[:0], b[n:]...)
		c.writeDeadline = c.l.now + int64(c.l.p.opts.ClientWriteTimeout)
		c.setEvents(c.events | unix.EPOLLOUT)
		if u := c.u; u != nil {
			u.pause()
		}
	}
}

func (c *evClient) flush() {
	if len(c.out) > 0 {
		n, e := rawWrite(c.fd, c.out)
		if e == unix.EAGAIN || e == unix.EINTR {
			return
		}
		if e != 0 {
			c.abort()
			return
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
		if len(c.out) > 0 {
			if n > 0 {
				c.writeDeadline = c.l.now + int64(c.l.p.opts.ClientWriteTimeout)
			}
			return
		}
	}
	if cap(c.out) > 4*evBufSize {
		c.out = nil
	}
	c.setEvents(c.events &^ unix.EPOLLOUT)
	switch c.state {
	case cFlushing:
		c.finish()
	case cBusy:
		if u := c.u; u != nil {
			u.resume()
		}
	}
}

// answered: the whole answer is written or queued; the region connection
// goes back to its pool.
func (c *evClient) answered() {
	if u := c.u; u != nil {
		c.u = nil
		if u.keep {
			u.release()
		} else {
			u.close()
		}
	}
	c.l.p.m.InFlight.Dec()
	c.state = cFlushing
	if len(c.out) == 0 {
		c.finish()
	}
}

// finish readies c for its next request.
func (c *evClient) finish() {
	c.state = cIdle
	if c.closeAfter {
		c.abort()
		return
	}
	c.off += c.reqLen
	c.reqLen = 0
	if c.off == c.n {
		c.releaseBuf()
	}
	c.idleDeadline()
	if c.eof {
		if !c.serving {
			c.serve() // which closes c once no request is left
		}
		return
	}
	c.setEvents(unix.EPOLLIN)
	if c.tlsMore {
		// TLS may hold the next requests' bytes: no socket event says so.
		c.l.moreClients = append(c.l.moreClients, c)
	}
	if !c.serving {
		c.serve()
	}
}

// abort closes the client connection and whatever region connection its
// request held.
func (c *evClient) abort() {
	if c.fd < 0 {
		return
	}
	if c.state == cBusy {
		c.l.p.m.InFlight.Dec()
		if u := c.u; u != nil {
			c.u = nil
			u.close()
		}
	}
	c.stopWaiting()
	c.l.forget(c.fd)
	_ = unix.Close(c.fd)
	c.fd = -1
	c.l.clients--
	c.releaseBuf()
	c.out = nil
	c.state = cClosed
	if c.wire != nil {
		c.releaseWire()
		c.tls, c.wire = nil, nil
	}
}

type uState uint8

const (
	uDialing uState = iota
	uIdle           // connected, in the pool or just dialled
	uSending        // the request is partly written
	uWaiting        // the request is written; waiting for the head
	uBody           // relaying the body
)

type framing uint8

const (
	fLength framing = iota
	fChunked
	fClose
)

// evUpstream is a connection to a region, owned by one loop.
type evUpstream struct {
	l      *evLoop
	fd     int
	g      int32
	pool   *evPool
	c      *evClient // the client whose request it carries
	state  uState
	events uint32
	buf    []byte
	n      int
	out    []byte // request bytes not yet written
	reused bool
	paused bool
	inPool bool
	early  bool // answered before the request was all sent

	// https regions (evtls_linux.go): async while the dial's goroutine has
	// the connection (fd is -1); more when TLS may hold unread plaintext.
	tls    *tls.Conn
	wire   *tlsWire
	async  bool
	more   bool
	broken bool // TLS reported an end or an error after the last data

	resp    respHead
	framing framing
	left    int64
	chunk   chunkScanner
	keep    bool

	dialDeadline   int64
	headerDeadline int64
	idleUntil      int64
}

func (u *evUpstream) gen() int32 { return u.g }

func (u *evUpstream) setEvents(ev uint32) {
	if ev != u.events && u.fd >= 0 {
		u.events = ev
		u.l.modify(u, u.fd, ev)
	}
}

func (u *evUpstream) tick(now int64) {
	switch {
	case u.fd < 0:
	case u.state == uDialing && now > u.dialDeadline:
		u.fail(fmt.Errorf("%w: dial %s: timeout", errNotSent, u.pool.up.Addr))
	case (u.state == uWaiting || u.state == uSending) && now > u.headerDeadline:
		u.fail(errHeaderTimeout)
	case u.state == uIdle && u.inPool && now > u.idleUntil:
		u.close()
	}
}

// fail ends the attempt u carries with err.
func (u *evUpstream) fail(err error) {
	if c := u.c; c != nil {
		c.upstreamFailed(u, err)
		return
	}
	u.close()
}

func (u *evUpstream) event(ev uint32) {
	switch u.state {
	case uDialing:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr == 0 && ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			soerr = int(unix.ECONNREFUSED)
		}
		if err != nil || soerr != 0 {
			u.l.e.resolver.failed(u.pool.up.Addr)
			u.fail(fmt.Errorf("%w: dial %s: %w", errNotSent, u.pool.up.Addr, syscall.Errno(soerr)))
			return
		}
		u.state = uIdle
		u.events = unix.EPOLLIN | unix.EPOLLOUT
		u.setEvents(unix.EPOLLIN)
		if u.c != nil {
			w := u.out
			u.out = u.out[:0]
			u.send(w)
		} else {
			u.release()
		}
	case uIdle:
		// An idle connection has nothing to say: the region closed it
		// (over TLS it may have sent session tickets).
		if u.tls != nil && u.idleTLS() {
			return
		}
		u.close()
	case uSending:
		if ev&unix.EPOLLOUT != 0 {
			u.send(nil)
		}
		if u.fd >= 0 && u.c != nil && ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			u.readable() // the region answers before it read the whole request
		}
	default:
		if ev&unix.EPOLLOUT != 0 && len(u.out) > 0 {
			u.flushOut()
			if u.fd < 0 {
				return
			}
		}
		if u.paused {
			if c := u.c; c != nil && ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				c.abort() // reset while the client was slow
			}
			return
		}
		if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			u.readable()
		}
	}
}

// flushOut sends more of a request whose answer is already being relayed.
func (u *evUpstream) flushOut() {
	n, e := rawWrite(u.fd, u.out)
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return
	case e != 0:
		u.out = u.out[:0] // the region stopped reading; its answer goes on
		u.keep = false
	default:
		u.out = u.out[:copy(u.out, u.out[n:])]
	}
	if len(u.out) == 0 {
		u.setEvents(u.readEvents())
	}
}

// readEvents is the interest of a connection with nothing left to send.
func (u *evUpstream) readEvents() uint32 {
	if u.paused {
		return 0
	}
	return unix.EPOLLIN
}

// send writes w (nil: what is left of u.out) on u.
func (u *evUpstream) send(w []byte) {
	if w == nil {
		w = u.out
	} else if u.tls != nil {
		sealed, err := u.seal(w)
		if err != nil {
			u.fail(fmt.Errorf("%w: %w", errNotSent, err))
			return
		}
		if w = sealed; len(u.out) > 0 {
			u.out = append(u.out, sealed...) // after records TLS queued
			w = u.out
		}
	}
	n, e := rawWrite(u.fd, w)
	if u.wire != nil {
		u.wire.out = u.wire.out[:0] // sent, or copied to u.out below
	}
	if e == unix.EAGAIN || e == unix.EINTR {
		n, e = 0, 0
	}
	if e != 0 {
		if u.state == uSending {
			u.fail(fmt.Errorf("send request: %w", e)) // part of it went out
		} else if u.reused {
			u.fail(fmt.Errorf("%w: stale connection: %w", errStale, e))
		} else {
			u.fail(fmt.Errorf("%w: %w", errNotSent, e))
		}
		return
	}
	if n < len(w) {
		u.out = append(u.out[:0], w[n:]...)
		u.state = uSending
		u.setEvents(unix.EPOLLIN | unix.EPOLLOUT)
		return
	}
	u.out = u.out[:0]
	u.state = uWaiting
	u.setEvents(unix.EPOLLIN)
}

func (u *evUpstream) readable() {
	c := u.c
	if c == nil {
		u.close()
		return
	}
	if u.buf == nil {
		u.buf = u.l.getBuf()
	}
	var n int
	var e unix.Errno
	if u.tls != nil {
		n, e = u.tlsRead(u.buf[u.n:])
	} else {
		n, e = rawRead(u.fd, u.buf[u.n:])
	}
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return
	case e != 0 || n == 0:
		switch {
		case u.state == uBody && u.framing == fClose && e == 0:
			u.keep = false
			c.answered() // a close-delimited body ends here
		case u.state == uBody:
			c.abort() // cut off mid-body: the client must not take it as whole
		case u.n == 0 && u.reused:
			u.fail(fmt.Errorf("%w: %w", errStaleRead, errnoOrEOF(e)))
		default:
			u.fail(fmt.Errorf("read response: %w", errnoOrEOF(e)))
		}
		return
	}
	u.n += n
	if u.state == uBody {
		c.relayBody(u)
	} else {
		c.onHead(u)
	}
}

func errnoOrEOF(e unix.Errno) error {
	if e == 0 {
		return errUnexpectedClose
	}
	return e
}

var errUnexpectedClose = errors.New("connection closed by the region")

// bodyTake tells how many bytes of b belong to the body and whether it
// ended there.
func (u *evUpstream) bodyTake(b []byte) (n int, done, ok bool) {
	switch u.framing {
	case fChunked:
		return u.chunk.scan(b)
	case fClose:
		return len(b), false, true
	}
	k := min(int64(len(b)), u.left)
	u.left -= k
	return int(k), u.left == 0, true
}

func (u *evUpstream) pause() {
	if u.state == uBody && !u.paused {
		u.paused = true
		u.setEvents(u.writeEvents())
	}
}

func (u *evUpstream) resume() {
	if u.paused {
		u.paused = false
		u.setEvents(u.writeEvents())
		if u.more {
			u.l.more = append(u.l.more, u)
		}
	}
}

// writeEvents: the read interest, plus writability while request bytes
// are left.
func (u *evUpstream) writeEvents() uint32 {
	if len(u.out) > 0 {
		return u.readEvents() | unix.EPOLLOUT
	}
	return u.readEvents()
}

// release puts u back in its pool, or closes it when the pool is full.
func (u *evUpstream) release() {
	pool := u.pool
	if len(pool.idle) >= pool.keep || u.l.e.closing.Load() || u.n != 0 || len(u.out) != 0 || u.broken ||
		(u.more && !u.drained()) || !u.releaseWire() {
		u.close()
		return
	}
	u.state, u.c = uIdle, nil
	u.paused, u.early = false, false
	u.setEvents(unix.EPOLLIN)
	if u.buf != nil {
		u.l.putBuf(u.buf)
		u.buf = nil
	}
	u.idleUntil = u.l.now + int64(u.l.p.opts.IdleConnTimeout)
	u.inPool = true
	pool.idle = append(pool.idle, u)
	u.l.signal(pool)
}

func (u *evUpstream) close() {
	if u.async {
		u.c = nil // tlsDialed pools or closes it
		u.out = u.out[:0]
		return
	}
	if u.fd < 0 {
		return
	}
	if u.inPool {
		if i := slices.Index(u.pool.idle, u); i >= 0 {
			u.pool.idle = slices.Delete(u.pool.idle, i, i+1)
		}
		u.inPool = false
	}
	u.l.forget(u.fd)
	_ = unix.Close(u.fd)
	u.fd = -1
	u.pool.open--
	u.l.signal(u.pool)
	if u.buf != nil {
		u.l.putBuf(u.buf)
		u.buf = nil
	}
	u.more = false
	if w := u.wire; w != nil && w.in != nil {
		u.l.putBuf(w.in)
		w.in = nil
	}
	u.c = nil
}

// handoffListener hands the connections the event loop gives up on to the
// fasthttp server, which tracks them for shutdown as its own. Its queue is
// bounded; a loop that finds it full keeps the connection and stops
// accepting until the server has caught up (back-pressure on accept: a
// burst waits in the kernel's backlog instead of being dropped).
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	mu     sync.Mutex
	closed bool
	// full is set when a loop found no room; the next Accept wakes the
	// loops (room) to pass on what they hold.
	full atomic.Bool
	room func()
}

func newHandoffListener(addr net.Addr, room func()) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn, 256), done: make(chan struct{}), room: room}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		if h.full.CompareAndSwap(true, false) {
			h.room()
		}
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close stops the hand-offs; connections not yet accepted are closed.
func (h *handoffListener) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	close(h.done)
	for {
		select {
		case c := <-h.ch:
			_ = c.Close()
		default:
			return nil
		}
	}
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// offer passes c on without blocking the loop; false when the queue is full
// (the caller keeps c and offers it again once woken).
func (h *handoffListener) offer(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		_ = c.Close()
		return true
	}
	select {
	case h.ch <- c:
		return true
	default:
		h.full.Store(true)
		return false
	}
}
