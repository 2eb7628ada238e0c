package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/table"
)

// errNotSent marks a failure before any byte of the request reached the
// region (dial, TLS handshake, no free connection): safe to send elsewhere.
var errNotSent = errors.New("request not sent")

// errBadResponse is a region answer the router cannot relay.
var errBadResponse = errors.New("invalid response from the region")

// errHeaderTimeout is a region that did not answer within the
// response-header timeout.
var errHeaderTimeout = errors.New("region did not answer in time")

// dialer opens connections to one region, doing the TLS handshake itself so
// that SNI is the region's host and the handshake has its own timeout.
type dialer struct {
	net        net.Dialer
	tls        *tls.Config // nil for plain http
	tlsTimeout time.Duration
	// slack is how much earlier than asked a read deadline may fire, so
	// that back-to-back requests on a connection need not move its timer.
	slack time.Duration
	// stall bounds one blocked write to the region.
	stall time.Duration
}

// deadlineConn skips a SetReadDeadline that would move the deadline later
// by less than slack: the response-header timeout then fires between
// timeout-slack and timeout after the request, and a busy connection moves
// its runtime timer about once per slack instead of twice per request.
type deadlineConn struct {
	net.Conn
	slack time.Duration
	rd    time.Time // the read deadline in force (zero: none)
	wd    time.Time // the write deadline in force
	stall time.Duration
	// raw is the socket of a plain TCP connection, for sendAwait; nil for
	// TLS.
	raw syscall.RawConn
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() == c.rd.IsZero() && !t.Before(c.rd) && t.Sub(c.rd) < c.slack {
		return nil
	}
	c.rd = t
	return c.Conn.SetReadDeadline(t)
}

// Write bounds how long the region may stall taking a request (a streamed
// body can take as long as the client's upload, but not wait on a region
// that stopped reading): each write may block up to stall.
func (c *deadlineConn) Write(b []byte) (int, error) {
	armDeadline(&c.wd, c.stall, c.slack, c.Conn.SetWriteDeadline)
	return c.Conn.Write(b)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.rd, c.wd = t, t
	return c.Conn.SetDeadline(t)
}

