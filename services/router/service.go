package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/router/acme"
	"github.com/mrlb/mrlb/services/router/certs"
	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/proxy"
	"github.com/mrlb/mrlb/services/router/table"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/regiontls"
	"github.com/mrlb/mrlb/shared/replica"
	"github.com/mrlb/mrlb/shared/version"
)

// watchedBuckets are the buckets a snapshot is built from.
var watchedBuckets = []string{bus.BucketRegions, bus.BucketConfig, bus.BucketHealth, bus.BucketFailover}

// Service is one router replica.
type Service struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	log       *slog.Logger
	id        string
	started   time.Time
	statePath string
	ln        net.Listener
	table     *table.Table
	proxy     *proxy.Proxy
	metrics   *metrics.Router
	events    chan table.Event
	save      chan struct{}
	synced    chan struct{} // closed once every bucket was read from NATS
	syncOnce  sync.Once

	// The HTTPS listener (front.go); nil when no certificate source is set.
	certs *certs.Store
	acme  *acme.Manager // nil without ACME_DOMAINS
	tlsLn net.Listener

	certMetricsMu sync.Mutex
	tlsEvents     chan model.Event
	hup           chan os.Signal
}

// New builds the router and binds its listener (so ":0" works in tests). It
// never needs NATS: when a state file exists it routes from it at once, and
// the KV watches take over when NATS is reachable.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := regiontls.Build(cfg.RegionTLS, log)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	m, err := metrics.New(reg)
	if err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	s := &Service{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     log,
		id:      cfg.ID,
		started: time.Now().UTC(),
		metrics: m,
		events:  make(chan table.Event, 256),
		save:    make(chan struct{}, 1),
		synced:  make(chan struct{}),
	}
	if s.id == "" {
		s.id = replica.DefaultID("router")
	}
	s.statePath = cfg.StateFile
	if s.statePath == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		s.statePath = filepath.Join(dir, "mrlb", "router-state.json")
	}
	opts := proxy.Options{
		DialTimeout:           cfg.DialTimeout.D(),
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout.D(),
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout.D(),
		IdleConnTimeout:       cfg.IdleConnTimeout.D(),
		ClientHeaderTimeout:   cfg.ClientHeaderTimeout.D(),
		ClientBodyTimeout:     cfg.ClientBodyTimeout.D(),
		ClientWriteTimeout:    cfg.ClientWriteTimeout.D(),
		ClientIdleTimeout:     cfg.ClientIdleTimeout.D(),
		MaxIdleConnsPerRegion: cfg.MaxIdleConnsPerRegion,
		TLS:                   tlsCfg,
		RetryBodyLimit:        cfg.RetryBodyLimit,
		OutlierConsecutive:    cfg.OutlierConsecutive,
		OutlierBaseEjection:   cfg.OutlierBaseEjection.D(),
		OutlierMaxEjection:    cfg.OutlierMaxEjection.D(),
		ShutdownGrace:         cfg.ShutdownGrace.D(),
		DisableEventLoop:      !cfg.EventLoop,
	}
	s.table = table.New(table.Options{
		NewUpstream: proxy.UpstreamFactory(opts.Defaults(), m),
		Log:         log,
		OnChange:    s.requestSave,
		Events:      s.events,
		OnSnapshot:  func(*table.Snapshot) { m.Snapshots.Inc() },
	})
	s.proxy = proxy.New(s.table, m, opts, log)

	switch st, err := table.LoadState(s.statePath); {
	case err == nil:
		s.table.Replace(st)
		log.Info("routing from saved state until NATS answers", "file", s.statePath, "regions", len(st.Regions), "saved_at", st.SavedAt)
	case errors.Is(err, table.ErrNoState):
	default:
		log.Warn("ignoring unreadable state file", "file", s.statePath, "err", err)
	}

	if err := s.setupFrontDoor(); err != nil {
		signal.Stop(s.hup)
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		signal.Stop(s.hup)
		if s.tlsLn != nil {
			_ = s.tlsLn.Close()
		}
		return nil, fmt.Errorf("router listen %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	s.setupACME()
	return s, nil
}

// Addr is the bound address of the proxy listener.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// ID is this replica's id in events and presence.
func (s *Service) ID() string { return s.id }

// Table gives tests and standalone access to the routing table.
func (s *Service) Table() *table.Table { return s.table }

// Synced is closed once every watched bucket was read from NATS.
func (s *Service) Synced() <-chan struct{} { return s.synced }

// Run serves until ctx ends, then finishes in-flight requests (bounded by
// ShutdownGrace), stops every goroutine it started and saves the state.
func (s *Service) Run(ctx context.Context) error {
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	spawn := func(name string, f func(context.Context)) {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					s.log.Error("router goroutine panicked", "goroutine", name, "panic", r)
				}
			}()
			f(bg)
		})
	}
	spawn("control", s.control)
	spawn("presence", s.presence)
	spawn("events", s.publishEvents)
	spawn("saver", s.saver)
	spawn("ejections", s.ejections)
	spawn("front door", s.frontDoor)

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.proxy.Serve(s.ln) }()
	var tlsErr chan error // nil (never ready) without the HTTPS listener
	if s.tlsLn != nil {
		tlsErr = make(chan error, 1)
		go func() { tlsErr <- s.proxy.ServeTLS(s.tlsLn) }()
		s.log.Info("router listening (https)", "addr", s.TLSAddr(), "http2", s.cfg.HTTP2, "certificates", len(s.Certificates()), "acme", s.cfg.ACMEDomains)
	}
	s.log.Info("router listening", "addr", s.Addr(), "id", s.id, "state_file", s.statePath)

	var err error
	serveDone, tlsDone := false, tlsErr == nil
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		serveDone = true
	case err = <-tlsErr:
		tlsDone = true
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace.D())
	if e := s.proxy.Shutdown(sctx); e != nil {
		s.log.Warn("router shutdown", "err", e)
	}
	cancel()
	if !tlsDone {
		if e := <-tlsErr; err == nil {
			err = e
		}
	}
	if !serveDone {
		if e := <-serveErr; err == nil {
			err = e
		}
	}
	stop()
	wg.Wait()
	s.saveNow()
	s.table.Close()
	s.removePresence()
	s.log.Info("router stopped")
	return err
}

