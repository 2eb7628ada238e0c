package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/failover/decide"
	"github.com/mrlb/mrlb/services/failover/lease"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/replica"
	"github.com/mrlb/mrlb/shared/version"
)

// Version is reported by the micro service.
var Version = version.Version

// QueueGroup is the queue group replicas share commands in.
const QueueGroup = "failover"

// LeaseKey is the key of the leader lease in lb_leases.
const LeaseKey = "failover"

// ErrAlreadyRunning is returned by Run when the service is already running.
var ErrAlreadyRunning = errors.New("failover: already running")

// maxIdle bounds how long the decision loop sleeps without a change, as a
// safety net behind the watches and decide.Next.
const maxIdle = time.Second

// reconcileEvery is how often the leader checks that every change in
// lb_failover was announced (see reconcileEvents); a variable for tests.
var reconcileEvery = 10 * time.Second

// Option tunes a Service beyond its Config.
type Option func(*options)

type options struct {
	leaderObserver func(id string, leading bool, term uint64)
}

// WithLeaderObserver calls fn whenever this replica gains or loses the
// leadership; tests use it to prove that terms never overlap.
func WithLeaderObserver(fn func(id string, leading bool, term uint64)) Option {
	return func(o *options) { o.leaderObserver = fn }
}

// Service is one failover manager replica.
type Service struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	id     string
	policy decide.Policy
	m      *metrics
	opts   options
	cache  *cache

	// Set by open before any goroutine starts.
	kvRegions, kvHealth, kvFailover, kvConfig, kvLeases jetstream.KeyValue
	elector                                             *lease.Elector

	leaderCh chan struct{} // signalled on every leadership change
	running  atomic.Bool
	opened   atomic.Bool // the buckets above are bound
}

// New builds a replica; it does not touch NATS until Run, so it can be
// created while NATS is still down.
func New(_ context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("failover: nil NATS connection")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("failover: jetstream: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg,
		nc:  nc,
		js:  js,
		id:  cfg.ID,
		policy: decide.Policy{
			Enabled:       cfg.Enabled,
			Threshold:     cfg.Threshold,
			FailbackDelay: cfg.FailbackDelay.D(),
		},
		m:        m,
		leaderCh: make(chan struct{}, 1),
	}
	if s.id == "" {
		s.id = replica.DefaultID("failover")
	}
	s.log = log.With("replica", s.id)
	for _, o := range opts {
		o(&s.opts)
	}
	s.cache = newCache(func(active map[string]int) {
		for _, r := range []string{"manual", "unhealthy", "failure_rate"} {
			m.active.WithLabelValues(r).Set(float64(active[r]))
		}
	})
	return s, nil
}

// ID is this replica's name in the lease.
func (s *Service) ID() string { return s.id }

// Leading reports whether this replica currently holds the leader lease.
func (s *Service) Leading() bool {
	if !s.opened.Load() {
		return false
	}
	_, ok := s.elector.Leading()
	return ok
}

// Run serves commands and, while it holds the lease, makes the automatic
// decisions, until ctx ends. On shutdown it stops the commands and the
// decision loop first, then releases the lease so that a standby takes over
// at once. It returns nil on a normal shutdown.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	if err := bus.Retry(ctx, s.open); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean shutdown
		}
		return fmt.Errorf("failover start: %w", err)
	}
	s.opened.Store(true)

	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	var loops sync.WaitGroup
	loops.Go(func() { bus.Watch(loopCtx, s.nc, s.kvRegions, s.cache.applyRegions, s.log) })
	loops.Go(func() { bus.Watch(loopCtx, s.nc, s.kvHealth, s.cache.applyHealth, s.log) })
	loops.Go(func() { bus.Watch(loopCtx, s.nc, s.kvFailover, s.cache.applyFailovers, s.log) })
	loops.Go(func() { s.decideLoop(loopCtx) })

	electCtx, stopElect := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElect()
	var elect sync.WaitGroup
	elect.Go(func() { s.elector.Run(electCtx) })

	svc, err := s.startCommands()
	if err != nil {
		stopLoop()
		loops.Wait()
		stopElect()
		elect.Wait()
		return err
	}
	s.log.Info("failover manager running", "enabled", s.policy.Enabled, "threshold", s.policy.Threshold,
		"failback_delay", s.policy.FailbackDelay, "lease_ttl", s.cfg.LeaseTTL.D())

	<-ctx.Done()
	_ = svc.Stop()
	stopLoop()
	loops.Wait()
	stopElect() // releases the lease after the last decision was applied
	elect.Wait()
	s.log.Info("failover manager stopped")
	return nil
}

