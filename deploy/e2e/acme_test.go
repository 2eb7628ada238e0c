package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/testpki"
)

// The ACME tests run router processes against Pebble, Let's Encrypt's ACME
// test server, on loopback. Pebble resolves every name to 127.0.0.1 through
// the test's DNS server and validates challenges on the ports its config
// names, so each case points it at one router's listener and at a closed
// port for the other challenge type: the case then proves that challenge.

const acmeName = "shop.example.test"

// pebbleBin returns LB_BIN_DIR/pebble (make test builds it), or builds it
// from deploy/tools, outside the workspace, into a temporary folder.
func pebbleBin(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LB_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "pebble"); fileExists(p) {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "pebble")
	cmd := exec.Command("go", "build", "-o", p, "github.com/letsencrypt/pebble/v2/cmd/pebble")
	cmd.Dir = filepath.Join("..", "tools")
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build pebble: %v\n%s", err, b)
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// startDNS answers every A question with 127.0.0.1, over UDP and TCP on one
// port (Pebble asks over TCP), so that Pebble's validations of any name
// reach loopback only.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return ln.Addr().String()
}

// pebble is one running Pebble: its directory URL, the PEM file of the root
// its HTTPS listener chains to (ACME_CA_ROOTS) and the roots it issues under.
type pebble struct {
	dir    string
	caFile string
	issued *x509.CertPool
}

// startPebble runs Pebble validating HTTP-01 on httpPort and TLS-ALPN-01 on
// tlsPort, issuing certificates valid for validity.
func startPebble(t *testing.T, bin, dnsAddr string, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	certPEM, keyPEM := ca.Leaf(t, 1, time.Now().Add(24*time.Hour), "localhost", "127.0.0.1")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	listen, mgmt := freePort(t), freePort(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":             write("cert.pem", certPEM),
		"privateKey":              write("key.pem", keyPEM),
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":            "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "test", "validityPeriod": int(validity / time.Second),
		}},
	}}
	b, _ := json.Marshal(conf)
	p := &proc{name: "pebble", bin: bin, dir: dir, log: filepath.Join(dir, "log"),
		args: []string{"-config", write("pebble.json", b), "-dnsserver", dnsAddr},
		// No random sleeps before validations, no rejected nonces, and every
		// order validated afresh (no reuse of a valid authorization).
		env: []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}}
	p.start(t)
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("pebble log:\n%s", tail(p.output(), 40))
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)
	get := func(url string) ([]byte, error) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", url, resp.Status)
		}
		return body, err
	}
	pb := &pebble{dir: fmt.Sprintf("https://localhost:%d/dir", listen), caFile: write("ca.pem", ca.PEM()), issued: x509.NewCertPool()}
	poll.Until(t, 30*time.Second, "pebble answers", func() error {
		_, err := get(pb.dir)
		return err
	})
	root, err := get(fmt.Sprintf("https://localhost:%d/roots/0", mgmt))
	if err != nil || !pb.issued.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: %v %q", err, root)
	}
	return pb
}

// acmeRouter is a router process with ACME on.
type acmeRouter struct {
	*proc
	id, tlsAddr, metrics string
}

func startACMERouter(t *testing.T, bin, id, natsURL string, httpPort, tlsPort int, pb *pebble) *acmeRouter {
	t.Helper()
	dir := t.TempDir()
	r := &acmeRouter{id: id, tlsAddr: fmt.Sprintf("127.0.0.1:%d", tlsPort), metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	r.proc = &proc{name: id, bin: filepath.Join(bin, "router"), dir: dir, log: filepath.Join(dir, "log"), env: []string{
		"NATS_URL=" + natsURL, "NATS_REQUEST_TIMEOUT=2s", "LOG_LEVEL=info",
		"METRICS_ADDR=" + r.metrics, "ROUTER_ID=" + id,
		fmt.Sprintf("ROUTER_ADDR=127.0.0.1:%d", httpPort), "ROUTER_TLS_ADDR=" + r.tlsAddr,
		"ROUTER_STATE_FILE=" + filepath.Join(dir, "state.json"),
		"ACME_DOMAINS=" + acmeName, "ACME_EMAIL=ops@example.test", "ACME_CA=" + pb.dir, "ACME_CA_ROOTS=" + pb.caFile,
		"ACME_RENEW_CHECK_INTERVAL=1s",
	}}
	r.start(t)
	t.Cleanup(func() {
		r.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s log:\n%s", id, tail(r.output(), 60))
		}
	})
	return r
}

