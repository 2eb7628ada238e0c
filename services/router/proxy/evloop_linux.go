//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mrlb/mrlb/services/router/table"
)

// The event loop is the router's fast path for plain HTTP/1.1 traffic to
// http and https regions: a few locked threads, each with its own epoll set
// (level-triggered), client connections and keep-alive pools. A request
// costs one read and one write on each side and no goroutine hand-off,
// which is what lets the router stand beside HAProxy on two cores.
//
// It handles what is common and simple: origin-form requests with a
// Content-Length body small enough to buffer (so any retry can re-send it),
// to http and https regions (named by DNS once the name resolved; TLS as in
// evtls_linux.go). Anything else (WebSocket and other upgrades, chunked or
// large uploads, Expect, HTTP/1.0, heads it is not sure of) hands the
// connection, with
// the bytes already read, to the fasthttp path, which serves it from then
// on. Responses of any size and framing (Content-Length, chunked,
// close-delimited, SSE) are relayed as they arrive, with backpressure.

const (
	evBufSize  = 16 << 10 // read buffer of a connection while it is busy
	evSmallBuf = 1 << 10  // a client's first read buffer
	evTick     = 100 * time.Millisecond
	evMaxBufs  = 1024 // free buffers kept per loop
)

// evEngine owns the loops, the listener they share and the hand-off to the
// fasthttp server.
type evEngine struct {
	p        *Proxy
	loops    []*evLoop
	ln       *net.TCPListener
	base     time.Time
	closing  atomic.Bool
	force    atomic.Bool
	loopsWG  sync.WaitGroup
	handoff  *handoffListener
	resolver *evResolver
	srvDone  chan struct{}
	next     atomic.Uint32 // the loop the next accepted connection goes to
	// lnfd is the listener's descriptor, in every loop's epoll set until
	// shutdown; lnWG counts the loops still using it.
	lnfd     int
	lnWG     sync.WaitGroup
	stopOnce sync.Once
	// fdsClosed, under fdsMu, is set before the loops' descriptors close.
	fdsMu     sync.Mutex
	fdsClosed bool
	// The dials to https regions in progress (dialTLS), cancelled once the
	// loops have stopped.
	dialCtx    context.Context
	dialCancel context.CancelFunc
	dialWG     sync.WaitGroup
	// tlsAdopted counts the HTTPS clients given to the loops.
	tlsAdopted atomic.Int64
}

// evHandler is a registered descriptor: a client or a region connection.
type evHandler interface {
	event(ev uint32)
	tick(now int64)
	gen() int32
}

type evLoop struct {
	e      *evEngine
	p      *Proxy
	epfd   int
	wakefd int
	fds    []evHandler // by descriptor
	gens   int32

	listening  bool
	relistenAt int64

	mu      sync.Mutex
	pending []evNew   // connections other loops accepted for this one
	dialed  []tlsDial // https connections ready (or failed) for this one

	bufs    [][]byte
	small   [][]byte // free client first-read buffers (evSmallBuf)
	scratch []byte
	events  []unix.EpollEvent
	pools   map[*table.Upstream]*evPool
	clients int

	// held are handed-off connections waiting for room in the fasthttp
	// server's queue; at most one per client l had, as l stops accepting
	// while it holds any.
	held []net.Conn

	snap  *table.Snapshot // the last snapshot fast found servable
	ready []*evPool       // pools that freed a connection with requests waiting
	// more are https connections to read again (tlsRead), moreClients
	// HTTPS clients; sealed is the buffer answers to them are sealed in.
	more, moreSpare         []*evUpstream
	moreClients, moreSpareC []*evClient
	sealed                  []byte

	now      int64 // monotonic ns since e.base, updated per wake-up
	lastScan int64
	done     bool
}

