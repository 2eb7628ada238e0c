package main

import (
	"github.com/mrlb/mrlb/services/apigw"
	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/config"
)

// Config is what standalone itself reads, plus the configuration of every
// service it runs, each read from the same environment by the service's own
// Config type so that a variable means the same in both deployments.
type Config struct {
	config.NATS
	config.Ops
	config.Seed
	config.Standalone

	ConfigMgr configmgr.Config     `ignored:"true"`
	Health    healthchecker.Config `ignored:"true"`
	Failover  failover.Config      `ignored:"true"`
	Router    router.Config        `ignored:"true"`
	API       apigw.Config         `ignored:"true"`
}

// DefaultConfig leaves NATS_URL empty (embedded NATS) and serves the ops
// endpoints of the whole process on :9090.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.MetricsAddr = ":9090"
	c.ConfigMgr = configmgr.DefaultConfig()
	c.Health = healthchecker.DefaultConfig()
	c.Failover = failover.DefaultConfig()
	c.Router = router.DefaultConfig()
	c.API = apigw.DefaultConfig()
	return c
}

// services lists the service configurations, for loading and validation.
func (c *Config) services() []config.Validator {
	return []config.Validator{&c.ConfigMgr, &c.Health, &c.Failover, &c.Router, &c.API}
}

// Validate implements config.Validator.
func (c Config) Validate() error {
	if err := config.All(c.NATS, c.Ops, c.Seed, c.Standalone); err != nil {
		return err
	}
	return config.All(c.services()...)
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
