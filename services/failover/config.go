package failover

import (
	"github.com/mrlb/mrlb/shared/config"
)

// Config is the failover manager's environment: NATS, ops, the failover
// policy and this replica's name.
type Config struct {
	config.NATS
	config.Ops
	config.Failover
	// ID names this replica in the leader lease and in logs. Empty means
	// hostname-pid; set distinct names when several replicas share one
	// process (tests) and a stable one (a pod name) in deployments.
	ID string `envconfig:"FAILOVER_ID"`
}

// DefaultConfig is the configuration with an empty environment.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.URL = config.DefaultNATSURL
	c.MetricsAddr = ":9093"
	return c
}

// Validate implements config.Validator.
func (c Config) Validate() error {
	if err := config.All(c.NATS, c.Ops, c.Failover); err != nil {
		return err
	}
	return config.ValidateReplicaID("FAILOVER_ID", c.ID)
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
