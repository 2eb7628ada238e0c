// Package proxy is the router's data plane: a fasthttp server whose handler
// picks a region from the current routing snapshot, forwards the request on
// that region's keep-alive pool, retries where it is safe, and streams the
// answer back. The request path takes no lock.
package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/table"
)

// DefaultRetryBodyLimit is how much of a request body the router buffers so
// the request can be re-sent to another region: bodies up to 64 KiB (with a
// Content-Length) are buffered; larger or chunked bodies stream straight
// through and are re-sent only if the first region never read a byte.
const DefaultRetryBodyLimit = 64 << 10

// smallBody is the largest response body read whole before answering, which
// frees the region connection before the client is written to.
const smallBody = 16 << 10

// maxAttempts bounds the regions one request may try.
const maxAttempts = 8

// Options tune the data plane; zero values take the defaults of Defaults.
type Options struct {
	DialTimeout           time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
	// The client-side timeouts (contract: ROUTER_CLIENT_*): the whole request
	// head, the longest wait between request body reads, the longest stall
	// writing to a client that does not read, and keep-alive idle time.
	ClientHeaderTimeout   time.Duration
	ClientBodyTimeout     time.Duration
	ClientWriteTimeout    time.Duration
	ClientIdleTimeout     time.Duration
	MaxIdleConnsPerRegion int
	// MaxConnsPerRegion caps open connections to one region.
	MaxConnsPerRegion int
	// TLS is the client TLS configuration for https regions (regiontls.Build).
	TLS *tls.Config
	// RetryBodyLimit: see DefaultRetryBodyLimit.
	RetryBodyLimit int
	// OutlierConsecutive failures (connection errors or 5xx) eject a region;
	// 0 disables passive outlier detection.
	OutlierConsecutive int
	// OutlierBaseEjection is the first ejection time; it doubles with every
	// ejection of the same region up to OutlierMaxEjection.
	OutlierBaseEjection time.Duration
	OutlierMaxEjection  time.Duration
	// BudgetRatio of the requests in BudgetWindow may be retried, plus
	// BudgetFloor retries per window.
	BudgetRatio  float64
	BudgetFloor  int
	BudgetWindow time.Duration
	// ShutdownGrace bounds how long Shutdown waits for in-flight requests.
	ShutdownGrace time.Duration
	// DisableEventLoop serves every connection on the fasthttp path; by
	// default (on Linux) plain requests take the event loop's fast path.
	DisableEventLoop bool

	// sndBuf, when set, shrinks the event loop's region sockets' send
	// buffers: tests use it to force partial writes.
	sndBuf int
	// loopPlainOnly keeps https regions off the event loop, which then
	// hands every connection over: tests use it to exercise the hand-off.
	loopPlainOnly bool
}

// Defaults fills zero fields with the defaults.
func (o Options) Defaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DialTimeout, 5*time.Second)
	def(&o.TLSHandshakeTimeout, 5*time.Second)
	def(&o.ResponseHeaderTimeout, 30*time.Second)
	def(&o.IdleConnTimeout, 90*time.Second)
	def(&o.ClientHeaderTimeout, 10*time.Second)
	def(&o.ClientBodyTimeout, 60*time.Second)
	def(&o.ClientWriteTimeout, 60*time.Second)
	def(&o.ClientIdleTimeout, 90*time.Second)
	def(&o.OutlierBaseEjection, 10*time.Second)
	def(&o.OutlierMaxEjection, 5*time.Minute)
	def(&o.BudgetWindow, 10*time.Second)
	def(&o.ShutdownGrace, 30*time.Second)
	if o.MaxIdleConnsPerRegion <= 0 {
		o.MaxIdleConnsPerRegion = 512
	}
	if o.MaxConnsPerRegion <= 0 {
		o.MaxConnsPerRegion = 4096
	}
	if o.RetryBodyLimit <= 0 {
		o.RetryBodyLimit = DefaultRetryBodyLimit
	}
	if o.BudgetRatio <= 0 {
		o.BudgetRatio = 0.2
	}
	if o.BudgetFloor <= 0 {
		o.BudgetFloor = 10
	}
	return o
}

