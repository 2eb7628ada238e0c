package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/table"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/testpki"
)

type testRouter struct {
	table  *table.Table
	url    string
	events chan table.Event
	m      *metrics.Router
	reg    *prometheus.Registry
	p      *Proxy
	// dial, when set, is how raw clients connect (the HTTPS listener at
	// tlsAddr, its certificate signed by the CA in caPEM).
	dial    func() (net.Conn, error)
	tlsAddr string
	caPEM   []byte
}

// startRouter runs a proxy over regions (name -> endpoint) with strategy;
// each setup runs before Serve, and what it returns is waited for after
// Shutdown (a second listener's Serve, say).
func startRouter(t *testing.T, o Options, strategyName string, regions map[string]string, setup ...func(p *Proxy) (wait func())) *testRouter {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	o = o.Defaults()
	if os.Getenv("ROUTER_TEST_EVENT_LOOP") == "false" {
		o.DisableEventLoop = true
	}
	events := make(chan table.Event, 64)
	tb := table.New(table.Options{NewUpstream: UpstreamFactory(o, m), Events: events, Log: logging.Discard()})
	st := table.NewState()
	for name, ep := range regions {
		st.Regions[name] = model.Region{Region: name, Endpoint: ep, Weight: 1}
	}
	st.Strategy = &model.StrategyConfig{Strategy: strategyName}
	tb.Replace(st)
	p := New(tb, m, o, logging.Discard())
	var waits []func()
	for _, f := range setup {
		waits = append(waits, f(p))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-done
		for _, w := range waits {
			w()
		}
		tb.Close()
	})
	return &testRouter{table: tb, url: "http://" + ln.Addr().String(), events: events, m: m, reg: reg, p: p}
}

// serveConns accepts connections on ln until the test ends and runs handle
// on each in a goroutine of its own, closing the connection when handle
// returns. The cleanup closes ln and the open connections, and waits for
// the handlers.
func serveConns(t *testing.T, ln net.Listener, handle func(c net.Conn)) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		open   = map[net.Conn]struct{}{}
		closed bool
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				_ = c.Close()
				return
			}
			open[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			})
		}
	})
}

// client is a plain client with its own pool so tests do not share sockets.
func client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

// deadAddr returns a loopback address nothing listens on (port 1 is never
// handed out to test listeners, unlike a port that was just freed).
func deadAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:1"
}

// testCA makes a CA and a server certificate for localhost and 127.0.0.1
// signed by it, and writes the CA to a PEM file (as REGION_TLS_CA_FILE
// would name).
func testCA(t *testing.T) (serverCert tls.Certificate, caFile string) {
	t.Helper()
	ca := testpki.NewCA(t)
	certPEM, keyPEM := ca.Leaf(t, 2, time.Now().Add(time.Hour), "localhost", "127.0.0.1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, caFile
}
