// Package model holds the JSON documents of the contract: what is stored in
// the KV buckets, what travels in events and commands, and the rules that
// every service applies to them.
package model

import (
	"encoding/json"
	"time"
)

// Health statuses of a region.
const (
	StatusUnknown   = "unknown"
	StatusHealthy   = "healthy"
	StatusUnhealthy = "unhealthy"
)

// Strategy names.
const (
	StrategyRoundRobin   = "round_robin"
	StrategyWeighted     = "weighted"
	StrategyLeastLatency = "least_latency"
)

// Failover reasons.
const (
	ReasonManual      = "manual"
	ReasonUnhealthy   = "unhealthy"
	ReasonFailureRate = "failure_rate"
)

// DefaultWeight is the weight of a region created without one.
const DefaultWeight = 1.0

// MaxWeight is the largest weight a region may have.
const MaxWeight = 1000.0

// Region is the registry entry stored in lb_regions under the region name.
type Region struct {
	Region         string       `json:"region"`
	Endpoint       string       `json:"endpoint"`
	Weight         float64      `json:"weight"`
	HealthPath     string       `json:"health_path,omitempty"`
	ExpectedStatus *StatusRange `json:"expected_status,omitempty"`
	CreatedAt      time.Time    `json:"created_at"`
	UpdatedAt      time.Time    `json:"updated_at"`
}

// StatusRange narrows which HTTP statuses count as a healthy check.
type StatusRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// StrategyConfig is stored in lb_config under the key "strategy".
type StrategyConfig struct {
	Strategy   string          `json:"strategy"`
	Parameters json.RawMessage `json:"parameters"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// FailoverSettings is what the failover manager publishes about itself in
// lb_config so that the API can report it.
type FailoverSettings struct {
	Enabled   bool    `json:"enabled"`
	Threshold float64 `json:"threshold"`
}

// CheckResult is one health check of one region.
type CheckResult struct {
	Region     string    `json:"region"`
	Healthy    bool      `json:"healthy"`
	StatusCode int       `json:"status_code"`
	LatencyMS  float64   `json:"latency_ms"`
	Error      string    `json:"error"`
	CheckedAt  time.Time `json:"checked_at"`
}

// Health is a region's health state, stored in lb_health under its name.
type Health struct {
	Region               string       `json:"region"`
	Status               string       `json:"status"`
	ConsecutiveFailures  int          `json:"consecutive_failures"`
	ConsecutiveSuccesses int          `json:"consecutive_successes"`
	LatencyMS            float64      `json:"latency_ms"`
	Last                 *CheckResult `json:"last,omitempty"`
	// Window holds the outcomes of the last checks, oldest first (true = passed).
	Window    []bool    `json:"window"`
	UpdatedAt time.Time `json:"updated_at"`
}

// FailureRate is the failed fraction of the window (0 when it is empty).
func (h Health) FailureRate() float64 {
	if len(h.Window) == 0 {
		return 0
	}
	failed := 0
	for _, ok := range h.Window {
		if !ok {
			failed++
		}
	}
	return float64(failed) / float64(len(h.Window))
}

// Failover is an active failover, stored in lb_failover under from_region.
type Failover struct {
	FromRegion string     `json:"from_region"`
	ToRegion   string     `json:"to_region"`
	Reason     string     `json:"reason"`
	Since      time.Time  `json:"since"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// RouterInfo is the presence record a router replica keeps in lb_routers.
type RouterInfo struct {
	ID      string                 `json:"id"`
	Address string                 `json:"address"`
	Started time.Time              `json:"started"`
	Version string                 `json:"version,omitempty"`
	Regions map[string]RegionStats `json:"regions"`
	// Certificates are what the router's HTTPS listener serves (none when
	// it has no listener); GET /api/v1/lb/certificates merges them.
	Certificates []CertInfo `json:"certificates,omitempty"`
	UpdatedAt    time.Time  `json:"updated_at"`
}

// CertInfo describes a certificate a router serves.
type CertInfo struct {
	Names    []string  `json:"names"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	Source   string    `json:"source"` // file or acme
}

// RegionStats are a router's recent rates for one region.
type RegionStats struct {
	RequestsPerSec float64 `json:"requests_per_sec"`
	ErrorsPerSec   float64 `json:"errors_per_sec"`
}