// Proxy serves the router's listener.
type Proxy struct {
	table  *table.Table
	opts   Options
	m      *metrics.Router
	log    *slog.Logger
	budget *Budget
	srv    *fasthttp.Server

	lastPanicLog atomic.Int64
	hijackMu     sync.Mutex
	hijacked     map[net.Conn]struct{}
	closing      bool
	hijackWG     sync.WaitGroup

	evMu    sync.Mutex
	ev      *evEngine
	stopped bool

	front *front // HTTPS (front.go); nil when off
}

// New builds the proxy over t.
func New(t *table.Table, m *metrics.Router, o Options, log *slog.Logger) *Proxy {
	o = o.Defaults()
	p := &Proxy{
		table:    t,
		opts:     o,
		m:        m,
		log:      log,
		budget:   NewBudget(o.BudgetRatio, o.BudgetFloor, o.BudgetWindow),
		hijacked: map[net.Conn]struct{}{},
	}
	p.srv = &fasthttp.Server{
		Handler:           p.Handle,
		Name:              "",
		StreamRequestBody: true,
		// Every body streams and Handle reads it; a limit of one byte
		// keeps fasthttp from reading ahead under one deadline what
		// clientConn reads under the per-read body timeout.
		MaxRequestBodySize:           1,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		ReadBufferSize:               maxHead,
		ReadTimeout:                  o.ClientHeaderTimeout,
		IdleTimeout:                  o.ClientIdleTimeout,
		HeaderReceived:               p.headerReceived,
		ErrorHandler:                 p.parseError,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{log},
	}
	return p
}

// Serve accepts connections on ln until Shutdown: on Linux with a TCP
// listener through the event loop (which hands what it does not handle to
// the fasthttp server), else on the fasthttp server alone.
func (p *Proxy) Serve(ln net.Listener) error {
	p.evMu.Lock()
	if p.stopped {
		p.evMu.Unlock()
		_ = ln.Close()
		return nil
	}
	e, ok, err := p.startEventLoop(ln)
	p.ev = e
	p.evMu.Unlock()
	if err != nil {
		return fmt.Errorf("router serve: %w", err)
	}
	if ok {
		return e.accept()
	}
	cl := newClientListener(ln, p, nil)
	defer func() {
		_ = cl.Close()
		cl.wg.Wait()
	}()
	if err := p.srv.Serve(cl); err != nil {
		return fmt.Errorf("router serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting, waits for in-flight requests (bounded by ctx),
// then closes upgraded connections.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.evMu.Lock()
	p.stopped = true
	e := p.ev
	p.evMu.Unlock()
	if e != nil {
		e.stop(ctx)
	}
	h2done := make(chan struct{})
	go func() { // GOAWAY and the HTTP/2 streams, beside the HTTP/1.1 connections
		defer close(h2done)
		if p.front != nil {
			p.front.shutdownH2(ctx)
		}
	}()
	err := p.srv.ShutdownWithContext(ctx)
	<-h2done
	if e != nil {
		<-e.srvDone
	}
	p.hijackMu.Lock()
	p.closing = true
	for c := range p.hijacked {
		_ = c.Close()
	}
	p.hijackMu.Unlock()
	p.hijackWG.Wait()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("router shutdown: %w", err)
	}
	return nil
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}

var (
	headerRegion  = []byte("X-LB-Region")
	headerXFF     = []byte("X-Forwarded-For")
	headerXFHost  = []byte("X-Forwarded-Host")
	headerXFProto = []byte("X-Forwarded-Proto")
	headerConn    = []byte("Connection")
	strHTTP11     = []byte("HTTP/1.1")
	strHTTP       = []byte("http")
	strHTTPS      = []byte("https")
	strJSON       = []byte("application/json")
	hopHeaders    = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
)

// JSON bodies of the errors the router answers itself.
var (
	bodyNoRegion  = []byte(`{"error":"no region is available","code":"no_region_available"}`)
	bodyNoAnswer  = []byte(`{"error":"no region answered","code":"no_region_available"}`)
	bodyBadGW     = []byte(`{"error":"the region failed to answer","code":"bad_gateway"}`)
	bodyTimeout   = []byte(`{"error":"the region did not answer in time","code":"gateway_timeout"}`)
	bodyBadRegion = []byte(`{"error":"the region sent an invalid response","code":"bad_gateway"}`)
)

func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsPut() || h.IsDelete() || h.IsOptions() || h.IsTrace()
}

