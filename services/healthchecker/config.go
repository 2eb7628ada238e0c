package healthchecker

import (
	"github.com/mrlb/mrlb/shared/config"
)

// Config is the health checker's configuration, read from the environment.
type Config struct {
	config.NATS
	config.Ops
	config.Health
	config.RegionTLS
	// MemberID names this replica in lb_members and in metrics. Empty means
	// hostname-pid; set it to a stable name (a pod name) in deployments, and
	// to distinct names when several instances share one process (tests).
	MemberID string `envconfig:"HEALTHCHECKER_ID"`
}

// DefaultConfig is the configuration with an empty environment.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.URL = config.DefaultNATSURL
	c.MetricsAddr = ":9092"
	return c
}

// Validate implements config.Validator.
func (c Config) Validate() error {
	if err := config.All(c.NATS, c.Ops, c.Health, c.RegionTLS); err != nil {
		return err
	}
	return config.ValidateReplicaID("HEALTHCHECKER_ID", c.MemberID)
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
