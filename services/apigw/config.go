package apigw

import (
	"errors"
	"time"

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

// DefaultConfig presets every value, so that a Config built in code (tests,
// standalone) is valid without reading the environment.
func DefaultConfig() Config {
	var c Config
	c.URL = config.DefaultNATSURL
	c.Replicas = 1
	c.RequestTimeout = config.Duration(5 * time.Second)
	c.MetricsAddr = ":9095"
	c.LogLevel = "info"
	c.Addr = ":8080"
	c.RateLimit = 50
	c.RateBurst = 100
	c.HealthPath = "/health"
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
