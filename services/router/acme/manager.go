package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/shared/model"
)

// Options configures a Manager.
type Options struct {
	// Domains are the names to hold certificates for.
	Domains []string
	// Email is the ACME account's contact ("" for none).
	Email string
	// CA is the ACME directory URL.
	CA string
	// Roots verify the CA's HTTPS certificate (nil: the system's).
	Roots *x509.CertPool
	// HTTPAddr and TLSAddr are the router's bound plain and HTTPS listener
	// addresses, which answer HTTP-01 and TLS-ALPN-01 challenges (or call
	// SetListeners before Run).
	HTTPAddr, TLSAddr string
	// RenewCheck is how often certificates are checked for renewal.
	RenewCheck time.Duration
	// ID names this replica in the locks it holds.
	ID string
	// LockTTL bounds how long a dead holder blocks the others (0: DefaultLockTTL).
	LockTTL time.Duration
	Log     *slog.Logger
	// OnEvent gets tls.certificate_issued and tls.certificate_failed events
	// (this replica's orders only); it must not block.
	OnEvent func(model.Event)
	// OnChange runs when the certificates served change.
	OnChange func()

	// DisableHTTP01 and DisableTLSALPN01 leave one challenge type out, so
	// that tests prove each one alone.
	DisableHTTP01, DisableTLSALPN01 bool
}

// Manager obtains and renews the certificates of Options.Domains through
// certmagic, with its account, certificates, keys and locks on the lb_certs
// bucket, and serves them and the challenges.
type Manager struct {
	opts    Options
	domains map[string]bool // lower case, no trailing dot
	state   atomic.Pointer[managed]
}

// managed is what exists once NATS answered and certmagic runs.
type managed struct {
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
}

// New checks nothing of the network: Run does the work once NATS answers.
func New(o Options) *Manager {
	m := &Manager{opts: o, domains: map[string]bool{}}
	for _, d := range o.Domains {
		m.domains[normal(d)] = true
	}
	if m.opts.Log == nil {
		m.opts.Log = slog.Default()
	}
	return m
}

// SetListeners sets Options.HTTPAddr and TLSAddr once they are bound; call
// it before Run.
func (m *Manager) SetListeners(httpAddr, tlsAddr string) {
	m.opts.HTTPAddr, m.opts.TLSAddr = httpAddr, tlsAddr
}

func normal(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// Run manages the certificates on kv until ctx ends: it loads those in the
// bucket, orders the missing ones (one replica at a time), and renews them
// when a third of their lifetime is left.
func (m *Manager) Run(ctx context.Context, kv jetstream.KeyValue) error {
	o := m.opts
	storage := NewStorage(kv, o.ID, o.LockTTL)
	storage.log = o.Log.With("component", "acme")
	defer storage.Close()
	zl := zapLogger(o.Log.With("component", "acme"))
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: o.RenewCheck,
		Logger:             zl,
	})
	defer cache.Stop()
	magic = certmagic.New(cache, certmagic.Config{
		Storage:            storage,
		RenewalWindowRatio: 1.0 / 3, // the contract: renew with a third of the lifetime left
		DisableARI:         true,    // the CA's suggested window would override that
		DefaultServerName:  normal(o.Domains[0]),
		Logger:             zl,
		OnEvent:            m.onEvent,
	})
	httpHost, httpPort, err := hostPort(o.HTTPAddr)
	if err != nil {
		return err
	}
	_, tlsPort, err := hostPort(o.TLSAddr)
	if err != nil {
		return err
	}
	issuer := certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:     o.CA,
		Email:  o.Email,
		Agreed: true,
		// The router's own listeners answer the challenges: certmagic finds
		// these ports taken and leaves them to HandleHTTPChallenge and
		// GetCertificate (below), which read the challenge from the bucket
		// whichever replica started it.
		ListenHost:              httpHost,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          tlsPort,
		TrustedRoots:            o.Roots,
		DisableHTTPChallenge:    o.DisableHTTP01,
		DisableTLSALPNChallenge: o.DisableTLSALPN01,
		Logger:                  zl,
	})
	magic.Issuers = []certmagic.Issuer{issuer}
	m.state.Store(&managed{magic: magic, issuer: issuer, cache: cache})
	defer m.state.Store(nil)
	if err := magic.ManageAsync(ctx, o.Domains); err != nil {
		return fmt.Errorf("acme: manage %v: %w", o.Domains, err)
	}
	<-ctx.Done()
	return nil
}

