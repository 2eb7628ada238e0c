// Package configmgr owns the region registry (lb_regions) and the strategy
// (lb_config). It seeds them from the environment once, serves the
// lb.cmd.config.> commands in a queue group so replicas share them, writes
// only with KV revisions (create or compare-and-swap) so concurrent replicas
// never lose an update, and announces every committed change on
// lb.events.config.
package configmgr

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/version"
)

// Version is reported by the micro service.
var Version = version.Version

// QueueGroup is the queue group configmgr replicas share commands in.
const QueueGroup = "configmgr"

// Service is a configmgr replica.
type Service struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	store   *Store
}

// New builds a replica; it does not touch NATS until Run, so it can be
// created while NATS is still down.
func New(_ context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("configmgr: jetstream: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Service{nc: nc, js: js, cfg: cfg, log: log, metrics: m}, nil
}

// Run prepares the buckets, seeds them if they were never seeded, serves the
// commands until ctx ends, then stops the micro service.
func (s *Service) Run(ctx context.Context) error {
	infra := bus.DefaultInfra()
	infra.Replicas = s.cfg.Replicas
	err := bus.Retry(ctx, func(ctx context.Context) error {
		if err := bus.EnsureInfra(ctx, s.js, infra); err != nil {
			s.log.Warn("waiting for JetStream", "err", err)
			return err
		}
		st, err := OpenStore(ctx, s.js, s.cfg.AllowPlaintext, s.log)
		if err != nil {
			return err
		}
		s.store = st
		return st.Seed(ctx, s.cfg.Seed)
	})
	if ctx.Err() != nil {
		return nil // stopped while starting: a clean shutdown
	}
	if err != nil {
		return fmt.Errorf("configmgr start: %w", err)
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        bus.ServiceConfigMgr,
		Version:     Version,
		Description: "region registry and strategy",
		QueueGroup:  QueueGroup,
	})
	if err != nil {
		return fmt.Errorf("configmgr: add micro service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	timeout := s.cfg.RequestTimeout.D()
	endpoints := []struct {
		name, subject string
		h             micro.Handler
	}{
		{"region-add", bus.SubjectCmdConfigRegionAdd, bus.Handle(timeout, bus.Counted(s.metrics.commands, "region_add", s.store.AddRegion))},
		{"region-update", bus.SubjectCmdConfigRegionUpdate, bus.Handle(timeout, bus.Counted(s.metrics.commands, "region_update", s.store.UpdateRegion))},
		{"region-remove", bus.SubjectCmdConfigRegionRemove, bus.Handle(timeout, bus.Counted(s.metrics.commands, "region_remove", s.store.RemoveRegion))},
		{"strategy-set", bus.SubjectCmdConfigStrategySet, bus.Handle(timeout, bus.Counted(s.metrics.commands, "strategy_set", s.store.SetStrategy))},
	}
	for _, ep := range endpoints {
		if err := svc.AddEndpoint(ep.name, ep.h, micro.WithEndpointSubject(ep.subject)); err != nil {
			return fmt.Errorf("configmgr: add endpoint %s: %w", ep.subject, err)
		}
	}
	s.log.Info("configmgr serving", "subjects", "lb.cmd.config.>")
	<-ctx.Done()
	return nil
}
