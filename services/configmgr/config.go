package configmgr

import "github.com/mrlb/mrlb/shared/config"

// Config is configmgr's environment: NATS, ops, and the seed of the registry.
type Config struct {
	config.NATS
	config.Ops
	config.Seed
}

// DefaultConfig is the configuration with an empty environment.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.URL = config.DefaultNATSURL
	c.MetricsAddr = ":9091"
	return c
}

// Validate implements config.Validator.
func (c Config) Validate() error { return config.All(c.NATS, c.Ops, c.Seed) }

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