// startEventLoop serves ln with the event loop; ok is false when it cannot
// (not a TCP listener), and the caller serves with fasthttp instead.
func (p *Proxy) startEventLoop(ln net.Listener) (*evEngine, bool, error) {
	tl, isTCP := ln.(*net.TCPListener)
	if !isTCP || p.opts.DisableEventLoop {
		return nil, false, nil
	}
	e := &evEngine{p: p, ln: tl, base: time.Now(), srvDone: make(chan struct{})}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, false, fmt.Errorf("router listener: %w", err)
	}
	if err := rc.Control(func(fd uintptr) { e.lnfd = int(fd) }); err != nil {
		return nil, false, fmt.Errorf("router listener: %w", err)
	}
	e.handoff = newHandoffListener(tl.Addr(), func() {
		// The fasthttp server may accept a held connection as the loops
		// stop: never write to an eventfd stopLoops closed (its number
		// may be in use again).
		e.fdsMu.Lock()
		defer e.fdsMu.Unlock()
		if !e.fdsClosed {
			for _, l := range e.loops {
				l.wake()
			}
		}
	})
	e.resolver = newResolver()
	n := runtime.GOMAXPROCS(0)
	for range n {
		l, err := newLoop(e)
		if err == nil {
			if err = l.listen(); err != nil {
				l.closeFDs()
			}
		}
		if err != nil {
			for _, l := range e.loops {
				l.closeFDs()
			}
			return nil, false, err
		}
		e.loops = append(e.loops, l)
	}
	e.dialCtx, e.dialCancel = context.WithCancel(context.Background())
	go func() {
		defer close(e.srvDone)
		_ = p.srv.Serve(e.handoff)
	}()
	for _, l := range e.loops {
		e.loopsWG.Add(1)
		e.lnWG.Add(1)
		go l.run()
	}
	return e, true, nil
}

func newLoop(e *evEngine) (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &evLoop{e: e, p: e.p, epfd: epfd, wakefd: wfd, events: make([]unix.EpollEvent, 256), pools: map[*table.Upstream]*evPool{}, scratch: make([]byte, 0, 2*evBufSize)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	return l, nil
}

func (l *evLoop) closeFDs() {
	_ = unix.Close(l.wakefd)
	_ = unix.Close(l.epfd)
}

// accept waits until the loops let go of the listener (each accepts on it
// from its own epoll set), then closes it.
func (e *evEngine) accept() error {
	e.lnWG.Wait()
	if err := e.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("router listener: %w", err)
	}
	return nil
}

// acceptConns takes the connections waiting on the listener.
func (l *evLoop) acceptConns() {
	for range 16 {
		nfd, sa, err := unix.Accept4(l.e.lnfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			continue
		default:
			// Out of descriptors or memory: stop listening for a while
			// (level-triggered, the listener would wake the loop at once).
			l.p.log.Warn("router accept", "err", err, "retry_in", evTick)
			l.dropListener()
			l.relistenAt = l.now + int64(evTick)
			return
		}
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		// Connections are dealt to the loops in turn: whichever loop the
		// kernel woke, each serves its share (a burst of connections
		// accepted by one loop would leave the others idle).
		n := evNew{fd: nfd, ip: sockaddrIP(sa)}
		if to := l.e.loops[int(l.e.next.Add(1))%len(l.e.loops)]; to != l {
			to.give(n)
			continue
		}
		l.adopt(n)
	}
}

// adopt starts serving an accepted connection on l.
func (l *evLoop) adopt(n evNew) {
	if l.e.closing.Load() {
		_ = unix.Close(n.fd)
		return
	}
	c := &evClient{l: l, fd: n.fd, g: l.nextGen(), ip: n.ip, events: unix.EPOLLIN, tls: n.tc, wire: n.wire}
	if err := l.register(c, n.fd, unix.EPOLLIN); err != nil {
		_ = unix.Close(n.fd)
		return
	}
	l.clients++
	c.headDeadline()
	if c.tls != nil {
		// The handshake may have read the first request's records too:
		// they are in the tls.Conn, and no socket event will tell.
		c.readable(unix.EPOLLIN)
	}
}

// give hands an accepted connection to l from another loop.
func (l *evLoop) give(n evNew) {
	l.mu.Lock()
	l.pending = append(l.pending, n)
	l.mu.Unlock()
	l.wake()
}

// evNew is an accepted connection on its way to its loop (with its TLS
// state when it came through the HTTPS listener).
type evNew struct {
	fd   int
	ip   []byte
	tc   *tls.Conn
	wire *tlsWire
}

func (l *evLoop) listen() error {
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.e.lnfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.e.lnfd), Pad: -1}); err != nil {
		return fmt.Errorf("epoll_ctl listener: %w", err)
	}
	l.listening = true
	return nil
}

func (l *evLoop) dropListener() {
	if l.listening {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.e.lnfd, nil)
		l.listening = false
	}
}