// CloseWrite half-closes when the connection supports it (plain TCP; TLS
// sends close_notify), else closes.
func (c *deadlineConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c when it supports it, else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (d *dialer) dial(addr string) (net.Conn, error) {
	c, err := d.net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if d.tls == nil {
		dc := &deadlineConn{Conn: c, slack: d.slack, stall: d.stall}
		if tc, ok := c.(*net.TCPConn); ok {
			if raw, err := tc.SyscallConn(); err == nil {
				dc.raw = raw
			}
		}
		return dc, nil
	}
	tc := tls.Client(c, d.tls)
	ctx, cancel := context.WithTimeout(context.Background(), d.tlsTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return &deadlineConn{Conn: tc, slack: d.slack, stall: d.stall}, nil
}

// UpstreamFactory returns the function the table uses to build a region's
// upstream: parsed endpoint, keep-alive pool with the configured timeouts,
// TLS with SNI = the region's host, and metric handles.
func UpstreamFactory(o Options, m *metrics.Router) func(name, endpoint string) (*table.Upstream, error) {
	return func(name, endpoint string) (*table.Upstream, error) {
		u, err := table.ParseEndpoint(name, endpoint)
		if err != nil {
			return nil, err
		}
		d := &dialer{net: net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}, tlsTimeout: o.TLSHandshakeTimeout, slack: o.ResponseHeaderTimeout / 16, stall: o.ResponseHeaderTimeout}
		if u.TLS {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if o.TLS != nil {
				cfg = o.TLS.Clone()
			}
			host, _, err := net.SplitHostPort(u.Addr)
			if err != nil {
				host = u.Host
			}
			cfg.ServerName = host
			cfg.NextProtos = []string{"http/1.1"}
			if cfg.ClientSessionCache == nil {
				// Resumed handshakes for the connections a pool re-opens.
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
			}
			d.tls = cfg
			u.TLSConfig = cfg
		}
		u.Client = &fasthttp.HostClient{
			Addr:                          u.Addr,
			Name:                          "",
			NoDefaultUserAgentHeader:      true,
			Dial:                          d.dial,
			MaxConns:                      max(o.MaxConnsPerRegion, o.MaxIdleConnsPerRegion),
			MaxConnWaitTimeout:            o.DialTimeout,
			MaxIdleConnDuration:           o.IdleConnTimeout,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			ConnPoolStrategy:              fasthttp.LIFO,
		}
		if m != nil {
			u.Metrics = m.ForRegion(name)
		}
		return u, nil
	}
}

// roundTrip sends req on a pooled connection of hc and reads the response
// head within headerTimeout. When the response has a body it is returned as
// a *bodyStream still on the connection, which owns resp from then on and
// gives the connection back when closed. On failure the error wraps
// errNotSent when nothing was sent, errStale for a dead kept-alive
// connection and errHeaderTimeout on a timeout.
//
// The response-header timeout runs from when the request is sent: for a
// streamed body, from its last byte (a client's slow upload is not the
// region's delay). The read deadline is left on the connection: a small
// body is then read under it, and bodyStream.clearDeadline lifts it before
// a body is streamed; the next request on the connection sets its own.
func roundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, headerTimeout time.Duration) (*bodyStream, error) {
	cc, err := hc.AcquireConn(0, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	conn := cc.Conn()
	reused := !cc.LastUseTime().IsZero()
	_ = conn.SetReadDeadline(time.Now().Add(headerTimeout))
	streamed := req.IsBodyStream() // Write releases the stream
	if dc, ok := conn.(*deadlineConn); ok && dc.raw != nil && !streamed {
		err = sendAwaitRequest(dc, req, reused && time.Since(cc.LastUseTime()) >= probeIdle)
	} else {
		bw := hc.AcquireWriter(conn)
		err = req.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		hc.ReleaseWriter(bw)
		if err == nil && streamed {
			_ = conn.SetReadDeadline(time.Now().Add(headerTimeout))
		}
	}
	if err != nil {
		hc.CloseConn(cc)
		switch {
		case errors.Is(err, errHeaderTimeout), errors.Is(err, errNotSent):
			return nil, err
		case errors.Is(err, errPeerClosed):
			return nil, fmt.Errorf("%w: %w", errStale, err)
		}
		if reused {
			// A kept-alive connection the region had already closed.
			return nil, fmt.Errorf("%w: stale connection: %w", errStale, err)
		}
		return nil, fmt.Errorf("send request: %w", err)
	}
	resp.StreamBody = true
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	br := hc.AcquireReader(conn)
	err = checkResponseHead(br)
	if err == nil {
		err = resp.ReadLimitBody(br, 0)
	}
	if err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		if isTimeout(err) {
			return nil, fmt.Errorf("%w: %w", errHeaderTimeout, err)
		}
		if reused && br.Buffered() == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("%w: %w", errStaleRead, err)
		}
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// Upgrades take serveUpgrade's path; this request asked for none.
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return nil, errBadResponse
	}
	closeConn := req.ConnectionClose() || resp.ConnectionClose()
	s := resp.BodyStream()
	if s == nil {
		hc.ReleaseReader(br)
		if closeConn {
			hc.CloseConn(cc)
		} else {
			hc.ReleaseConn(cc)
		}
		return nil, nil
	}
	bs := bodyStreamPool.Get().(*bodyStream)
	*bs = bodyStream{r: s, hc: hc, cc: cc, conn: conn, br: br, closeConn: closeConn, resp: resp}
	return bs, nil
}

// checkResponseHead holds a region's answer to the event loop's rules
// before fasthttp (which is lenient: bare LF, conflicting lengths) reads
// it: a head that is not valid framing is errBadResponse, a 502, and the
// connection is not reused. Interim 1xx heads are skipped here.
func checkResponseHead(br *bufio.Reader) error {
	var r respHead
	for {
		if _, err := br.Peek(1); err != nil {
			if isTimeout(err) {
				return err
			}
			// Nothing of an answer: a close or a reset are alike (a
			// kept-alive connection the region dropped), as fasthttp has it.
			return io.EOF
		}
		for {
			b, _ := br.Peek(br.Buffered())
			st := parseResponse(b, &r)
			if st == headInvalid {
				return errBadResponse
			}
			if st == headOK {
				if r.status == fasthttp.StatusSwitchingProtocols || r.status >= 200 {
					return nil
				}
				_, _ = br.Discard(r.end)
				break
			}
			if len(b) >= br.Size() {
				return fmt.Errorf("%w: head larger than %d bytes", errBadResponse, br.Size())
			}
			if _, err := br.Peek(len(b) + 1); err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("%w: %w", errBadResponse, io.ErrUnexpectedEOF)
				}
				return err
			}
		}
	}
}

// isTimeout reports a deadline error; fasthttp's ErrTimeout has Timeout()
// but is no net.Error.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// reqBuf holds a serialized request for sendAwaitRequest.
type reqBuf struct {
	b  []byte
	bw *bufio.Writer
}

