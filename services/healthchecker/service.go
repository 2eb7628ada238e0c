package healthchecker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/healthchecker/probe"
	"github.com/mrlb/mrlb/services/healthchecker/state"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/regiontls"
	"github.com/mrlb/mrlb/shared/replica"
)

// ErrAlreadyRunning is returned by Run when the service is already running.
var ErrAlreadyRunning = errors.New("healthchecker: already running")

// errRegionGone stops recording a result of a region removed meanwhile.
var errRegionGone = errors.New("region was removed")

// Option tunes a Service beyond its Config.
type Option func(*options)

type options struct {
	lateness func(time.Duration)
}

// WithLatenessObserver calls fn with the lateness of every scheduled check
// against its slot; the scale benchmark uses it for exact percentiles.
func WithLatenessObserver(fn func(time.Duration)) Option {
	return func(o *options) { o.lateness = fn }
}

// Service is one health checker replica.
type Service struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	id       string
	interval time.Duration
	th       state.Thresholds
	prober   *probe.Prober
	m        *metrics
	opts     options
	errLog   logLimiter

	// Set by Run before any goroutine starts.
	kvRegions, kvHealth, kvMembers jetstream.KeyValue
	heartbeat, deadAfter           time.Duration

	mu      sync.RWMutex
	regions map[string]model.Region // the registry as last seen
	records map[string]*record      // cached health state per region
	owned   []string                // sorted regions this replica checks

	spawnMu sync.Mutex
	closed  bool
	idle    []*worker      // idle workers, most recently idle last
	stop    chan struct{}  // closed at shutdown: idle workers exit
	jobs    sync.WaitGroup // worker goroutines (checks, primes, commands)

	running atomic.Bool
}

// record is the cached health of one region and the revision it was read or
// written at; mu serialises the read-apply-write of results of the region.
type record struct {
	mu     sync.Mutex
	loaded bool
	health *model.Health
	rev    uint64
}

// New builds a replica; it does not touch NATS until Run, so it works while
// NATS is still down. A bad TLS file is a *config.VarError.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	_ = ctx
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("healthchecker: nil NATS connection")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	tlsCfg, err := regiontls.Build(cfg.RegionTLS, log)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg:      cfg,
		nc:       nc,
		id:       cfg.MemberID,
		interval: cfg.Interval.D(),
		th:       state.Thresholds{Fall: cfg.FailureThreshold, Rise: cfg.RecoveryThreshold},
		regions:  map[string]model.Region{},
		records:  map[string]*record{},
		stop:     make(chan struct{}),
	}
	if s.id == "" {
		s.id = replica.DefaultID("healthchecker")
	}
	s.log = log.With("member", s.id)
	for _, o := range opts {
		o(&s.opts)
	}
	s.m, err = newMetrics(reg, s.statusCounts)
	if err != nil {
		return nil, err
	}
	s.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) {
			s.m.publishErrors.Inc()
			if s.errLog.allow() {
				s.log.Warn("publish check result failed", "subject", msg.Subject, "err", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	idle := max(2*s.interval+cfg.Timeout.D(), 90*time.Second)
	s.prober = probe.New(tlsCfg, cfg.Path, cfg.Timeout.D(), idle)
	return s, nil
}

// MemberID is this replica's name in lb_members.
func (s *Service) MemberID() string { return s.id }

// Assigned returns the regions this replica currently checks, sorted.
func (s *Service) Assigned() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.owned)
}

func (s *Service) infra() bus.Infra {
	in := bus.DefaultInfra()
	in.Replicas = s.cfg.Replicas
	in.HealthMaxAge = s.cfg.HistoryMaxAge.D()
	in.HealthPerRegion = s.cfg.HistoryPerRegion
	in.OwnsHealthHistory = true
	return in
}

// Run checks regions until ctx ends, then stops every goroutine it started,
// withdraws from lb_members and flushes pending publishes. It returns nil on
// a normal shutdown.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer s.prober.Close()
	if err := bus.Retry(ctx, s.open); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("healthchecker start: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := newLoop(s, runCtx)
	var wg sync.WaitGroup
	wg.Go(func() { s.heartbeatLoop(runCtx) })
	wg.Go(func() { bus.Watch(runCtx, s.nc, s.kvRegions, toChan(runCtx, l.regionsCh), s.log) })
	wg.Go(func() { bus.Watch(runCtx, s.nc, s.kvMembers, toChan(runCtx, l.membersCh), s.log) })
	wg.Go(l.run)

	svc, err := s.startCommands()
	if err != nil {
		cancel()
		wg.Wait()
		s.shutdown()
		return err
	}
	s.log.Info("health checker running", "interval", s.interval, "timeout", s.cfg.Timeout.D(),
		"heartbeat", s.heartbeat, "dead_after", s.deadAfter)

	<-ctx.Done()
	_ = svc.Stop()
	cancel()
	wg.Wait()
	s.shutdown()
	s.log.Info("health checker stopped")
	return nil
}