// bodyReader is a streamed request body on its way to a region. It turns
// a body that ends early into an error (so it is never sent as complete),
// remembers any error of the client's side (the request is then neither
// retried nor counted against the region), and tells whether a byte was
// read (whether the request may still go to another region).
type bodyReader struct {
	r    io.Reader
	want int64 // Content-Length, or -1 when chunked
	n    int64
	err  error
}

// errBodyCut is a request body that ended before its Content-Length.
var errBodyCut = errors.New("request body ended early")

func (c *bodyReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && (c.want < 0 || c.n == c.want):
	case errors.Is(err, io.EOF):
		c.err = errBodyCut
		return n, c.err
	default:
		c.err = fmt.Errorf("read request body: %w", err)
		return n, c.err
	}
	return n, err
}

var bodyReaderPool = sync.Pool{New: func() any { return new(bodyReader) }}

// retryBodyPool holds buffers for request bodies read whole (up to
// DefaultRetryBodyLimit; a larger configured limit allocates).
var retryBodyPool = sync.Pool{New: func() any { b := make([]byte, DefaultRetryBodyLimit); return &b }}

// Handle proxies one request.
func (p *Proxy) Handle(ctx *fasthttp.RequestCtx) {
	if status, body := checkRequest(&ctx.Request.Header); status != 0 {
		p.refuse(ctx, status, body)
		return
	}
	if f := p.front; f != nil {
		if f.cfg.ACMEChallenge != nil && bytes.HasPrefix(ctx.Request.Header.RequestURI(), acmeChallengePrefix) && f.cfg.ACMEChallenge(ctx) {
			return
		}
		secure := connIsTLS(ctx)
		if !secure && f.cfg.RedirectPort != 0 && p.redirect(ctx) {
			return
		}
		if secure && len(f.hsts) > 0 {
			defer ctx.Response.Header.SetBytesV("Strict-Transport-Security", f.hsts)
		}
	}
	p.handle(ctx)
}

// connIsTLS reports whether ctx came over the HTTPS listener.
func connIsTLS(ctx *fasthttp.RequestCtx) bool {
	if cc, ok := ctx.Conn().(*clientConn); ok {
		return cc.secure
	}
	return ctx.IsTLS()
}

// handle proxies a request whose head is valid.
func (p *Proxy) handle(ctx *fasthttp.RequestCtx) {
	p.m.InFlight.Inc()
	defer p.m.InFlight.Dec()
	if ctx.Request.Header.ConnectionUpgrade() && len(ctx.Request.Header.Peek("Upgrade")) > 0 {
		p.serveUpgrade(ctx)
		return
	}
	snap := p.table.Snapshot()
	up := snap.Pick()
	if up == nil {
		p.m.NoRegion.Inc()
		writeError(ctx, nil, fasthttp.StatusServiceUnavailable, bodyNoRegion)
		return
	}
	if snap.Panic {
		p.notePanic(snap)
	}

	in := &ctx.Request
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	cc, _ := ctx.Conn().(*clientConn)
	if cc != nil {
		cc.bodyReads(true)
		defer cc.bodyReads(false)
	}
	idem := isIdempotent(&in.Header)
	cl := in.Header.ContentLength()
	var br *bodyReader
	switch {
	case cl == -2 || cl == 0:
		// no body
	case cl > 0 && cl <= p.opts.RetryBodyLimit:
		// Read whole before any region sees it: it can be re-sent, and a
		// body that ends early reaches no region at all.
		var bp *[]byte
		if cl <= DefaultRetryBodyLimit {
			bp = retryBodyPool.Get().(*[]byte)
			defer retryBodyPool.Put(bp)
		} else {
			b := make([]byte, cl)
			bp = &b
		}
		body := (*bp)[:cl]
		if _, err := io.ReadFull(ctx.RequestBodyStream(), body); err != nil {
			p.refuseBody(ctx, err)
			return
		}
		out.SetBodyRaw(body)
	default:
		br = bodyReaderPool.Get().(*bodyReader)
		*br = bodyReader{r: ctx.RequestBodyStream(), want: int64(cl)}
		defer bodyReaderPool.Put(br)
		out.SetBodyStream(br, cl)
	}
	// A streamed body may go elsewhere only while none of it was read.
	resendable := func() bool { return br == nil || (br.n == 0 && br.err == nil) }
	in.Header.CopyTo(&out.Header)
	stripRequestHop(&out.Header, &in.Header)
	out.Header.SetProtocolBytes(strHTTP11)
	out.Header.SetNoDefaultContentType(true)
	setForwarded(ctx, &out.Header)
	uri := requestURI(in)
	start := time.Now()
	p.budget.Request(start)

	var tried [maxAttempts]*table.Upstream
	n := 0
	statusRetried := false
	stale := 0
	for {
		tried[n] = up
		n++
		setTarget(&out.Header, up, uri)
		resp := fasthttp.AcquireResponse()
		if n > 1 || stale > 0 {
			start = time.Now()
		}
		bs, err := roundTrip(up.Client, out, resp, p.opts.ResponseHeaderTimeout)
		if err == nil {
			if p.answeredBy(up, resp.StatusCode(), time.Since(start)) && idem && !statusRetried && n < maxAttempts && resendable() {
				if alt := p.alternative(snap, tried[:n], up, "status"); alt != nil {
					statusRetried = true
					if bs != nil {
						_ = bs.CloseWithError(errDiscard)
					} else {
						fasthttp.ReleaseResponse(resp)
					}
					up = alt
					continue
				}
			}
			p.relay(ctx, up, resp, bs)
			return
		}
		fasthttp.ReleaseResponse(resp)
		if br != nil && br.err != nil {
			// The client's body failed, not the region: the region's
			// connection was cut mid-body, and nothing is retried.
			p.log.Debug("request body failed", "region", up.Name, "err", br.err)
			p.refuseBody(ctx, br.err)
			return
		}

		if stale < 2 && resendable() && staleRetry(err, idem) {
			// Not the region's fault: try a fresh connection to it.
			stale++
			n--
			continue
		}
		f := p.failedAttempt(up, err, idem, resendable(), &statusRetried)
		if f.retry && n < maxAttempts {
			if alt := p.alternative(snap, tried[:n], up, f.reason); alt != nil {
				up = alt
				continue
			}
		}
		p.log.Debug("proxy error", "region", up.Name, "err", err, "retry", f.retry)
		status, body := p.answer(f)
		writeError(ctx, up, status, body)
		return
	}
}

