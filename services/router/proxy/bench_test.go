package proxy

import (
	"bufio"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/table"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
)

// benchProxy is a Proxy over three loopback fasthttp regions answering a
// small body, as in bench/run.sh, driven without a client socket.
func benchProxy(b testing.TB) *Proxy {
	b.Helper()
	body := []byte("hello from a bench region\n")
	st := table.NewState()
	for _, name := range []string{"b1", "b2", "b3"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		}, NoDefaultServerHeader: true}
		go func() { _ = srv.Serve(ln) }()
		b.Cleanup(func() { _ = srv.Shutdown() })
		st.Regions[name] = model.Region{Region: name, Endpoint: "http://" + ln.Addr().String(), Weight: 1}
	}
	st.Strategy = &model.StrategyConfig{Strategy: model.StrategyRoundRobin}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	o := Options{}.Defaults()
	tb := table.New(table.Options{NewUpstream: UpstreamFactory(o, m), Log: logging.Discard()})
	tb.Replace(st)
	b.Cleanup(tb.Close)
	return New(tb, m, o, logging.Discard())
}

// wrkRequest is a GET as wrk sends it, from a loopback client.
func wrkRequest() *fasthttp.RequestCtx {
	// Read from the wire, as the server does: Handle checks the raw head.
	var req fasthttp.Request
	head := "GET /bench?x=1 HTTP/1.1\r\nHost: lb.example\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
	if err := req.Header.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		panic(err)
	}
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

// The request path allocates nothing per request (pools only), so a busy
// router does not make garbage for the collector to pause over.
func TestHandleAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race; make test runs this test without it")
	}
	p := benchProxy(t)
	ctx := wrkRequest()
	run := func() {
		ctx.Response.Reset()
		p.Handle(ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			t.Fatalf("status %d", ctx.Response.StatusCode())
		}
	}
	for range 50 { // fill the pools and open the connections
		run()
	}
	// Counted by hand: testing.AllocsPerRun rounds the average down, so it
	// would pass up to runs-1 allocations.
	// A pool refilled after a GC or a new pooled connection allocates now
	// and then; one allocation per request is what must not happen.
	assertNoAllocsPerRequest(t, run)
}

// assertNoAllocsPerRequest fails when 1,000 runs of run allocate as much as
// once in ten runs, counted by hand over the whole process.
func assertNoAllocsPerRequest(t *testing.T, run func()) {
	t.Helper()
	const runs = 1000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		run()
	}
	runtime.ReadMemStats(&after)
	n := after.Mallocs - before.Mallocs
	t.Logf("%d allocations in %d proxied requests", n, runs)
	if n > runs/10 {
		t.Fatalf("%d allocations in %d proxied requests, want none per request", n, runs)
	}
}

// BenchmarkHandle is the request path of one proxied GET: pick, header
// rewrite, round trip on a pooled connection, relay of a small body.
func BenchmarkHandle(b *testing.B) {
	p := benchProxy(b)
	b.ReportAllocs()
	b.SetParallelism(16) // many connections in flight, as under wrk -c64
	b.RunParallel(func(pb *testing.PB) {
		ctx := wrkRequest()
		for pb.Next() {
			ctx.Response.Reset()
			p.Handle(ctx)
			if ctx.Response.StatusCode() != fasthttp.StatusOK || len(ctx.Response.Body()) == 0 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}

// BenchmarkHeaders is the header work of the request path without I/O:
// copy, hop-by-hop removal, X-Forwarded-*, target, and the response side.
func BenchmarkHeaders(b *testing.B) {
	ctx := wrkRequest()
	up, err := table.ParseEndpoint("b1", "http://127.0.0.1:9101/api")
	if err != nil {
		b.Fatal(err)
	}
	var resp fasthttp.Response
	resp.Header.SetContentType("text/plain")
	resp.Header.Set("Date", "Wed, 25 Nov 2026 12:49:14 GMT")
	resp.Header.SetContentLength(26)
	var out fasthttp.Request
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		ctx.Request.Header.CopyTo(&out.Header)
		stripRequestHop(&out.Header, &ctx.Request.Header)
		out.Header.SetProtocolBytes(strHTTP11)
		setForwarded(ctx, &out.Header)
		setTarget(&out.Header, up, requestURI(&ctx.Request))
		ctx.Response.Reset()
		resp.Header.CopyTo(&ctx.Response.Header)
		stripResponseHop(&ctx.Response.Header)
		ctx.Response.Header.SetBytesK(headerRegion, up.Name)
	}
}