// open ensures the buckets and streams and binds the buckets.
func (s *Service) open(ctx context.Context) error {
	infra := bus.DefaultInfra()
	infra.Replicas = s.cfg.Replicas
	if err := bus.EnsureInfra(ctx, s.js, infra); err != nil {
		s.log.Warn("waiting for JetStream", "err", err)
		return err
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{
		{bus.BucketRegions, &s.kvRegions},
		{bus.BucketHealth, &s.kvHealth},
		{bus.BucketFailover, &s.kvFailover},
		{bus.BucketConfig, &s.kvConfig},
		{bus.BucketLeases, &s.kvLeases},
	} {
		kv, err := s.js.KeyValue(ctx, b.name)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	ttl := s.cfg.LeaseTTL.D()
	renew := ttl / 3
	// The bucket's own TTL (set by whoever ran EnsureInfra last) must never
	// expire a live lease between two renewals.
	if st, err := s.kvLeases.Status(ctx); err == nil && st.TTL() > 0 {
		renew = min(renew, st.TTL()/4)
	}
	s.elector = lease.New(s.kvLeases, lease.Options{
		Key:      LeaseKey,
		ID:       s.id,
		TTL:      ttl,
		Renew:    renew,
		OnChange: s.leadershipChanged,
		Log:      s.log,
	})
	return nil
}

func (s *Service) leadershipChanged(leading bool, term uint64) {
	if leading {
		s.m.leader.Set(1)
		s.m.term.Set(float64(term))
		s.m.terms.Inc()
	} else {
		s.m.leader.Set(0)
	}
	if s.opts.leaderObserver != nil {
		s.opts.leaderObserver(s.id, leading, term)
	}
	select {
	case s.leaderCh <- struct{}{}:
	default:
	}
}

// startCommands serves lb.cmd.failover.trigger and .clear in the queue
// group; every replica serves them, leader or not.
func (s *Service) startCommands() (micro.Service, error) {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        bus.ServiceFailover,
		Version:     Version,
		Description: "failover decisions, manual and automatic",
		QueueGroup:  QueueGroup,
	})
	if err != nil {
		return nil, fmt.Errorf("failover: add micro service: %w", err)
	}
	timeout := s.cfg.RequestTimeout.D()
	endpoints := []struct {
		name, subject string
		h             micro.Handler
	}{
		{"trigger", bus.SubjectCmdFailoverTrigger, bus.Handle(timeout, bus.Counted(s.m.commands, "trigger", s.Trigger))},
		{"clear", bus.SubjectCmdFailoverClear, bus.Handle(timeout, bus.Counted(s.m.commands, "clear", s.Clear))},
	}
	for _, ep := range endpoints {
		if err := svc.AddEndpoint(ep.name, ep.h, micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("failover: add endpoint %s: %w", ep.subject, err)
		}
	}
	return svc, nil
}

// decideLoop makes the automatic decisions while this replica leads: after
// every change of the watched buckets, when a failback clock or a TTL runs
// out, and at least every maxIdle.
func (s *Service) decideLoop(ctx context.Context) {
	var (
		actedTerm     uint64
		lastReconcile time.Time
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cache.changed:
		case <-s.leaderCh:
		case <-timer.C:
		}
		wait := maxIdle
		if term, ok := s.elector.Leading(); ok {
			if term != actedTerm {
				// A new term: announce the settings and catch up on any
				// change the previous leader wrote but did not announce.
				actedTerm = term
				s.publishSettings(ctx)
				s.reconcileEvents(ctx)
				lastReconcile = time.Now()
			}
			if next := s.decideOnce(ctx); !next.IsZero() {
				wait = min(wait, max(time.Until(next), time.Millisecond))
			}
			if time.Since(lastReconcile) >= reconcileEvery {
				s.reconcileEvents(ctx)
				lastReconcile = time.Now()
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// decideOnce runs the rules on the cached state and applies the changes in
// order; it stops at the first write that loses a race (the watch then
// brings the newer state and the loop decides again) or when the lease is
// no longer held. It returns when the next timed decision is due.
func (s *Service) decideOnce(ctx context.Context) time.Time {
	st, revs, ok := s.cache.state(time.Now().UTC())
	if !ok {
		return time.Time{}
	}
	for _, c := range decide.Decide(s.policy, st) {
		if _, leading := s.elector.Leading(); !leading || ctx.Err() != nil {
			return time.Time{}
		}
		if err := s.apply(ctx, c, revs[c.Region]); err != nil {
			if !bus.IsWrongRevision(err) {
				s.log.Warn("failover change not applied", "change", c.Kind.String(), "region", c.Region, "err", err)
			}
			return time.Now().Add(100 * time.Millisecond)
		}
	}
	st, _, _ = s.cache.state(time.Now().UTC())
	return decide.Next(s.policy, st)
}