// served is the certificate r's HTTPS listener gives for acmeName, verified
// against the roots Pebble issues under.
func (r *acmeRouter) served(pb *pebble) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", r.tlsAddr, &tls.Config{ServerName: acmeName, RootCAs: pb.issued, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	return c.ConnectionState().PeerCertificates[0], nil
}

// expiryMetric is r's lb_router_certificate_expiry_timestamp_seconds for
// acmeName.
func (r *acmeRouter) expiryMetric() (int64, error) {
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	prefix := `lb_router_certificate_expiry_timestamp_seconds{name="` + acmeName + `"} `
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, errors.New("no expiry metric for " + acmeName)
}

func isCertEvent(typ string) func(model.Event) bool {
	return func(e model.Event) bool {
		return e.Type == typ && len(e.Names) == 1 && e.Names[0] == acmeName
	}
}

func (ev *events) count(match func(model.Event) bool) int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	n := 0
	for _, e := range ev.all {
		if match(e) {
			n++
		}
	}
	return n
}

func TestACME(t *testing.T) {
	bin := binDir(t)
	pebbleBin := pebbleBin(t)
	dnsAddr := startDNS(t)

	// Two replicas start together: one orders (HTTP-01; Pebble validates on
	// router-1's plain listener whichever replica ordered, since the
	// challenge is in the bucket), both serve the certificate. With a 30 s
	// lifetime it is renewed once a third is left, by one replica, and both
	// then serve the new one.
	t.Run("two replicas one order then renewal (HTTP-01)", func(t *testing.T) {
		t.Parallel()
		srv := embeddednats.StartForTest(t)
		_, _, ev := observer(t, srv.ClientURL())
		h1, t1, h2, t2 := freePort(t), freePort(t), freePort(t), freePort(t)
		const lifetime = 30 * time.Second
		pb := startPebble(t, pebbleBin, dnsAddr, h1, freePort(t), lifetime)
		r1 := startACMERouter(t, bin, "acme-r1", srv.ClientURL(), h1, t1, pb)
		r2 := startACMERouter(t, bin, "acme-r2", srv.ClientURL(), h2, t2, pb)

		var first *x509.Certificate
		poll.Until(t, 90*time.Second, "both replicas serve an ACME certificate", func() error {
			c1, err := r1.served(pb)
			if err != nil {
				return fmt.Errorf("router-1: %w", err)
			}
			c2, err := r2.served(pb)
			if err != nil {
				return fmt.Errorf("router-2: %w", err)
			}
			if c1.SerialNumber.Cmp(c2.SerialNumber) != 0 {
				return fmt.Errorf("different certificates: %s and %s", c1.SerialNumber, c2.SerialNumber)
			}
			first = c1
			return nil
		})
		issued := ev.wait(t, 10*time.Second, 0, "tls.certificate_issued", isCertEvent(model.EventTLSCertificateIssued))
		if issued.Reason != "new" {
			t.Errorf("first issue: reason %q, want new", issued.Reason)
		}
		if n := ev.count(isCertEvent(model.EventTLSCertificateIssued)); n != 1 {
			t.Fatalf("%d tls.certificate_issued events for one name on two replicas, want 1 (one order)", n)
		}
		poll.Until(t, 10*time.Second, "expiry metric", func() error {
			v, err := r2.expiryMetric()
			if err == nil && v != first.NotAfter.Unix() {
				err = fmt.Errorf("expiry metric %d, want %d", v, first.NotAfter.Unix())
			}
			return err
		})

		life := first.NotAfter.Sub(first.NotBefore)
		windowStart := first.NotAfter.Add(-life / 3)
		var renewed *x509.Certificate
		poll.Until(t, time.Until(first.NotAfter)+30*time.Second, "both replicas serve the renewed certificate", func() error {
			for _, r := range []*acmeRouter{r1, r2} {
				c, err := r.served(pb)
				if err != nil {
					return fmt.Errorf("%s: %w", r.id, err)
				}
				if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
					return fmt.Errorf("%s still serves the first certificate", r.id)
				}
				renewed = c
			}
			return nil
		})
		renewal, ok := ev.find(0, func(e model.Event) bool {
			return isCertEvent(model.EventTLSCertificateIssued)(e) && e.Reason == "renewal"
		})
		if !ok {
			t.Fatal("no tls.certificate_issued event with reason renewal")
		}
		if renewal.At.Before(windowStart.Add(-2*time.Second)) || !renewal.At.Before(first.NotAfter) {
			t.Errorf("renewed at %s; want within [%s, %s): a third of the lifetime left, before expiry",
				renewal.At.Format(time.RFC3339Nano), windowStart.Format(time.RFC3339Nano), first.NotAfter.Format(time.RFC3339Nano))
		}
		if !renewed.NotAfter.After(first.NotAfter) {
			t.Errorf("renewed certificate ends %s, not after the first one's %s", renewed.NotAfter, first.NotAfter)
		}
		t.Logf("issued %s, renewal window from %s, renewed at %s by %s", first.NotBefore.Format(time.RFC3339), windowStart.Format(time.RFC3339), renewal.At.Format(time.RFC3339), renewal.RouterID)
	})

	// A replica is killed (SIGKILL) while it holds the order's lock. The
	// other waits for the lock to expire, then orders by TLS-ALPN-01 (Pebble
	// validates on its HTTPS listener only) and serves the certificate; the
	// killed one, started again, serves it from the bucket without ordering.
	t.Run("replica killed holding the lock (TLS-ALPN-01)", func(t *testing.T) {
		t.Parallel()
		srv, _, js := embeddednats.JetStreamForTest(t)
		_, _, ev := observer(t, srv.ClientURL())
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
			t.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, bus.BucketCerts)
		if err != nil {
			t.Fatal(err)
		}
		locks, err := kv.Watch(ctx, "l.>", jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = locks.Stop() }()

		hA, tA, hB, tB := freePort(t), freePort(t), freePort(t), freePort(t)
		pb := startPebble(t, pebbleBin, dnsAddr, freePort(t), tB, time.Hour)
		rA := startACMERouter(t, bin, "acme-ra", srv.ClientURL(), hA, tA, pb)
		var lock struct {
			Holder  string    `json:"holder"`
			Expires time.Time `json:"expires"`
		}
		select {
		case e := <-locks.Updates():
			rA.stop(syscall.SIGKILL)
			if e == nil || json.Unmarshal(e.Value(), &lock) != nil {
				t.Fatalf("lock entry %v unreadable", e)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("router A took no lock in 60s")
		}
		if lock.Holder != rA.id {
			t.Fatalf("lock held by %q, want %q", lock.Holder, rA.id)
		}
		killedAt := time.Now()
		rB := startACMERouter(t, bin, "acme-rb", srv.ClientURL(), hB, tB, pb)
		var cert *x509.Certificate
		poll.Until(t, time.Until(lock.Expires)+90*time.Second, "router B serves a certificate", func() error {
			c, err := rB.served(pb)
			cert = c
			return err
		})
		issued := ev.wait(t, 10*time.Second, 0, "tls.certificate_issued", isCertEvent(model.EventTLSCertificateIssued))
		if issued.RouterID != rB.id {
			t.Errorf("issued by %q, want %q", issued.RouterID, rB.id)
		}
		if issued.At.Before(lock.Expires.Add(-time.Second)) {
			t.Errorf("router B ordered at %s, before the dead holder's lock expired at %s", issued.At, lock.Expires)
		}
		t.Logf("killed the holder at %s; its lock expired at %s; router B ordered at %s", killedAt.Format(time.RFC3339Nano), lock.Expires.Format(time.RFC3339Nano), issued.At.Format(time.RFC3339Nano))

		rA.start(t)
		poll.Until(t, 30*time.Second, "restarted router A serves the certificate from the bucket", func() error {
			c, err := rA.served(pb)
			if err == nil && c.SerialNumber.Cmp(cert.SerialNumber) != 0 {
				err = fmt.Errorf("serial %s, want %s", c.SerialNumber, cert.SerialNumber)
			}
			return err
		})
		if n := ev.count(isCertEvent(model.EventTLSCertificateIssued)); n != 1 {
			t.Errorf("%d tls.certificate_issued events, want 1", n)
		}
	})
}