// answeredBy records an answer of up with status, d after the request was
// sent; it reports a status an idempotent request may retry elsewhere.
func (p *Proxy) answeredBy(up *table.Upstream, status int, d time.Duration) (retryable bool) {
	up.Latency.Observe(d)
	if up.Metrics != nil {
		up.Metrics.Latency.Observe(d.Seconds())
		up.Metrics.Request(status)
	}
	if status >= 500 {
		p.failure(up)
	} else {
		up.Success()
	}
	return status == 502 || status == 503 || status == 504
}

// staleRetry reports a failure of a kept-alive connection that warrants a
// fresh connection to the same region: nothing was sent, or an idempotent
// request met a close before any answer byte.
func staleRetry(err error, idempotent bool) bool {
	return errors.Is(err, errStale) || (idempotent && errors.Is(err, errStaleRead))
}

// attemptFailure is what both paths decide after a failed attempt.
type attemptFailure struct {
	retry, notSent, timeout bool
	reason                  string // the retries metric's label
}

// failedAttempt counts a failed attempt on up and applies the retry rules:
// a request the region never saw may go elsewhere (any method, if its body
// can be re-sent); otherwise one retry, for idempotent methods only.
func (p *Proxy) failedAttempt(up *table.Upstream, err error, idempotent, resendable bool, retried *bool) attemptFailure {
	if up.Metrics != nil {
		up.Metrics.Request(0)
	}
	p.failure(up)
	f := attemptFailure{notSent: errors.Is(err, errNotSent), timeout: errors.Is(err, errHeaderTimeout), reason: "error"}
	switch {
	case f.notSent:
		f.retry = resendable
	case !*retried && idempotent && resendable:
		f.retry = true
		*retried = true
	}
	if f.notSent {
		f.reason = "connect"
	} else if f.timeout {
		f.reason = "timeout"
	}
	return f
}

// answer is the router's own answer to f when no retry is left.
func (p *Proxy) answer(f attemptFailure) (int, []byte) {
	switch {
	case f.notSent:
		p.m.NoRegion.Inc()
		return fasthttp.StatusServiceUnavailable, bodyNoAnswer
	case f.timeout:
		return fasthttp.StatusGatewayTimeout, bodyTimeout
	}
	return fasthttp.StatusBadGateway, bodyBadGW
}

