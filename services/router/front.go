package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/services/router/acme"
	"github.com/mrlb/mrlb/services/router/certs"
	"github.com/mrlb/mrlb/services/router/proxy"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

// certWatchInterval is how often certificate files are checked for changes
// (the contract allows 10 s).
const certWatchInterval = 5 * time.Second

// setupFrontDoor loads the certificates, binds the HTTPS listener and
// configures the proxy; a bad file is a config.VarError (exit 2).
func (s *Service) setupFrontDoor() error {
	// SIGHUP reloads the certificates; it never ends the router (its default
	// action would). Registered here, before Run, so that none is missed.
	s.hup = make(chan os.Signal, 1)
	signal.Notify(s.hup, syscall.SIGHUP)
	cfg := s.cfg.FrontDoor
	if !cfg.On() {
		return nil
	}
	s.tlsEvents = make(chan model.Event, 8)
	if cfg.TLSCertFile != "" || cfg.TLSCertDir != "" {
		store, err := certs.Load(certs.Options{
			CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, Dir: cfg.TLSCertDir, Log: s.log,
			OnReloadFailed: func(err error) {
				s.queueTLSEvent(model.Event{Type: model.EventTLSReloadFailed, At: time.Now().UTC(), RouterID: s.id, Reason: err.Error()})
			},
			OnLoaded: func([]certs.Info) { s.certsChanged() },
		})
		if err != nil {
			return err
		}
		s.certs = store
	}
	if cfg.ACME() {
		roots, err := cfg.ACMERoots()
		if err != nil {
			return err
		}
		// The listener addresses are filled in once bound (setupACME).
		s.acme = acme.New(acme.Options{
			Domains: cfg.ACMEDomains, Email: cfg.ACMEEmail, CA: cfg.ACMECA, Roots: roots,
			RenewCheck: cfg.ACMERenewCheck.D(), ID: s.id, Log: s.log,
			OnEvent:  s.queueTLSEvent,
			OnChange: s.certsChanged,
		})
	}
	ln, err := net.Listen("tcp", cfg.TLSAddr)
	if err != nil {
		return fmt.Errorf("router https listen %s: %w", cfg.TLSAddr, err)
	}
	s.tlsLn = ln
	fd := proxy.FrontDoor{
		TLS:         &tls.Config{GetCertificate: s.getCertificate, MinVersion: cfg.TLSMinVersion()},
		HTTP2:       cfg.HTTP2,
		HSTS:        cfg.HSTS,
		OnHandshake: func(result string) { s.metrics.TLSHandshakes.WithLabelValues(result).Inc() },
	}
	if s.acme != nil {
		fd.ACMEChallenge = s.acme.ServeHTTPChallenge
		fd.ALPNChallenge = true
	}
	if cfg.HTTPSRedirect {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		fd.RedirectPort, _ = strconv.Atoi(port)
	}
	s.proxy.SetFrontDoor(fd)
	return nil
}

// TLSAddr is the bound address of the HTTPS listener ("" when off).
func (s *Service) TLSAddr() string {
	if s.tlsLn == nil {
		return ""
	}
	return s.tlsLn.Addr().String()
}

// setupACME gives the ACME manager the bound listener addresses, where it
// answers the challenges.
func (s *Service) setupACME() {
	if s.acme != nil {
		s.acme.SetListeners(s.ln.Addr().String(), s.tlsLn.Addr().String())
	}
}

var errNoCertificate = errors.New("router: no certificate for this name yet")

// getCertificate serves ACME's certificates (and TLS-ALPN-01 challenges)
// for the ACME names, the files' for the rest.
func (s *Service) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.acme != nil {
		if c, err := s.acme.GetCertificate(hello); c != nil || err != nil {
			return c, err
		}
	}
	if s.certs != nil {
		return s.certs.GetCertificate(hello)
	}
	return nil, errNoCertificate
}

// Certificates is what the HTTPS listener serves now (nil when off).
func (s *Service) Certificates() []certs.Info {
	var out []certs.Info
	if s.certs != nil {
		out = append(out, s.certs.Certificates()...)
	}
	if s.acme != nil {
		out = append(out, s.acme.Certificates()...)
	}
	return out
}

// certsChanged sets the expiry gauge from every certificate served.
func (s *Service) certsChanged() {
	infos := s.Certificates()
	s.certMetricsMu.Lock()
	defer s.certMetricsMu.Unlock()
	s.metrics.CertExpiry.Reset()
	for _, in := range infos {
		name := "unnamed"
		if len(in.Names) > 0 {
			name = in.Names[0]
		}
		s.metrics.CertExpiry.WithLabelValues(name).Set(float64(in.NotAfter.Unix()))
	}
}

// queueTLSEvent queues an event for lb.events.tls; it runs under the
// certificate store's lock or in certmagic's goroutines, so it never waits
// for NATS.
func (s *Service) queueTLSEvent(ev model.Event) {
	select {
	case s.tlsEvents <- ev:
	default:
		s.log.Warn("tls event dropped: queue full", "type", ev.Type)
	}
}

// frontDoor watches the certificate files and SIGHUP, and publishes the
// TLS events, until ctx ends.
func (s *Service) frontDoor(ctx context.Context) {
	hup := s.hup
	defer signal.Stop(hup)
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.certs != nil {
		wg.Go(func() { s.certs.Watch(ctx, certWatchInterval) })
	}
	if s.acme != nil {
		wg.Go(func() { s.runACME(ctx) })
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if s.certs == nil {
				s.log.Info("SIGHUP: nothing to reload (no certificate files)")
				continue
			}
			if err := s.certs.Reload(); err == nil {
				s.log.Info("SIGHUP: certificates reloaded", "certificates", len(s.certs.Certificates()))
			}
		case ev := <-s.tlsEvents:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			msgID := s.id + "-" + ev.Type + "-" + strconv.FormatInt(ev.At.UnixNano(), 10)
			if err := bus.PublishEvent(pctx, s.js, bus.SubjectEventsTLS, ev, msgID); err != nil {
				s.log.Warn("tls event not published", "type", ev.Type, "err", err)
			}
			cancel()
		}
	}
}

// runACME waits for the lb_certs bucket (NATS may come later than the
// router), then manages the certificates until ctx ends.
func (s *Service) runACME(ctx context.Context) {
	var kv jetstream.KeyValue
	if err := bus.Retry(ctx, func(ctx context.Context) error {
		var err error
		kv, err = s.js.KeyValue(ctx, bus.BucketCerts)
		return err
	}); err != nil {
		return
	}
	if err := s.acme.Run(ctx, kv); err != nil {
		s.log.Error("acme stopped", "err", err)
	}
}
