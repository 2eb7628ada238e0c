package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Infra sets the limits of the buckets and streams.
type Infra struct {
	// Replicas is the replica count of every bucket and stream.
	Replicas int
	// HealthMaxAge and HealthPerRegion bound LB_HEALTH.
	HealthMaxAge    time.Duration
	HealthPerRegion int64
	// EventsMaxAge bounds LB_EVENTS.
	EventsMaxAge time.Duration
	// RouterTTL, MemberTTL and LeaseTTL are the expiry of presence, membership
	// and lease entries.
	RouterTTL time.Duration
	MemberTTL time.Duration
	LeaseTTL  time.Duration
	// OwnsHealthHistory marks the caller as the owner of LB_HEALTH's limits
	// (the health checker): only the owner updates an existing LB_HEALTH, so
	// services that do not read HEALTH_HISTORY_* never reset them.
	OwnsHealthHistory bool
}

// DefaultInfra is what a single-node deployment uses.
func DefaultInfra() Infra {
	return Infra{
		Replicas:        1,
		HealthMaxAge:    24 * time.Hour,
		HealthPerRegion: 1000,
		EventsMaxAge:    7 * 24 * time.Hour,
		RouterTTL:       15 * time.Second,
		MemberTTL:       10 * time.Second,
		LeaseTTL:        10 * time.Second,
	}
}

func (in Infra) withDefaults() Infra {
	d := DefaultInfra()
	if in.Replicas < 1 {
		in.Replicas = d.Replicas
	}
	if in.HealthMaxAge <= 0 {
		in.HealthMaxAge = d.HealthMaxAge
	}
	if in.HealthPerRegion <= 0 {
		in.HealthPerRegion = d.HealthPerRegion
	}
	if in.EventsMaxAge <= 0 {
		in.EventsMaxAge = d.EventsMaxAge
	}
	if in.RouterTTL <= 0 {
		in.RouterTTL = d.RouterTTL
	}
	if in.MemberTTL <= 0 {
		in.MemberTTL = d.MemberTTL
	}
	if in.LeaseTTL <= 0 {
		in.LeaseTTL = d.LeaseTTL
	}
	return in
}

// KeyValueConfigs returns the configuration of every bucket.
func (in Infra) KeyValueConfigs() []jetstream.KeyValueConfig {
	in = in.withDefaults()
	kv := func(name, desc string, history uint8, ttl time.Duration) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket:      name,
			Description: desc,
			History:     history,
			TTL:         ttl,
			Storage:     jetstream.FileStorage,
			Replicas:    in.Replicas,
		}
	}
	return []jetstream.KeyValueConfig{
		kv(BucketRegions, "region registry (configmgr)", 5, 0),
		kv(BucketConfig, "strategy and settings (configmgr)", 5, 0),
		kv(BucketHealth, "region health (healthchecker)", 1, 0),
		kv(BucketFailover, "active failovers (failover)", 5, 0),
		kv(BucketRouters, "router presence", 1, in.RouterTTL),
		kv(BucketMembers, "healthchecker membership", 1, in.MemberTTL),
		kv(BucketLeases, "leader leases", 1, in.LeaseTTL),
		kv(BucketCerts, "ACME account, certificates, keys and locks (routers)", 1, 0),
	}
}

// duplicateWindow is how long a stream remembers message ids; the server
// refuses a window longer than the stream's MaxAge, so it is capped by it.
const duplicateWindow = 2 * time.Minute

// StreamConfigs returns the configuration of every stream.
func (in Infra) StreamConfigs() []jetstream.StreamConfig {
	in = in.withDefaults()
	return []jetstream.StreamConfig{
		{
			Name:              StreamHealth,
			Description:       "every health check result",
			Subjects:          []string{SubjectHealthResultsAll},
			Storage:           jetstream.FileStorage,
			Replicas:          in.Replicas,
			MaxAge:            in.HealthMaxAge,
			MaxMsgsPerSubject: in.HealthPerRegion,
			Discard:           jetstream.DiscardOld,
			Duplicates:        min(duplicateWindow, in.HealthMaxAge),
		},
		{
			Name:              StreamEvents,
			Description:       "every event on lb.events.>",
			Subjects:          []string{SubjectEventsAll},
			Storage:           jetstream.FileStorage,
			Replicas:          in.Replicas,
			MaxAge:            in.EventsMaxAge,
			MaxMsgsPerSubject: 10000,
			Discard:           jetstream.DiscardOld,
			Duplicates:        min(duplicateWindow, in.EventsMaxAge),
		},
	}
}

// EnsureInfra creates or updates every bucket and stream; it is idempotent
// and every service calls it on start, so start order does not matter.
// LB_HEALTH is only created here unless in.OwnsHealthHistory is set.
func EnsureInfra(ctx context.Context, js jetstream.JetStream, in Infra) error {
	for _, cfg := range in.KeyValueConfigs() {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range in.StreamConfigs() {
		var err error
		if cfg.Name == StreamHealth && !in.OwnsHealthHistory {
			_, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				err = nil
			}
		} else {
			_, err = js.CreateOrUpdateStream(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// Retry calls fn until it succeeds or ctx ends, waiting with backoff between
// attempts; services use it for start-up work that needs NATS.
func Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}
