package apigw

import (
	"errors"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
)

// Config is apigw's environment: NATS, ops, the API listener and its
// security, and the default health path shown in region documents.
type Config struct {
	config.NATS
	config.Ops
	config.API
	// HealthPath fills in health_path for regions without their own, so the
	// API shows the path the health checker actually probes.
	HealthPath string `envconfig:"HEALTH_CHECK_PATH" default:"/health"`
}

// DefaultConfig is the configuration with an empty environment, so that a
// Config built in code (tests, standalone) is valid.
func DefaultConfig() Config {
	var c Config
	config.Defaults(&c)
	c.URL = config.DefaultNATSURL
	c.MetricsAddr = ":9095"
	return c
}

// Validate implements config.Validator. It refuses a non-loopback API_ADDR
// without API_KEYS (unless API_ALLOW_UNAUTHENTICATED) through config.API.
func (c Config) Validate() error {
	if err := config.All(c.NATS, c.Ops, c.API); err != nil {
		return err
	}
	if c.HealthPath == "" || model.ValidateHealthPath(c.HealthPath) != nil {
		return &config.VarError{Var: "HEALTH_CHECK_PATH", Err: errors.New("must be an absolute path such as /health")}
	}
	return nil
}

// OpsConfig implements lifecycle.Config.
func (c Config) OpsConfig() config.Ops { return c.Ops }