func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("acme: listener address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return "", 0, fmt.Errorf("acme: listener address %q has no port", addr)
	}
	return host, port, nil
}

// onEvent turns certmagic's events into ours; only the replica that ordered
// (or failed to) sees cert_obtained and cert_failed.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	ev := model.Event{At: time.Now().UTC(), RouterID: m.opts.ID, Names: []string{name}}
	switch event {
	case "cert_obtained":
		ev.Type = model.EventTLSCertificateIssued
		if r, _ := data["renewal"].(bool); r {
			ev.Reason = "renewal"
		} else {
			ev.Reason = "new"
		}
	case "cert_failed":
		ev.Type = model.EventTLSCertificateFailed
		if err, ok := data["error"].(error); ok {
			ev.Reason = err.Error()
		}
	case "cached_managed_cert":
		if m.opts.OnChange != nil {
			m.opts.OnChange()
		}
		return nil
	default:
		return nil
	}
	m.opts.Log.Info("acme", "event", ev.Type, "name", name, "reason", ev.Reason)
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(ev)
	}
	return nil
}

// GetCertificate serves the TLS-ALPN-01 challenge certificate and the
// managed names' certificates; (nil, nil) for another name, so that the
// caller falls back to its files.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := m.state.Load()
	if st == nil {
		return nil, nil
	}
	if isChallengeHello(hello) {
		return st.magic.GetCertificate(hello)
	}
	name := normal(hello.ServerName)
	if name != "" && !m.domains[name] {
		return nil, nil
	}
	if name == "" && len(st.cache.AllMatchingCertificates(st.magic.DefaultServerName)) == 0 {
		return nil, nil
	}
	c, err := st.magic.GetCertificate(hello)
	if err != nil || c == nil || c.Certificate == nil {
		return nil, nil //nolint:nilerr // not obtained yet: the files may have one
	}
	return c, nil
}

// isChallengeHello reports whether hello is an ACME server's TLS-ALPN-01
// validation (it offers acme-tls/1 alone).
func isChallengeHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol
}

// Certificates describes the managed certificates this replica serves.
func (m *Manager) Certificates() []model.CertInfo {
	st := m.state.Load()
	if st == nil {
		return nil
	}
	var out []model.CertInfo
	seen := map[*x509.Certificate]bool{}
	for _, d := range m.opts.Domains {
		for _, c := range st.cache.AllMatchingCertificates(normal(d)) {
			if c.Leaf == nil || seen[c.Leaf] {
				continue
			}
			seen[c.Leaf] = true
			out = append(out, model.CertInfo{
				Names:    slices.Clone(c.Names),
				Issuer:   c.Leaf.Issuer.CommonName,
				NotAfter: c.Leaf.NotAfter.UTC(),
				Source:   "acme",
			})
		}
	}
	return out
}

// challengeTimeout bounds the storage lookup of an HTTP-01 answer.
const challengeTimeout = 5 * time.Second

// ServeHTTPChallenge answers an ACME server's HTTP-01 request for a token
// that this or another replica put in the bucket; false when ctx is not one
// (the request is then proxied as any other).
func (m *Manager) ServeHTTPChallenge(ctx *fasthttp.RequestCtx) bool {
	st := m.state.Load()
	if st == nil || !ctx.IsGet() {
		return false
	}
	if !m.domains[normal(hostOnly(string(ctx.Host())))] {
		return false
	}
	rctx, cancel := context.WithTimeout(context.Background(), challengeTimeout)
	defer cancel()
	r := (&http.Request{
		Method:     http.MethodGet,
		Host:       string(ctx.Host()),
		URL:        &url.URL{Path: string(ctx.Path())},
		RequestURI: string(ctx.RequestURI()),
		Header:     http.Header{},
		RemoteAddr: ctx.RemoteAddr().String(),
	}).WithContext(rctx)
	w := &recorder{header: http.Header{}}
	if !st.issuer.HandleHTTPChallenge(w, r) {
		return false
	}
	ctx.Response.Reset()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	ctx.SetStatusCode(w.status)
	for k, vs := range w.header {
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
	ctx.SetBody(w.body.Bytes())
	return true
}

func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i]
	}
	return host
}

// recorder is the http.ResponseWriter certmagic's HTTP-01 answer is written
// to; the answer is a key authorisation of a few dozen bytes.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.body.Len()+len(b) > 64<<10 {
		return 0, errors.New("acme: challenge answer too large")
	}
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