// open ensures the buckets and streams and derives the membership timing
// from the members bucket's TTL.
func (s *Service) open(ctx context.Context) error {
	if err := bus.EnsureInfra(ctx, s.js, s.infra()); err != nil {
		return err
	}
	var err error
	if s.kvRegions, err = s.js.KeyValue(ctx, bus.BucketRegions); err != nil {
		return fmt.Errorf("bucket %s: %w", bus.BucketRegions, err)
	}
	if s.kvHealth, err = s.js.KeyValue(ctx, bus.BucketHealth); err != nil {
		return fmt.Errorf("bucket %s: %w", bus.BucketHealth, err)
	}
	if s.kvMembers, err = s.js.KeyValue(ctx, bus.BucketMembers); err != nil {
		return fmt.Errorf("bucket %s: %w", bus.BucketMembers, err)
	}
	st, err := s.kvMembers.Status(ctx)
	if err != nil {
		return fmt.Errorf("bucket %s status: %w", bus.BucketMembers, err)
	}
	s.deadAfter, s.heartbeat = memberTiming(s.interval, st.TTL())
	return nil
}

// memberTiming: a member is dead after one interval without heartbeat (so
// take-over fits in two intervals), never later than the bucket forgets it,
// and it heartbeats four times within that.
func memberTiming(interval, bucketTTL time.Duration) (deadAfter, heartbeat time.Duration) {
	deadAfter = interval
	if bucketTTL > 0 && bucketTTL < deadAfter {
		deadAfter = bucketTTL
	}
	deadAfter = max(deadAfter, 200*time.Millisecond)
	return deadAfter, deadAfter / 4
}

// workerIdle is how long a worker waits for the next job before it exits.
const workerIdle = 5 * time.Second

// worker is a reusable goroutine; jobs arrive on ch (buffered, so a sender
// never waits).
type worker struct{ ch chan func() }

// spawn runs fn on a worker owned by the service, unless it is shutting
// down. The most recently idle worker takes the job, else a new one is
// started: concurrency is never capped (a thousand hanging regions get a
// thousand workers), while the steady state reuses a few warm goroutines
// instead of growing a fresh stack for every HTTP check. Workers idle for
// workerIdle exit, so a burst does not leave goroutines behind.
func (s *Service) spawn(fn func()) bool {
	s.spawnMu.Lock()
	if s.closed {
		s.spawnMu.Unlock()
		return false
	}
	if n := len(s.idle); n > 0 {
		w := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		w.ch <- fn // never blocks: an idle worker's buffer is empty
		s.spawnMu.Unlock()
		return true
	}
	w := &worker{ch: make(chan func(), 1)}
	s.jobs.Go(func() { s.work(w, fn) })
	s.spawnMu.Unlock()
	return true
}

func (s *Service) work(w *worker, fn func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		fn()
		s.spawnMu.Lock()
		if s.closed {
			s.spawnMu.Unlock()
			return
		}
		s.idle = append(s.idle, w)
		s.spawnMu.Unlock()
		t.Reset(workerIdle)
		select {
		case fn = <-w.ch:
		case <-s.stop:
			select { // a job handed over just before shutdown still runs
			case fn = <-w.ch:
				fn()
			default:
			}
			return
		case <-t.C:
			if !s.retire(w) {
				fn = <-w.ch // taken just now: the job is already in the buffer
				continue
			}
			return
		}
	}
}

// retire takes w off the idle list; false when spawn took it meanwhile.
func (s *Service) retire(w *worker) bool {
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	for i, x := range s.idle {
		if x == w {
			s.idle = append(s.idle[:i], s.idle[i+1:]...)
			return true
		}
	}
	return false
}

// shutdown runs after the loop and watchers stopped: no new jobs, leave
// lb_members so others take over now, wait for jobs, flush publishes.
func (s *Service) shutdown() {
	s.spawnMu.Lock()
	s.closed = true
	close(s.stop)
	s.spawnMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.kvMembers != nil {
		if err := s.kvMembers.Delete(ctx, s.id); err != nil {
			s.log.Warn("leave lb_members", "err", err)
		}
	}
	s.jobs.Wait()
	select {
	case <-s.js.PublishAsyncComplete():
	case <-ctx.Done():
		s.log.Warn("pending check results not acknowledged at shutdown", "pending", s.js.PublishAsyncPending())
	}
}

func (s *Service) region(name string) (model.Region, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.regions[name]
	return r, ok
}

func (s *Service) recordFor(name string) *record {
	s.mu.RLock()
	rec := s.records[name]
	s.mu.RUnlock()
	if rec != nil {
		return rec
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec = s.records[name]; rec == nil {
		rec = &record{}
		s.records[name] = rec
	}
	return rec
}

// statusCounts counts the owned regions by status, for the metric.
func (s *Service) statusCounts() map[string]int {
	s.mu.RLock()
	recs := make([]*record, 0, len(s.owned))
	unknown := 0
	for _, name := range s.owned {
		if rec := s.records[name]; rec != nil {
			recs = append(recs, rec)
		} else {
			unknown++
		}
	}
	s.mu.RUnlock()
	out := map[string]int{model.StatusUnknown: unknown}
	for _, rec := range recs {
		rec.mu.Lock()
		st := model.StatusUnknown
		if rec.health != nil && rec.health.Status != "" {
			st = rec.health.Status
		}
		rec.mu.Unlock()
		out[st]++
	}
	return out
}

// logLimiter lets one log line through per period, so that an outage does
// not log once per check.
type logLimiter struct{ last atomic.Int64 }

func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(10*time.Second) && l.last.CompareAndSwap(last, now)
}
