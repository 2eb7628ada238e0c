package router_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/testpki"
)

// leaf writes a certificate for localhost and 127.0.0.1 with serial to
// certFile and its key to keyFile, each atomically.
func leaf(t *testing.T, ca *testpki.CA, serial int64, certFile, keyFile string) {
	t.Helper()
	c, k := ca.Leaf(t, serial, time.Now().Add(12*time.Hour), "localhost", "127.0.0.1")
	writeAtomic(t, keyFile, k)
	writeAtomic(t, certFile, c)
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedSerial is the serial of the certificate a new connection gets.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// The HTTPS listener end to end in the service: HTTP/1.1 and HTTP/2 with
// HSTS; new certificate files are taken on SIGHUP without closing a
// kept-alive connection; a broken file keeps the old certificate and
// publishes tls.reload_failed.
func TestHTTPSListenerAndCertificateReload(t *testing.T) {
	// The test sends SIGHUP to its own process: a channel of its own keeps
	// the process alive whatever the router does with it.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	pki := testpki.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	leaf(t, pki, 1, certFile, keyFile)
	ns := embeddednats.StartForTest(t)
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), func(c *router.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.TLSAddr = "127.0.0.1:0"
		c.HSTS = "max-age=300"
	})
	regions := e.kv(t, bus.BucketRegions)
	g := named("secure-region")
	defer g.Close()
	put(t, regions, "r1", region("r1", g.URL, 1))
	poll.True(t, 5*time.Second, "the region in the table", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 1 })
	sub, err := e.nc.SubscribeSync(bus.SubjectEventsTLS)
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + e.svc.TLSAddr()
	h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, ServerName: "localhost"}}
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, ServerName: "localhost"}, ForceAttemptHTTP2: true}
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	reused := func(tr *http.Transport) bool {
		t.Helper()
		var was bool
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { was = i.Reused },
		}), http.MethodGet, base+"/x", nil)
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "secure-region" || resp.Header.Get("Strict-Transport-Security") != "max-age=300" {
			t.Fatalf("%s: %d %q HSTS %q", resp.Proto, resp.StatusCode, b, resp.Header.Get("Strict-Transport-Security"))
		}
		if tr == h2 && resp.ProtoMajor != 2 {
			t.Fatalf("ALPN gave %s, want HTTP/2", resp.Proto)
		}
		return was
	}
	reused(h1)
	reused(h2)
	if got := servedSerial(t, e.svc.TLSAddr(), pki.Pool); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// New files, SIGHUP: new connections get them, kept-alive ones go on.
	leaf(t, pki, 2, certFile, keyFile)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "the new certificate served", func() bool { return servedSerial(t, e.svc.TLSAddr(), pki.Pool) == 2 })
	if !reused(h1) || !reused(h2) {
		t.Fatal("a kept-alive connection was closed by the reload")
	}

	// A broken file: the old certificate stays, and the event says why.
	writeAtomic(t, certFile, []byte("not a certificate"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no tls.reload_failed event: %v", err)
	}
	var ev model.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Type != model.EventTLSReloadFailed || ev.RouterID != "test-router" || ev.Reason == "" {
		t.Fatalf("event %s (%v)", msg.Data, err)
	}
	if got := servedSerial(t, e.svc.TLSAddr(), pki.Pool); got != 2 {
		t.Fatalf("after a broken file: serial %d, want the previous one (2)", got)
	}
	if infos := e.svc.Certificates(); len(infos) != 1 || infos[0].Source != "file" {
		t.Fatalf("certificates %+v", infos)
	}
	// The presence record carries them, for GET /api/v1/lb/certificates.
	routers := e.kv(t, bus.BucketRouters)
	poll.True(t, 5*time.Second, "certificates in the presence record", func() bool {
		entry, err := routers.Get(context.Background(), "test-router")
		var info model.RouterInfo
		return err == nil && json.Unmarshal(entry.Value(), &info) == nil && len(info.Certificates) == 1 &&
			info.Certificates[0].Names[0] == "localhost" && info.Certificates[0].Source == "file"
	})
}

// A bad certificate file at start-up is a configuration error naming the
// variable (the process exits 2).
func TestHTTPSBadFileAtStart(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	leaf(t, testpki.NewCA(t), 1, certFile, keyFile)
	writeAtomic(t, certFile, []byte("garbage"))
	cfg := router.DefaultConfig()
	cfg.Addr, cfg.TLSAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "off"
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.StateFile = filepath.Join(dir, "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := embeddednats.StartForTest(t)
	nc, err := bus.Connect(ctx, "router-test", ns.ClientURL(), logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = router.New(ctx, nc, cfg, logging.Discard(), prometheus.NewRegistry())
	var ve *config.VarError
	if !errors.As(err, &ve) || ve.Var != "ROUTER_TLS_CERT_FILE" {
		t.Fatalf("New with a garbage certificate: %v, want a config.VarError naming ROUTER_TLS_CERT_FILE", err)
	}
}

// ACME beside certificate files, before ACME has a certificate: the files
// serve every name (the ACME one too) rather than a failed handshake, an
// HTTP-01 path with no challenge in the bucket is proxied like any request,
// and an order that cannot reach the CA publishes tls.certificate_failed.
func TestACMEBesideFilesBeforeItsFirstCertificate(t *testing.T) {
	pki := testpki.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	leaf(t, pki, 7, certFile, keyFile)
	ca, err := net.Listen("tcp", "127.0.0.1:0") // accepts, then closes: no CA answers
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	go func() {
		for {
			c, err := ca.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	ns := embeddednats.StartForTest(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(bus.SubjectEventsTLS)
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, ns, filepath.Join(t.TempDir(), "state.json"), func(c *router.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.TLSAddr = "127.0.0.1:0"
		c.ACMEDomains = []string{"shop.example.test"}
		c.ACMECA = "https://" + ca.Addr().String() + "/directory"
		c.ACMERenewCheck = config.Duration(time.Minute)
	})
	g := named("region")
	defer g.Close()
	put(t, e.kv(t, bus.BucketRegions), "r1", region("r1", g.URL, 1))
	poll.True(t, 5*time.Second, "the region in the table", func() bool { return len(e.svc.Table().Snapshot().Candidates) == 1 })

	for _, sni := range []string{"localhost", "shop.example.test", ""} {
		c, err := tls.Dial("tcp", e.svc.TLSAddr(), &tls.Config{ServerName: sni, InsecureSkipVerify: true}) //nolint:gosec // the serial is what is checked
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 7 {
			t.Errorf("SNI %q: serial %d, want the file's (7)", sni, got)
		}
		_ = c.Close()
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/.well-known/acme-challenge/unknown-token", nil)
	req.Host = "shop.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "region" {
		t.Fatalf("unknown HTTP-01 token: %d %q, want it proxied to the region", resp.StatusCode, b)
	}

	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no tls.certificate_failed event: %v", err)
	}
	var ev model.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Type != model.EventTLSCertificateFailed ||
		ev.RouterID != "test-router" || len(ev.Names) != 1 || ev.Names[0] != "shop.example.test" || ev.Reason == "" {
		t.Fatalf("event %s (%v)", msg.Data, err)
	}
	if infos := e.svc.Certificates(); len(infos) != 1 || infos[0].Source != "file" {
		t.Fatalf("certificates %+v: want the file's only", infos)
	}
}