var errDiscard = errors.New("response discarded for a retry")

// alternative returns another region for a retry if the budget allows.
func (p *Proxy) alternative(snap *table.Snapshot, tried []*table.Upstream, failed *table.Upstream, reason string) *table.Upstream {
	alt := snap.Alternative(tried)
	if alt == nil {
		return nil
	}
	if !p.budget.Allow(time.Now()) {
		p.m.Exhausted.Inc()
		return nil
	}
	if failed.Metrics != nil {
		failed.Metrics.Retry(reason)
	}
	return alt
}

// failure counts a failed answer and ejects the region at the threshold.
func (p *Proxy) failure(up *table.Upstream) {
	if c := up.Failure(); p.opts.OutlierConsecutive > 0 && c >= p.opts.OutlierConsecutive && !up.Ejected() {
		p.table.Eject(up, p.opts.OutlierBaseEjection, p.opts.OutlierMaxEjection)
	}
}

func (p *Proxy) notePanic(snap *table.Snapshot) {
	p.m.Panic.Inc()
	now := time.Now().Unix()
	if last := p.lastPanicLog.Load(); now-last >= 10 && p.lastPanicLog.CompareAndSwap(last, now) {
		p.log.Warn("panic routing: no region in rotation, trying every region not ejected", "candidates", len(snap.Candidates))
	}
}

var smallPool = sync.Pool{New: func() any { b := make([]byte, smallBody); return &b }}

// relay copies the region's answer to the client; bs (nil when there is no
// body) owns resp.
func (p *Proxy) relay(ctx *fasthttp.RequestCtx, up *table.Upstream, resp *fasthttp.Response, bs *bodyStream) {
	h := &ctx.Response.Header
	resp.Header.CopyTo(h)
	h.SetProtocol(strHTTP11)        // the router speaks HTTP/1.1 whatever the region does
	h.SetNoDefaultContentType(true) // no Content-Type the region did not send
	stripResponseHop(h)
	h.DisableNormalizing() // header names reach the client as the region wrote them, ours as documented
	h.SetBytesK(headerRegion, up.Name)
	if bs == nil {
		fasthttp.ReleaseResponse(resp)
		return
	}
	cl := resp.Header.ContentLength()
	if cl >= 0 && cl <= smallBody {
		bp := smallPool.Get().(*[]byte)
		buf := (*bp)[:cl]
		_, err := io.ReadFull(bs, buf)
		if err == nil {
			ctx.Response.SetBody(buf)
		}
		_ = bs.CloseWithError(err)
		smallPool.Put(bp)
		if err != nil {
			h.Reset()
			writeError(ctx, up, fasthttp.StatusBadGateway, bodyBadRegion)
		}
		return
	}
	if cl < 0 {
		cl = -1
	}
	// Streamed bodies (SSE, downloads) may take as long as they take.
	bs.clearDeadline()
	ctx.Response.SetBodyStream(bs, cl)
}

// writeError answers with the router's own JSON error.
func writeError(ctx *fasthttp.RequestCtx, up *table.Upstream, status int, body []byte) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(strJSON)
	if up != nil {
		ctx.Response.Header.DisableNormalizing()
		ctx.Response.Header.SetBytesK(headerRegion, up.Name)
	}
	ctx.Response.SetBodyRaw(body)
}

// requestURI is the path and query as the client sent them.
func requestURI(in *fasthttp.Request) []byte {
	uri := in.Header.RequestURI()
	if len(uri) > 0 && uri[0] == '/' {
		return uri
	}
	if bytes.Equal(uri, []byte("*")) {
		return uri
	}
	return in.URI().RequestURI() // absolute-form request
}

// setTarget points the request at up: Host and the endpoint's path prefix.
func setTarget(h *fasthttp.RequestHeader, up *table.Upstream, uri []byte) {
	h.SetHost(up.Host)
	if up.PathPrefix == "" {
		h.SetRequestURIBytes(uri)
		return
	}
	var arr [512]byte
	buf := append(arr[:0], up.PathPrefix...)
	if len(uri) > 0 && uri[0] != '/' { // "*"
		uri = nil
	}
	buf = append(buf, uri...)
	if len(buf) == len(up.PathPrefix) {
		buf = append(buf, '/')
	}
	h.SetRequestURIBytes(buf)
}

