package model

import (
	"encoding/json"
	"time"
)

// AddRegionRequest is the body of lb.cmd.config.region.add (and of
// POST /api/v1/lb/regions).
type AddRegionRequest struct {
	Region         string       `json:"region"`
	Endpoint       string       `json:"endpoint"`
	Weight         *float64     `json:"weight,omitempty"`
	HealthPath     string       `json:"health_path,omitempty"`
	ExpectedStatus *StatusRange `json:"expected_status,omitempty"`
}

// UpdateRegionRequest is the body of lb.cmd.config.region.update: a partial
// update where nil means "leave as it is".
type UpdateRegionRequest struct {
	Region         string       `json:"region"`
	Endpoint       *string      `json:"endpoint,omitempty"`
	Weight         *float64     `json:"weight,omitempty"`
	HealthPath     *string      `json:"health_path,omitempty"`
	ExpectedStatus *StatusRange `json:"expected_status,omitempty"`
}

// RemoveRegionRequest is the body of lb.cmd.config.region.remove.
type RemoveRegionRequest struct {
	Region string `json:"region"`
}

// SetStrategyRequest is the body of lb.cmd.config.strategy.set (and of
// PUT /api/v1/lb/strategy).
type SetStrategyRequest struct {
	Strategy   string          `json:"strategy"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// HealthCheckRequest is the body of lb.cmd.health.check; an empty region
// checks every region.
type HealthCheckRequest struct {
	Region string `json:"region,omitempty"`
}

// HealthCheckAllResponse answers a check of every region.
type HealthCheckAllResponse struct {
	Results []CheckResult `json:"results"`
}

// FailoverTriggerRequest is the body of lb.cmd.failover.trigger.
type FailoverTriggerRequest struct {
	FromRegion string `json:"from_region"`
	ToRegion   string `json:"to_region"`
	Force      bool   `json:"force,omitempty"`
	// TTL is a Go duration after which the manual failover ends by itself.
	TTL string `json:"ttl,omitempty"`
}

// FailoverClearRequest is the body of lb.cmd.failover.clear.
type FailoverClearRequest struct {
	FromRegion string `json:"from_region"`
}

// ParseTTL reads a trigger's optional TTL; zero means none.
func (r FailoverTriggerRequest) ParseTTL() (time.Duration, error) {
	if r.TTL == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.TTL)
	if err != nil || d <= 0 {
		return 0, Invalid("invalid_ttl", "ttl must be a positive Go duration such as 30m, got %q", r.TTL)
	}
	return d, nil
}