// control makes sure the buckets exist, then follows them with bus.Watch,
// which re-opens the watches on a NATS reconnect and so also replays keys
// changed or deleted while NATS was away. The first contents of all buckets
// are applied together (see initialSync), then every change as it comes.
func (s *Service) control(ctx context.Context) {
	infra := bus.DefaultInfra()
	infra.Replicas = s.cfg.Replicas
	if err := bus.Retry(ctx, func(ctx context.Context) error {
		return bus.EnsureInfra(ctx, s.js, infra)
	}); err != nil {
		return
	}
	first := &initialSync{pending: map[string]map[string][]byte{}}
	var wg sync.WaitGroup
	for _, bucket := range watchedBuckets {
		var kv jetstream.KeyValue
		if err := bus.Retry(ctx, func(ctx context.Context) error {
			var err error
			kv, err = s.js.KeyValue(ctx, bucket)
			return err
		}); err != nil {
			wg.Wait()
			return
		}
		wg.Go(func() { bus.Watch(ctx, s.nc, kv, s.apply(bucket, first), s.log) })
	}
	wg.Wait()
}

// initialSync holds each bucket's first contents until every watched bucket
// has delivered them, so a starting router never routes from a half-loaded
// table (for example knowing a region but not yet that it is failed over).
type initialSync struct {
	mu      sync.Mutex
	pending map[string]map[string][]byte // nil once applied
}

// apply feeds one bucket's snapshots and changes to the routing table.
func (s *Service) apply(bucket string, first *initialSync) bus.WatchFunc {
	return func(snapshot bool, entries []jetstream.KeyValueEntry) {
		first.mu.Lock()
		if first.pending != nil {
			content := first.pending[bucket]
			if snapshot || content == nil {
				content = map[string][]byte{}
				first.pending[bucket] = content
			}
			for _, e := range entries {
				if bus.IsDelete(e) {
					delete(content, e.Key())
				} else {
					content[e.Key()] = e.Value()
				}
			}
			if len(first.pending) == len(watchedBuckets) {
				s.table.ReplaceBuckets(first.pending)
				first.pending = nil
				s.syncOnce.Do(func() { close(s.synced) })
			}
			first.mu.Unlock()
			return
		}
		first.mu.Unlock()
		if snapshot {
			content := make(map[string][]byte, len(entries))
			for _, e := range entries {
				if !bus.IsDelete(e) {
					content[e.Key()] = e.Value()
				}
			}
			s.table.ReplaceBucket(bucket, content)
			return
		}
		for _, e := range entries {
			if bus.IsDelete(e) {
				s.table.Delete(bucket, e.Key())
			} else {
				s.table.Put(bucket, e.Key(), e.Value())
			}
		}
	}
}

