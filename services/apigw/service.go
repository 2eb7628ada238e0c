// Package apigw is the REST API of the load balancer (/api/v1/lb/*). Its
// handlers only translate: reads come straight from the KV buckets and
// streams, writes become NATS commands to the owning service, and every
// error leaves through one mapper as {"error","code"} with its status.
// It authenticates with API keys, rate-limits per client, and serves
// optionally over TLS.
package apigw

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
)

// BodyLimit is the largest request body accepted; larger ones get 413.
const BodyLimit = 1 << 20

// ShutdownTimeout bounds how long Run waits for in-flight requests after
// its context ends.
const ShutdownTimeout = 10 * time.Second

// Service is one apigw replica: an HTTP listener bound by New and served
// by Run.
type Service struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	store   *store
	keys    *keyring
	limiter *limiter
	metrics *metrics
	app     *fiber.App
	ln      net.Listener
	tls     bool
}

// New validates cfg, registers the metrics and binds the API listener, so
// a busy port or a bad TLS key fails start-up and Addr is known before Run
// (tests listen on port 0). It does not need NATS to be up. A *config.VarError
// is returned for a bad configuration.
func New(_ context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("apigw: jetstream: %w", err)
	}
	s := &Service{
		cfg:     cfg,
		log:     log,
		nc:      nc,
		js:      js,
		store:   newStore(js, cfg.HealthPath, log),
		keys:    newKeyring(cfg.Keys),
		limiter: newLimiter(cfg.RateLimit, cfg.RateBurst),
	}
	if s.metrics, err = newMetrics(reg, s.limiter); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, &config.VarError{Var: "API_TLS_CERT_FILE", Err: fmt.Errorf("load key pair: %w", err)}
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	// ListenAddr narrows a host-less API_ADDR to loopback in protected mode
	// (no keys, unauthenticated access not allowed).
	addr := cfg.ListenAddr()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("apigw listen %s: %w", addr, err)
	}
	ln = lingerListener{ln}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		s.tls = true
	}
	s.ln = ln
	s.app = s.newApp(reg)
	if !s.keys.enabled() {
		log.Warn("API keys are not configured: /api/v1/lb is open to anyone who can reach it", "addr", ln.Addr().String())
	}
	return s, nil
}

// Addr is the bound address of the API listener (host:port).
func (s *Service) Addr() string { return s.ln.Addr().String() }

// URL is the base URL of the API, with the scheme it is served in.
func (s *Service) URL() string {
	if s.tls {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Run serves the API until ctx ends, then stops accepting connections and
// waits up to ShutdownTimeout for in-flight requests. Draining NATS is the
// caller's (lifecycle.Service.Run does it after Run returns), so requests
// still in flight can finish their NATS calls.
func (s *Service) Run(ctx context.Context) error {
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { s.ensureInfra(bctx) })

	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(s.ln) }()
	s.log.Info("api listening", "addr", s.Addr(), "tls", s.tls, "auth", s.keys.enabled())
	select {
	case err := <-errc:
		return fmt.Errorf("apigw serve: %w", err)
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer scancel()
	if err := s.app.ShutdownWithContext(sctx); err != nil {
		s.log.Warn("api shutdown did not finish cleanly", "err", err)
	}
	_ = s.ln.Close() // in case Serve had not registered the listener yet
	if err := <-errc; err != nil {
		s.log.Debug("api serve returned after shutdown", "err", err)
	}
	s.log.Info("api stopped")
	return nil
}

// ensureInfra creates the buckets and streams apigw reads, so that reads on
// a fresh system answer empty lists rather than 503; it retries until NATS
// is up and never blocks serving.
func (s *Service) ensureInfra(ctx context.Context) {
	infra := bus.DefaultInfra()
	infra.Replicas = s.cfg.Replicas
	err := bus.Retry(ctx, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout.D())
		defer cancel()
		if err := bus.EnsureInfra(rctx, s.js, infra); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("waiting for JetStream", "err", err)
			}
			return err
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Error("cannot prepare JetStream", "err", err)
	}
}
