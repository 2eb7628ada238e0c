package main

import (
	"github.com/mrlb/mrlb/shared/config"
)

// Config is every variable of the contract: standalone runs every service.
type Config struct {
	config.NATS
	config.Ops
	config.Seed
	config.Health
	config.Failover
	config.RegionTLS
	config.API
	config.Router
	config.Standalone
}

// DefaultConfig leaves NATS_URL empty (embedded NATS) and serves the ops
// endpoints on :9090.
func DefaultConfig() Config {
	var c Config
	c.MetricsAddr = ":9090"
	return c
}

// Validate implements config.Validator.
func (c Config) Validate() error {
	return config.All(c.NATS, c.Ops, c.Seed, c.Health, c.Failover, c.RegionTLS, c.API, c.Router, c.Standalone)
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