// Ready reports whether the routing table was loaded from NATS; the ops
// listener's /readyz includes it, so a new replica gets traffic only once it
// routes by the current state.
func (s *Service) Ready(context.Context) error {
	select {
	case <-s.synced:
		return nil
	default:
		return errors.New("routing table not loaded from NATS yet")
	}
}

// presence keeps this replica's entry in lb_routers fresh; the bucket's TTL
// removes it when the replica dies.
func (s *Service) presence(ctx context.Context) {
	type last struct{ req, errs uint64 }
	prev := map[string]last{}
	prevAt := time.Now()
	tick := time.NewTicker(s.cfg.PresenceInterval.D())
	defer tick.Stop()
	for {
		now := time.Now()
		info := model.RouterInfo{ID: s.id, Address: s.address(), Started: s.started, Version: version.Version, Regions: map[string]model.RegionStats{}, Certificates: s.Certificates(), UpdatedAt: now.UTC()}
		if s.acme != nil {
			s.certsChanged() // a renewal loaded from the bucket announces itself nowhere else
		}
		secs := max(now.Sub(prevAt).Seconds(), 1e-3)
		next := map[string]last{}
		for _, u := range s.table.Upstreams() {
			r, e := u.Counts()
			p := prev[u.Name]
			next[u.Name] = last{r, e}
			info.Regions[u.Name] = model.RegionStats{RequestsPerSec: float64(r-p.req) / secs, ErrorsPerSec: float64(e-p.errs) / secs}
		}
		prev, prevAt = next, now
		if s.nc.IsConnected() {
			if err := s.putPresence(ctx, info); err != nil && ctx.Err() == nil {
				s.log.Debug("presence not written", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Service) putPresence(ctx context.Context, info model.RouterInfo) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, bus.BucketRouters)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bus.BucketRouters, err)
	}
	data, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode presence: %w", err)
	}
	if _, err := kv.Put(ctx, s.id, data); err != nil {
		return fmt.Errorf("put presence: %w", err)
	}
	return nil
}

func (s *Service) removePresence() {
	if !s.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if kv, err := s.js.KeyValue(ctx, bus.BucketRouters); err == nil {
		_ = kv.Delete(ctx, s.id)
	}
}

// address is how others reach this replica's proxy listener.
func (s *Service) address() string {
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return s.Addr()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// publishEvents sends outlier ejections and returns to lb.events.health.<region>.
func (s *Service) publishEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-s.events:
			e := model.Event{Type: ev.Type, At: ev.At.UTC(), Region: ev.Region, RouterID: s.id}
			if ev.Type == model.EventOutlierEjected {
				e.Reason = "consecutive failures; ejected for " + ev.For.String()
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			msgID := s.id + "-" + ev.Type + "-" + ev.Region + "-" + strconv.FormatInt(ev.At.UnixNano(), 10)
			if err := bus.PublishEvent(pctx, s.js, bus.HealthEventsSubject(ev.Region), e, msgID); err != nil {
				s.log.Warn("outlier event not published", "type", ev.Type, "region", ev.Region, "err", err)
			}
			cancel()
		}
	}
}

func (s *Service) requestSave() {
	select {
	case s.save <- struct{}{}:
	default:
	}
}

// saver writes the state file at most a few times a second.
func (s *Service) saver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.save:
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.saveNow()
	}
}

func (s *Service) saveNow() {
	st := s.table.State()
	if len(st.Regions) == 0 && st.Strategy == nil {
		return // nothing learnt yet: keep a previous file
	}
	if err := table.SaveState(s.statePath, st); err != nil {
		s.log.Warn("routing state not saved", "file", s.statePath, "err", err)
	}
}

// ejections brings ejected regions back when their time is up.
func (s *Service) ejections(ctx context.Context) {
	every := min(max(s.cfg.OutlierBaseEjection.D()/5, 20*time.Millisecond), time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.table.ReturnExpired(now)
		}
	}
}
