package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The HTTPS front door: clients' TLS is terminated here (contract section
// 7). A connection's handshake runs in the goroutine that reads its first
// head (clientListener), bounded by ClientHeaderTimeout; by ALPN it is then
// served as HTTP/1.1 by the fasthttp server, with every rule of the general
// path, or as HTTP/2 by net/http's server (fed the handshaken connections
// through h2Listener), each stream going through the same handle
// (serveH2Stream) and so the same strategies, retries, budget, outlier
// accounting, metrics and headers.

// FrontDoor configures the HTTPS listener.
type FrontDoor struct {
	// TLS serves the certificates (GetCertificate) with the minimum version;
	// ALPN is set by ServeTLS.
	TLS *tls.Config
	// HTTP2 offers h2 by ALPN.
	HTTP2 bool
	// HSTS, when set, is the Strict-Transport-Security value of every HTTPS
	// answer.
	HSTS string
	// RedirectPort, when not zero, makes the plain listener answer 308 to
	// https://host:RedirectPort (no port when 443), except for ACME HTTP-01
	// challenge paths.
	RedirectPort int
	// OnHandshake counts handshakes by result ("ok", "error", "timeout").
	OnHandshake func(result string)
	// ACMEChallenge, when set, may answer a request for
	// /.well-known/acme-challenge/ on either listener (true when it did);
	// such requests then leave the event loop for the general path.
	ACMEChallenge func(ctx *fasthttp.RequestCtx) bool
	// ALPNChallenge offers acme-tls/1 by ALPN for TLS-ALPN-01 validations;
	// TLS.GetCertificate serves their certificate, and the connection is
	// closed after the handshake.
	ALPNChallenge bool
}

// acmeTLSProto is the ALPN protocol of TLS-ALPN-01 (RFC 8737).
const acmeTLSProto = "acme-tls/1"

// h2MaxStreams bounds the streams one HTTP/2 connection may have open; it
// is also what bounds the handlers a rapid-reset client can keep busy.
const h2MaxStreams = 100

// front is the proxy's HTTPS state.
type front struct {
	cfg  FrontDoor
	hsts []byte
	h2   *http.Server // nil without HTTP/2; its Shutdown sends GOAWAY
	ln   *h2Listener
	done chan struct{} // closed when h2.Serve returned
}

// h2Listener hands the connections that chose h2 by ALPN, handshake done,
// to the HTTP/2 server.
type h2Listener struct {
	addr   net.Addr
	ch     chan *tls.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *h2Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *h2Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *h2Listener) Addr() net.Addr { return l.addr }

var acmeChallengePrefix = []byte("/.well-known/acme-challenge/")

// SetFrontDoor configures HTTPS; call it before Serve and ServeTLS.
func (p *Proxy) SetFrontDoor(fd FrontDoor) {
	f := &front{cfg: fd, hsts: []byte(fd.HSTS)}
	if fd.HTTP2 {
		f.h2 = &http.Server{
			Handler:           http.HandlerFunc(p.serveH2Stream),
			MaxHeaderBytes:    maxHead,
			ReadHeaderTimeout: p.opts.ClientHeaderTimeout,
			IdleTimeout:       p.opts.ClientIdleTimeout,
			HTTP2: &http.HTTP2Config{
				MaxConcurrentStreams:          h2MaxStreams,
				MaxReceiveBufferPerStream:     1 << 20,
				MaxReceiveBufferPerConnection: 4 << 20,
			},
			ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		}
		f.ln = &h2Listener{ch: make(chan *tls.Conn), closed: make(chan struct{})}
		f.done = make(chan struct{})
		go func() { // stopped by shutdownH2
			defer close(f.done)
			_ = f.h2.Serve(f.ln)
		}()
	}
	p.front = f
}

// ServeTLS serves HTTPS on ln (a TCP listener) until Shutdown.
func (p *Proxy) ServeTLS(ln net.Listener) error {
	f := p.front
	if f == nil || f.cfg.TLS == nil {
		_ = ln.Close()
		return errors.New("router serve tls: no front door configured")
	}
	cfg := f.cfg.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	if f.h2 != nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if f.cfg.ALPNChallenge {
		cfg.NextProtos = append(cfg.NextProtos, acmeTLSProto)
	}
	p.evMu.Lock()
	stopped := p.stopped
	p.evMu.Unlock()
	if stopped {
		_ = ln.Close()
		return nil
	}
	cl := newClientListener(ln, p, cfg)
	defer func() {
		_ = cl.Close()
		cl.wg.Wait()
	}()
	if err := p.srv.Serve(cl); err != nil {
		return fmt.Errorf("router serve tls: %w", err)
	}
	return nil
}

// handshake runs c's TLS handshake within timeout; nil when it failed (c is
// closed then). The tls.Conn's transport is a tlsWire passing to c, so that
// an event loop can take the connection over (adoptTLS).
func (l *clientListener) handshake(c net.Conn, timeout time.Duration) (*tls.Conn, *tlsWire) {
	wire := &tlsWire{Conn: c}
	tc := tls.Server(wire, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		result = "timeout"
	default:
		result = "error"
	}
	if h := l.p.front.cfg.OnHandshake; h != nil {
		h(result)
	}
	if err != nil {
		_ = c.Close()
		return nil, nil
	}
	return tc, wire
}