func sockaddrIP(sa unix.Sockaddr) []byte {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr).AppendTo(nil)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap().AppendTo(nil)
	}
	return []byte("unknown")
}

func (l *evLoop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

// stop ends the event loop: no new connections, idle ones closed, busy
// ones closed once answered, all of them closed when ctx ends. Handed-off
// connections are the fasthttp server's to finish.
func (e *evEngine) stop(ctx context.Context) {
	e.stopOnce.Do(func() { e.stopLoops(ctx) })
}

func (e *evEngine) stopLoops(ctx context.Context) {
	e.shutdown(false)
	done := make(chan struct{})
	go func() {
		e.loopsWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		e.shutdown(true)
		<-done
	}
	e.dialCancel()
	e.dialWG.Wait() // each has delivered (or closed) its socket
	e.fdsMu.Lock()
	e.fdsClosed = true
	e.fdsMu.Unlock()
	for _, l := range e.loops {
		l.closeFDs() // after the loops: a late wake-up must not write to a reused descriptor
		l.mu.Lock()
		for _, n := range l.pending { // given to l as it stopped
			_ = unix.Close(n.fd)
		}
		l.pending = nil
		for _, r := range l.dialed {
			if r.fd >= 0 {
				_ = unix.Close(r.fd)
			}
		}
		l.dialed = nil
		for _, c := range l.held {
			_ = c.Close()
		}
		l.held = nil
		l.mu.Unlock()
	}
	e.resolver.stop()
	_ = e.handoff.Close()
}

// shutdown asks every loop to close its idle connections and to stop once
// the busy ones are answered; with force it closes everything at once.
func (e *evEngine) shutdown(force bool) {
	e.closing.Store(true)
	if force {
		e.force.Store(true)
	}
	for _, l := range e.loops {
		l.wake()
	}
}

func (l *evLoop) run() {
	defer l.e.loopsWG.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	released := false
	release := func() {
		if !released {
			released = true
			l.dropListener()
			l.e.lnWG.Done()
		}
	}
	defer release()
	for !l.done {
		wait := int(evTick / time.Millisecond)
		if len(l.more) > 0 || len(l.moreClients) > 0 {
			wait = 0
		}
		n, err := unix.EpollWait(l.epfd, l.events, wait)
		l.now = int64(time.Since(l.e.base))
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.p.log.Error("epoll_wait", "err", err)
			n = 0
		}
		for i := range max(n, 0) {
			ev := &l.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.wakefd:
				l.woken()
				continue
			case ev.Pad == -1:
				if !l.e.closing.Load() {
					l.acceptConns()
				}
				continue
			}
			if fd < len(l.fds) {
				if h := l.fds[fd]; h != nil && h.gen() == ev.Pad {
					h.event(ev.Events)
				}
			}
		}
		if len(l.more) > 0 {
			l.readMore()
		}
		if len(l.moreClients) > 0 {
			l.readMoreClients()
		}
		if len(l.held) > 0 {
			l.passHeld()
		}
		l.serveWaiters()
		if l.e.closing.Load() {
			release()
		}
		if l.now-l.lastScan >= int64(evTick) || l.e.closing.Load() {
			l.lastScan = l.now
			l.scan()
		}
	}
}

func (l *evLoop) woken() {
	var b [8]byte
	_, _ = unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	news, dialed := l.pending, l.dialed
	l.pending, l.dialed = nil, nil
	l.mu.Unlock()
	for _, n := range news {
		l.adopt(n)
	}
	for _, r := range dialed {
		l.tlsDialed(r)
	}
}

func (l *evLoop) register(h evHandler, fd int, events uint32) error {
	for fd >= len(l.fds) {
		l.fds = append(l.fds, make([]evHandler, max(64, len(l.fds)))...)
	}
	l.fds[fd] = h
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd), Pad: h.gen()}); err != nil {
		l.fds[fd] = nil
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (l *evLoop) modify(h evHandler, fd int, events uint32) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd), Pad: h.gen()})
}

// forget removes fd from the loop; the caller closes it.
func (l *evLoop) forget(fd int) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.fds[fd] = nil
}

// nextGen numbers registrations, so that an event for a descriptor that was
// closed and reused is told apart. It skips zero and the negatives: -1
// marks the listener, and a loop may see more than 2^31 connections.
func (l *evLoop) nextGen() int32 {
	l.gens++
	if l.gens <= 0 {
		l.gens = 1
	}
	return l.gens
}

