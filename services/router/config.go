// Package router is the data plane service: it proxies live HTTP traffic to
// regions, choosing them from a routing table that follows the KV buckets of
// configmgr, the health checker and the failover manager, and keeps routing
// from its last state when NATS is away.
package router

import (
	"errors"

	"github.com/mrlb/mrlb/shared/config"
)

// Config is the router's configuration: the shared parts plus the tunables
// only the data plane has.
type Config struct {
	config.NATS
	config.Ops
	config.Router
	config.RegionTLS
	config.FrontDoor

	// RetryBodyLimit is the largest request body buffered so that the
	// request can be re-sent to another region (see proxy.DefaultRetryBodyLimit).
	RetryBodyLimit int `envconfig:"ROUTER_RETRY_BODY_LIMIT" default:"65536"`
	// OutlierConsecutive failures in a row eject a region from this router
	// (0 disables passive outlier detection).
	OutlierConsecutive int `envconfig:"ROUTER_OUTLIER_CONSECUTIVE" default:"5"`
	// OutlierBaseEjection is the first ejection time; it doubles with each
	// further ejection of the same region up to OutlierMaxEjection.
	OutlierBaseEjection config.Duration `envconfig:"ROUTER_OUTLIER_BASE_EJECTION" default:"10s"`
	OutlierMaxEjection  config.Duration `envconfig:"ROUTER_OUTLIER_MAX_EJECTION" default:"5m"`
	// PresenceInterval is how often the replica refreshes its lb_routers entry.
	PresenceInterval config.Duration `envconfig:"ROUTER_PRESENCE_INTERVAL" default:"5s"`
	// ShutdownGrace bounds how long shutdown waits for in-flight requests.
	ShutdownGrace config.Duration `envconfig:"ROUTER_SHUTDOWN_GRACE" default:"30s"`
	// EventLoop turns the Linux event-loop fast path on; false serves every
	// connection on the fasthttp path (a switch for operators, should the
	// fast path ever misbehave).
	EventLoop bool `envconfig:"ROUTER_EVENT_LOOP" default:"true"`
}

// DefaultConfig is the configuration with an empty environment.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.URL = config.DefaultNATSURL
	c.MetricsAddr = ":9094"
	return c
}

// Validate implements config.Validator.
func (c Config) Validate() error {
	if err := config.All(c.NATS, c.Ops, c.Router, c.RegionTLS, c.FrontDoor); err != nil {
		return err
	}
	switch {
	case c.RetryBodyLimit < 0 || c.RetryBodyLimit > 64<<20:
		return &config.VarError{Var: "ROUTER_RETRY_BODY_LIMIT", Err: errors.New("must be from 0 to 64 MiB")}
	case c.OutlierConsecutive < 0:
		return &config.VarError{Var: "ROUTER_OUTLIER_CONSECUTIVE", Err: errors.New("must not be negative")}
	case c.OutlierBaseEjection <= 0:
		return &config.VarError{Var: "ROUTER_OUTLIER_BASE_EJECTION", Err: errors.New("must be greater than zero")}
	case c.OutlierMaxEjection < c.OutlierBaseEjection:
		return &config.VarError{Var: "ROUTER_OUTLIER_MAX_EJECTION", Err: errors.New("must be at least ROUTER_OUTLIER_BASE_EJECTION")}
	case c.PresenceInterval <= 0:
		return &config.VarError{Var: "ROUTER_PRESENCE_INTERVAL", Err: errors.New("must be greater than zero")}
	case c.ShutdownGrace <= 0:
		return &config.VarError{Var: "ROUTER_SHUTDOWN_GRACE", Err: errors.New("must be greater than zero")}
	}
	return nil
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