// startH2 passes a connection that chose h2 to the HTTP/2 server; false
// when it is shutting down (the caller closes the connection).
func (p *Proxy) startH2(tc *tls.Conn) bool {
	f := p.front
	_ = tc.SetDeadline(time.Time{})
	select {
	case f.ln.ch <- tc:
		return true
	case <-f.ln.closed:
		return false
	}
}

// shutdownH2 sends GOAWAY on every HTTP/2 connection and waits for their
// streams (bounded by ctx), then closes what is left.
func (f *front) shutdownH2(ctx context.Context) {
	if f.h2 == nil {
		return
	}
	if err := f.h2.Shutdown(ctx); err != nil {
		_ = f.h2.Close()
	}
	<-f.done
}

// h2Conn is what handle sees of an HTTP/2 stream's connection: its
// addresses and TLS state (so IsTLS holds), no I/O.
type h2Conn struct {
	net.Conn // nil: never read or written
	remote   net.Addr
	state    *tls.ConnectionState
}

func (c h2Conn) RemoteAddr() net.Addr                 { return c.remote }
func (c h2Conn) LocalAddr() net.Addr                  { return zeroAddr }
func (c h2Conn) Handshake() error                     { return nil }
func (c h2Conn) ConnectionState() tls.ConnectionState { return *c.state }

var zeroAddr = &net.TCPAddr{}

var h2CtxPool = sync.Pool{New: func() any { return new(fasthttp.RequestCtx) }}

// serveH2Stream routes one HTTP/2 stream as a request: Handle on a
// RequestCtx built from it, its answer written back (streamed bodies
// flushed as they come, for SSE and downloads).
func (p *Proxy) serveH2Stream(w http.ResponseWriter, r *http.Request) {
	ctx := h2CtxPool.Get().(*fasthttp.RequestCtx)
	defer h2CtxPool.Put(ctx)
	var remote net.Addr = zeroAddr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		remote = net.TCPAddrFromAddrPort(ap)
	}
	state := r.TLS
	if state == nil {
		state = &tls.ConnectionState{}
	}
	ctx.Init2(h2Conn{remote: remote, state: state}, fasthttpLogger{p.log}, false)
	req := &ctx.Request
	req.Reset()
	ctx.Response.Reset()
	req.Header.DisableNormalizing()
	req.Header.SetMethod(r.Method)
	req.Header.SetRequestURI(r.RequestURI)
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		req.SetBodyStream(r.Body, int(r.ContentLength)) // -1: length unknown
	} else {
		req.Header.SetContentLength(0)
	}
	p.handle(ctx)

	resp := &ctx.Response
	h := w.Header()
	for k, v := range resp.Header.All() {
		if !isHopHeader(k) && !bytes.EqualFold(k, []byte("Content-Length")) {
			h.Add(string(k), string(v))
		}
	}
	if len(p.front.hsts) > 0 {
		h.Set("Strict-Transport-Security", string(p.front.hsts))
	}
	if !resp.IsBodyStream() {
		h.Set("Content-Length", strconv.Itoa(len(resp.Body())))
		w.WriteHeader(resp.StatusCode())
		_, _ = w.Write(resp.Body())
		return
	}
	if cl := resp.Header.ContentLength(); cl >= 0 {
		h.Set("Content-Length", strconv.Itoa(cl))
	}
	w.WriteHeader(resp.StatusCode())
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	bp := smallPool.Get().(*[]byte)
	defer smallPool.Put(bp)
	body := resp.BodyStream()
	if bs, ok := body.(*bodyStream); ok {
		// A stream the client reset or a connection gone ends the relay,
		// which closes the region's connection.
		stop := context.AfterFunc(r.Context(), bs.interrupt)
		defer stop()
	}
	for {
		n, err := body.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				break // the client reset the stream
			}
			_ = rc.Flush()
		}
		if err != nil {
			break
		}
	}
	_ = resp.CloseBodyStream()
}

// redirect answers a plain request with 308 to its HTTPS address; false for
// ACME HTTP-01 challenges, which stay on plain HTTP.
func (p *Proxy) redirect(ctx *fasthttp.RequestCtx) bool {
	uri := ctx.Request.Header.RequestURI()
	if bytes.HasPrefix(uri, acmeChallengePrefix) {
		return false
	}
	host := ctx.Request.Header.Host()
	if h, _, err := net.SplitHostPort(string(host)); err == nil {
		host = []byte(h)
	}
	var loc []byte
	loc = append(loc, "https://"...)
	loc = append(loc, host...)
	if port := p.front.cfg.RedirectPort; port != 443 {
		loc = append(loc, ':')
		loc = strconv.AppendInt(loc, int64(port), 10)
	}
	if len(uri) == 0 || uri[0] != '/' {
		uri = ctx.Request.URI().RequestURI()
	}
	loc = append(loc, uri...)
	ctx.Response.Reset()
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	ctx.Response.Header.SetBytesV("Location", loc)
	ctx.Response.Header.SetContentLength(0)
	if cl := ctx.Request.Header.ContentLength(); cl > 0 || cl == -1 {
		ctx.SetConnectionClose() // the body is not read
	}
	return true
}