func (l *evLoop) getBuf() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	return make([]byte, evBufSize)
}

// getSmallBuf is a client's first read buffer: most requests fit, and a
// client that trickles a head holds this much until the head timeout (it
// grows to evBufSize when a request needs more).
func (l *evLoop) getSmallBuf() []byte {
	if n := len(l.small); n > 0 {
		b := l.small[n-1]
		l.small = l.small[:n-1]
		return b
	}
	return make([]byte, evSmallBuf)
}

func (l *evLoop) putBuf(b []byte) {
	switch {
	case cap(b) == evBufSize && len(l.bufs) < evMaxBufs:
		l.bufs = append(l.bufs, b[:evBufSize])
	case cap(b) == evSmallBuf && len(l.small) < evMaxBufs:
		l.small = append(l.small, b[:evSmallBuf])
	}
}

// scan runs the timers and, when shutting down, closes idle clients.
func (l *evLoop) scan() {
	closing := l.e.closing.Load()
	force := l.e.force.Load()
	if !l.listening && !closing && l.relistenAt != 0 && l.now >= l.relistenAt {
		l.relistenAt = 0
		if err := l.listen(); err != nil {
			l.relistenAt = l.now + int64(evTick)
		}
	}
	// By index: a handler may close or open descriptors, which can grow
	// l.fds, and a closed one must not be visited from an older copy.
	for i := 0; i < len(l.fds); i++ {
		h := l.fds[i]
		if h == nil {
			continue
		}
		if c, ok := h.(*evClient); ok && closing && (force || c.state == cIdle) {
			c.abort()
			continue
		}
		h.tick(l.now)
	}
	l.serveWaiters()
	for up, pool := range l.pools {
		if len(pool.waiters) > 2*pool.nwait+16 {
			// Drop the entries of requests that stopped waiting.
			pool.waiters = slices.DeleteFunc(pool.waiters, func(c *evClient) bool { return c.waiting != pool })
		}
		if pool.open == 0 && pool.nwait == 0 {
			delete(l.pools, up)
		}
	}
	if closing && l.clients == 0 {
		for _, h := range l.fds {
			if u, ok := h.(*evUpstream); ok {
				u.close()
			}
		}
		l.done = true
	}
}

// fast reports whether every candidate of snap can be served here: http or
// https, with an address. A yes is remembered per snapshot; a no is asked
// again next time (a DNS name may have resolved).
func (l *evLoop) fast(snap *table.Snapshot) bool {
	if snap == l.snap {
		return true
	}
	for _, up := range snap.Candidates {
		if l.pool(up) == nil {
			return false
		}
	}
	l.snap = snap
	return true
}

// evPool is one loop's keep-alive connections to one region.
type evPool struct {
	up      *table.Upstream
	waiters []*evClient // requests waiting for a connection, oldest first
	nwait   int         // how many of them still wait (the others are skipped)
	ready   bool        // in the loop's list of pools to serve waiters from
	idle    []*evUpstream
	open    int
	max     int
	keep    int
}

func (l *evLoop) pool(up *table.Upstream) *evPool {
	if p, ok := l.pools[up]; ok {
		return p
	}
	// A region that may renegotiate (TLS 1.2) stays off the loop: a
	// handshake inside a read cannot be told "not yet".
	if (up.TLS && (up.TLSConfig == nil || up.TLSConfig.Renegotiation != tls.RenegotiateNever || l.p.opts.loopPlainOnly)) ||
		l.e.resolver.sockaddr(up.Addr) == nil {
		return nil
	}
	n := len(l.e.loops)
	// The same cap as the fasthttp pools' (UpstreamFactory), shared out.
	limit := max(l.p.opts.MaxConnsPerRegion, l.p.opts.MaxIdleConnsPerRegion)
	p := &evPool{up: up, max: max(1, limit/n), keep: max(1, l.p.opts.MaxIdleConnsPerRegion/n)}
	l.pools[up] = p
	return p
}

