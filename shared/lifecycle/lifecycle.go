// Package lifecycle is the common skeleton of every service binary: load the
// configuration (exit 2 on a bad value), log JSON, run until SIGTERM or
// SIGINT, and stop everything that was started in order.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/ops"
)

// Config is what every service configuration offers to Main.
type Config interface {
	config.Validator
	OpsConfig() config.Ops
}

// DrainTimeout bounds how long shutdown waits for NATS to drain.
const DrainTimeout = 10 * time.Second

// Main loads cfg, builds the logger and calls run with a context that ends on
// SIGTERM or SIGINT. It exits 2 on a configuration error, 1 when run fails,
// and 0 after a clean shutdown.
func Main(service string, cfg Config, run func(ctx context.Context, log *slog.Logger) error) {
	config.MustLoad(cfg)
	level, _ := cfg.OpsConfig().Level()
	log := logging.New(service, level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, log)
	var ve *config.VarError
	switch {
	case errors.As(err, &ve):
		stop()
		config.Exit(os.Stderr, err)
	case err != nil && !errors.Is(err, context.Canceled):
		log.Error("service failed", "err", err)
		stop()
		os.Exit(1)
	}
	log.Info("stopped")
}

// Runner is a service's main loop: it returns when ctx ends (nil) or when it
// cannot go on (an error).
type Runner interface {
	Run(ctx context.Context) error
}

// RunFunc adapts a function to Runner.
type RunFunc func(ctx context.Context) error

// Run implements Runner.
func (f RunFunc) Run(ctx context.Context) error { return f(ctx) }

// Group runs runners and the ops listener together: the first to fail stops
// the others, and Run returns after all have stopped.
func Group(ctx context.Context, runners ...Runner) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		g.Go(func() error { return r.Run(gctx) })
	}
	return g.Wait()
}

// Service is a single-service process: one NATS connection, one metrics
// registry and the ops listener.
type Service struct {
	Name string
	NC   *nats.Conn
	JS   jetstream.JetStream
	Reg  *prometheus.Registry
	Log  *slog.Logger
	ops  *ops.Server

	mu    sync.Mutex
	ready []ops.ReadyFunc
}

// Start connects to NATS (retrying forever in the background), creates the
// registry and binds the ops listener at opsAddr ("" or "off": none).
func Start(ctx context.Context, name, natsURL, opsAddr string, log *slog.Logger) (*Service, error) {
	nc, err := bus.Connect(ctx, name, natsURL, log)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Service{Name: name, NC: nc, JS: js, Reg: ops.NewRegistry(), Log: log}
	return s, s.listenOps(opsAddr)
}

func (s *Service) listenOps(addr string) error {
	if addr == "" || addr == "off" {
		return nil
	}
	srv, err := ops.Listen(addr, s.Reg, s.readyz, s.Log)
	if err != nil {
		s.NC.Close()
		return err
	}
	s.ops = srv
	return nil
}

// AddReady adds a condition to /readyz besides NATS being connected and the
// buckets reachable (for example the router's table being loaded).
func (s *Service) AddReady(fn ops.ReadyFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = append(s.ready, fn)
}

func (s *Service) readyz(ctx context.Context) error {
	if err := bus.ReadyCheck(s.NC, s.JS, bus.BucketRegions)(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	checks := slices.Clone(s.ready)
	s.mu.Unlock()
	for _, fn := range checks {
		if err := fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Run runs the runners and the ops listener until ctx ends, then drains NATS.
func (s *Service) Run(ctx context.Context, runners ...Runner) error {
	if s.ops != nil {
		runners = append(runners, s.ops)
	}
	err := Group(ctx, runners...)
	dctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	bus.Drain(dctx, s.NC)
	return err
}