func (r *reqBuf) Write(p []byte) (int, error) {
	r.b = append(r.b, p...)
	return len(p), nil
}

var reqBufPool = sync.Pool{New: func() any {
	r := &reqBuf{b: make([]byte, 0, 4<<10)}
	r.bw = bufio.NewWriterSize(r, 4<<10)
	return r
}}

// probeIdle is how long a pooled connection must have been idle before
// sendAwait peeks at it for an end-of-file: regions close idle connections
// after keep-alive timeouts of seconds, while a busy connection is reused
// within milliseconds and skips the extra syscall.
const probeIdle = 250 * time.Millisecond

// sendAwaitRequest serializes req (whose body is in memory) and sends it
// with sendAwait, so the response is read only once it has arrived. A wait
// that ends at the read deadline is errHeaderTimeout.
func sendAwaitRequest(dc *deadlineConn, req *fasthttp.Request, probe bool) error {
	rb := reqBufPool.Get().(*reqBuf)
	defer func() {
		if cap(rb.b) <= 256<<10 {
			reqBufPool.Put(rb)
		}
	}()
	rb.b = rb.b[:0]
	rb.bw.Reset(rb)
	if err := req.Write(rb.bw); err != nil {
		return fmt.Errorf("serialize request: %w", err)
	}
	if err := rb.bw.Flush(); err != nil {
		return fmt.Errorf("serialize request: %w", err)
	}
	n, err := sendAwait(dc.raw, rb.b, probe)
	switch {
	case err == nil:
	case errors.Is(err, errNotSent), errors.Is(err, errPeerClosed):
		return err
	case n == len(rb.b) && isTimeout(err):
		return fmt.Errorf("%w: %w", errHeaderTimeout, err)
	default:
		return fmt.Errorf("send request: %w", err)
	}
	if n < len(rb.b) {
		if _, err := dc.Write(rb.b[n:]); err != nil {
			return fmt.Errorf("send request: %w", err)
		}
	}
	return nil
}

// errStale is a write failure on a reused keep-alive connection: the region
// had closed it while idle and never saw the request, so any method may be
// sent again on a fresh connection if its body can be re-sent.
var errStale = errors.New("stale keep-alive connection")

// errStaleRead is a reused connection closed before any response byte. The
// region almost surely dropped it while idle, but as it may have read the
// request only idempotent requests are sent again.
var errStaleRead = errors.New("keep-alive connection closed before the response")

var bodyStreamPool = sync.Pool{New: func() any { return new(bodyStream) }}

// bodyStream is a region's response body still on its connection; closing it
// returns the connection to the pool when the body was read to the end.
type bodyStream struct {
	r         io.Reader
	hc        *fasthttp.HostClient
	cc        any // *fasthttp.clientConn, unexported, handed back through callConn
	conn      net.Conn
	br        *bufio.Reader
	resp      *fasthttp.Response
	eof       bool
	closeConn bool
	closed    bool
}

func (b *bodyStream) Read(p []byte) (int, error) {
	if b.closed {
		return 0, io.ErrClosedPipe
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		if b.br.Buffered() > 0 {
			// Bytes after the end of the answer: the region broke framing
			// (a chunked trailer fasthttp took leniently, say). The client
			// is cut rather than told the answer ended, and the connection
			// is not reused (eof stays false).
			return n, errBadResponse
		}
		b.eof = true
	}
	return n, err
}

// clearDeadline lifts the response-header deadline before a body that may
// take long (SSE, downloads) is streamed.
func (b *bodyStream) clearDeadline() { _ = b.conn.SetReadDeadline(time.Time{}) }

// interrupt makes a Read blocked on the region return (its client is gone);
// safe from another goroutine.
func (b *bodyStream) interrupt() { _ = b.conn.SetReadDeadline(time.Unix(1, 0)) }

// CloseWithError implements fasthttp.ReadCloserWithError (and deliberately
// not io.Closer: fasthttp would call both, and the object is pooled).
func (b *bodyStream) CloseWithError(err error) error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.hc.ReleaseReader(b.br)
	if b.eof && err == nil && !b.closeConn {
		callConn(b.hc.ReleaseConn, b.cc)
	} else {
		callConn(b.hc.CloseConn, b.cc)
	}
	fasthttp.ReleaseResponse(b.resp)
	*b = bodyStream{closed: true}
	bodyStreamPool.Put(b)
	return nil
}

// callConn hands a pooled connection kept as any back to the pool method f;
// the type parameter is inferred from f because fasthttp does not export it.
func callConn[T any](f func(*T), cc any) { f(cc.(*T)) }
