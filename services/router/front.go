package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

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
	store, err := certs.Load(certs.Options{
		CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, Dir: cfg.TLSCertDir, Log: s.log,
		OnReloadFailed: s.certReloadFailed,
		OnLoaded:       s.certsLoaded,
	})
	if err != nil {
		return err
	}
	s.certs = store
	ln, err := net.Listen("tcp", cfg.TLSAddr)
	if err != nil {
		return fmt.Errorf("router https listen %s: %w", cfg.TLSAddr, err)
	}
	s.tlsLn = ln
	fd := proxy.FrontDoor{
		TLS:         &tls.Config{GetCertificate: store.GetCertificate, MinVersion: cfg.TLSMinVersion()},
		HTTP2:       cfg.HTTP2,
		HSTS:        cfg.HSTS,
		OnHandshake: func(result string) { s.metrics.TLSHandshakes.WithLabelValues(result).Inc() },
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

// Certificates is what the HTTPS listener serves now (nil when off).
func (s *Service) Certificates() []certs.Info {
	if s.certs == nil {
		return nil
	}
	return s.certs.Certificates()
}

func (s *Service) certsLoaded(infos []certs.Info) {
	s.metrics.CertExpiry.Reset()
	for _, in := range infos {
		name := "unnamed"
		if len(in.Names) > 0 {
			name = in.Names[0]
		}
		s.metrics.CertExpiry.WithLabelValues(name).Set(float64(in.NotAfter.Unix()))
	}
}

// certReloadFailed queues a tls.reload_failed event; it runs under the
// certificate store's lock, so it never waits for NATS.
func (s *Service) certReloadFailed(err error) {
	ev := model.Event{Type: model.EventTLSReloadFailed, At: time.Now().UTC(), RouterID: s.id, Reason: err.Error()}
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if s.certs == nil {
				s.log.Info("SIGHUP: nothing to reload (no HTTPS listener)")
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