// conn returns an idle connection of pool, or a new one being dialled; nil
// when the region refused it at once or the pool is full (err says which).
func (l *evLoop) conn(pool *evPool) (*evUpstream, error) {
	up := pool.up
	if n := len(pool.idle); n > 0 {
		u := pool.idle[n-1]
		pool.idle = pool.idle[:n-1]
		u.reused = true
		return u, nil
	}
	if pool.open >= pool.max {
		return nil, fmt.Errorf("%w: %w", errNotSent, errPoolFull)
	}
	sa := l.e.resolver.sockaddr(up.Addr) // the latest address of a DNS name
	if sa == nil {
		return nil, fmt.Errorf("%w: %s has no address", errNotSent, up.Addr)
	}
	if up.TLS {
		return l.dialTLS(pool, sa), nil
	}
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: socket: %w", errNotSent, err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	if b := l.p.opts.sndBuf; b > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, b)
	}
	u := &evUpstream{l: l, fd: fd, pool: pool, g: l.nextGen(), state: uDialing, events: unix.EPOLLIN | unix.EPOLLOUT}
	err = unix.Connect(fd, sa)
	switch {
	case err == nil:
		u.state, u.events = uIdle, unix.EPOLLIN
	case errors.Is(err, unix.EINPROGRESS):
	default:
		_ = unix.Close(fd)
		l.e.resolver.failed(up.Addr)
		return nil, fmt.Errorf("%w: dial %s: %w", errNotSent, up.Addr, err)
	}
	if err := l.register(u, fd, u.events); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	u.dialDeadline = l.now + int64(l.p.opts.DialTimeout)
	pool.open++
	return u, nil
}

// errPoolFull is a region with MaxConnsPerRegion connections open (this
// loop's share) and none idle.
var errPoolFull = errors.New("region connection limit reached")

// signal notes that pool may serve a waiting request; the loop does it
// after the current event, not from inside whatever freed the connection.
func (l *evLoop) signal(pool *evPool) {
	if len(pool.waiters) > 0 && !pool.ready {
		pool.ready = true
		l.ready = append(l.ready, pool)
	}
}

// serveWaiters gives freed connections to the requests waiting for them.
func (l *evLoop) serveWaiters() {
	for len(l.ready) > 0 {
		pool := l.ready[0]
		l.ready = l.ready[1:]
		pool.ready = false
		for len(pool.waiters) > 0 && (len(pool.idle) > 0 || pool.open < pool.max) {
			c := pool.waiters[0]
			pool.waiters = pool.waiters[1:]
			if c.waiting == pool && c.fd >= 0 {
				c.stopWaiting()
				c.sendQueued(true)
			}
		}
		if len(pool.waiters) == 0 {
			pool.waiters = nil
		}
	}
	l.ready = l.ready[:0]
}

// rawRead and rawWrite are non-blocking socket calls; RawSyscall skips the
// scheduler's syscall bookkeeping, which is safe because they never block.
func rawRead(fd int, b []byte) (int, unix.Errno)  { return rawIO(unix.SYS_READ, fd, b) }
func rawWrite(fd int, b []byte) (int, unix.Errno) { return rawIO(unix.SYS_WRITE, fd, b) }

func rawIO(trap uintptr, fd int, b []byte) (int, unix.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// handoff gives c to the fasthttp path with the bytes it has buffered.
func (c *evClient) handoff() {
	l := c.l
	l.forget(c.fd)
	l.clients--
	pre := append([]byte(nil), c.buf[c.off:c.n]...)
	c.releaseBuf()
	f := os.NewFile(uintptr(c.fd), "client")
	c.fd, c.state = -1, cClosed
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		l.p.log.Debug("handoff", "err", err)
		return
	}
	l.p.m.Handoffs.Inc()
	secure := c.tls != nil
	if secure {
		nc = c.handoffTLS(nc)
	}
	l.held = append(l.held, newClientConn(nc, pre, &l.p.opts, secure))
	l.passHeld()
}

// passHeld offers the fasthttp server the connections l holds for it, in
// order. While any is left l does not accept: the burst waits in the
// listener's backlog until the server catches up (it wakes the loops).
func (l *evLoop) passHeld() {
	for len(l.held) > 0 {
		if !l.e.handoff.offer(l.held[0]) {
			l.dropListener()
			return
		}
		l.held[0] = nil
		l.held = l.held[1:]
	}
	l.held = nil
	if !l.listening && l.relistenAt == 0 && !l.e.closing.Load() {
		if err := l.listen(); err != nil {
			l.relistenAt = l.now + int64(evTick)
		}
	}
}