// setForwarded sets X-Forwarded-For (the client's address: with no trusted
// proxy, a client's own forwarding headers are dropped by stripRequestHop),
// -Host and -Proto.
func setForwarded(ctx *fasthttp.RequestCtx, h *fasthttp.RequestHeader) {
	var arr [64]byte
	buf := arr[:0]
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		buf = ta.AddrPort().Addr().Unmap().AppendTo(buf)
	} else {
		buf = append(buf, ctx.RemoteAddr().String()...)
	}
	h.SetBytesKV(headerXFF, buf)
	h.SetBytesKV(headerXFHost, ctx.Request.Header.Host())
	if connIsTLS(ctx) {
		h.SetBytesKV(headerXFProto, strHTTPS)
	} else {
		h.SetBytesKV(headerXFProto, strHTTP)
	}
}

// hopLen marks the lengths of hop-by-hop header names, so isHopHeader
// rejects most names without comparing them; derived from hopHeaders so the
// two cannot disagree.
var hopLen = func() (l [32]bool) {
	for _, h := range hopHeaders {
		l[len(h)] = true
	}
	return l
}()

// isHopHeader reports whether key is one of hopHeaders, in any case.
func isHopHeader(key []byte) bool {
	if len(key) >= len(hopLen) || !hopLen[len(key)] {
		return false
	}
	for _, h := range hopHeaders {
		if len(h) == len(key) && bytes.EqualFold(key, []byte(h)) {
			return true
		}
	}
	return false
}

// hopDeleter is what deleteHop needs of fasthttp's request and response
// headers.
type hopDeleter interface {
	DelBytes(key []byte)
	Del(key string)
	ResetConnectionClose()
}

// stripRequestHop removes hop-by-hop headers from h, including those the
// client named in Connection (read from in, the request as received), and
// every forwarding header the client sent (isForwardingHeader).
func stripRequestHop(h, in *fasthttp.RequestHeader) {
	conn := in.PeekBytes(headerConn)
	hop, fwd := scanDropped(h.All(), isForwardingHeader)
	if fwd {
		deleteMatching(h, isForwardingHeader)
	}
	if len(conn) == 0 && !hop {
		h.ResetConnectionClose()
		return
	}
	deleteHop(h, conn)
}

// stripResponseHop removes hop-by-hop headers from a region's answer, and
// its own X-LB-Region (the router sets it).
func stripResponseHop(h *fasthttp.ResponseHeader) {
	conn := h.PeekBytes(headerConn)
	hop, region := scanDropped(h.All(), isRegionHeader)
	if region {
		deleteMatching(h, isRegionHeader)
	}
	if len(conn) == 0 && !hop {
		h.ResetConnectionClose()
		return
	}
	deleteHop(h, conn)
}

// deleteMatching deletes every header whose name matches, one spelling at
// a time (fasthttp's headers cannot be deleted from while iterated, and a
// region's header names keep their case, so x-lb-region and X-LB-Region
// are two deletions).
func deleteMatching(h interface {
	All() iter.Seq2[[]byte, []byte]
	DelBytes(key []byte)
	Len() int
}, match func([]byte) bool) {
	for {
		var arr [32]byte
		var k []byte
		for name := range h.All() {
			if match(name) {
				k = append(arr[:0], name...)
				break
			}
		}
		n := h.Len()
		if k == nil {
			return
		}
		if h.DelBytes(k); h.Len() == n {
			return // cannot happen: the name was just seen; never loop on it
		}
	}
}

func isRegionHeader(name []byte) bool { return eqFold(name, "x-lb-region") }

// scanDropped is the common case's fast path: one pass over the headers
// usually finds nothing to delete, which is cheaper than a Del per name. It
// reports a hop-by-hop header, and one that other reports.
func scanDropped(all iter.Seq2[[]byte, []byte], other func([]byte) bool) (hop, found bool) {
	for k := range all {
		if isHopHeader(k) {
			hop = true
		} else if other(k) {
			found = true
		}
	}
	return hop, found
}

// deleteHop removes the standard hop-by-hop headers and those named in conn.
func deleteHop(h hopDeleter, conn []byte) {
	for tok := range bytes.SplitSeq(conn, []byte(",")) {
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			h.DelBytes(tok)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.ResetConnectionClose()
}
