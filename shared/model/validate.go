package model

import (
	"bytes"
	"encoding/json"
	"math"
	"net"
	"net/url"
	"regexp"
	"strings"
)

var regionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateRegionName checks that name can be a NATS subject token and a KV key.
func ValidateRegionName(name string) error {
	if name == "" {
		return Invalid("missing_region", "region is required")
	}
	if !regionNameRE.MatchString(name) {
		return Invalid("invalid_region", "region %q must match ^[a-z0-9][a-z0-9-]{0,62}$", name)
	}
	return nil
}

// ValidateEndpoint checks that raw is an absolute http or https URL, and that
// plain http is used only towards loopback unless allowPlaintext is set.
func ValidateEndpoint(raw string, allowPlaintext bool) error {
	if raw == "" {
		return Invalid("missing_endpoint", "endpoint is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Invalid("invalid_endpoint", "endpoint %q is not a URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Invalid("invalid_endpoint", "endpoint %q must be an absolute http or https URL", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return Invalid("invalid_endpoint", "endpoint %q has no host", raw)
	}
	if u.User != nil {
		return Invalid("invalid_endpoint", "endpoint %q must not carry credentials", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.ContainsAny(raw, "?#") {
		return Invalid("invalid_endpoint", "endpoint %q must not have a query or fragment", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := net.LookupPort("tcp", p); err != nil || n < 1 {
			return Invalid("invalid_endpoint", "endpoint %q has a bad port", raw)
		}
	}
	if u.Scheme == "http" && !allowPlaintext && !IsLoopbackHost(u.Hostname()) {
		return Invalid("plaintext_not_allowed", "endpoint %q uses plain http to a non-loopback host; use https or set REGION_ALLOW_PLAINTEXT=true", raw)
	}
	return nil
}

// IsLoopbackHost reports whether host names this machine's loopback.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidateWeight checks 0 <= w <= MaxWeight and that w is finite.
func ValidateWeight(w float64) error {
	if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 || w > MaxWeight {
		return Invalid("invalid_weight", "weight must be a finite number from 0 to 1000")
	}
	return nil
}

// ValidateHealthPath checks that a per-region health path is an absolute path.
func ValidateHealthPath(p string) error {
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, " \t\r\n#") {
		return Invalid("invalid_health_path", "health_path %q must be an absolute path such as /health", p)
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return Invalid("invalid_health_path", "health_path %q is not a valid path", p)
	}
	return nil
}

// ValidateStatusRange checks an expected_status range.
func ValidateStatusRange(r *StatusRange) error {
	if r == nil {
		return nil
	}
	if r.Min < 100 || r.Max > 599 || r.Min > r.Max {
		return Invalid("invalid_expected_status", "expected_status must satisfy 100 <= min <= max <= 599")
	}
	return nil
}

// ValidateRegion checks every field of a region document.
func ValidateRegion(r Region, allowPlaintext bool) error {
	if err := ValidateRegionName(r.Region); err != nil {
		return err
	}
	if err := ValidateEndpoint(r.Endpoint, allowPlaintext); err != nil {
		return err
	}
	if err := ValidateWeight(r.Weight); err != nil {
		return err
	}
	if err := ValidateHealthPath(r.HealthPath); err != nil {
		return err
	}
	return ValidateStatusRange(r.ExpectedStatus)
}

// LeastLatencyParams are the parameters of the least_latency strategy.
type LeastLatencyParams struct {
	// Exploration is the share of requests spread over the other regions so
	// that their latency estimates stay fresh.
	Exploration *float64 `json:"exploration,omitempty"`
}

// DefaultExploration is least_latency's exploration share when none is given.
const DefaultExploration = 0.05

// ExplorationOrDefault returns the configured share or the default.
func (p LeastLatencyParams) ExplorationOrDefault() float64 {
	if p.Exploration == nil {
		return DefaultExploration
	}
	return *p.Exploration
}

// NormalizeStrategy validates a strategy and its parameters and returns the
// parameters in canonical form (never null: at least {}).
func NormalizeStrategy(strategy string, params json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(params)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		trimmed = []byte("{}")
	}
	if trimmed[0] != '{' {
		return nil, Invalid("invalid_parameters", "parameters must be a JSON object")
	}
	switch strategy {
	case StrategyRoundRobin, StrategyWeighted:
		var m map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return nil, Invalid("invalid_parameters", "parameters must be a JSON object: %v", err)
		}
		for k := range m {
			return nil, Invalid("invalid_parameters", "strategy %s takes no parameters, got %q", strategy, k)
		}
		return json.RawMessage("{}"), nil
	case StrategyLeastLatency:
		var p LeastLatencyParams
		if err := DecodeStrict(trimmed, &p); err != nil {
			return nil, Invalid("invalid_parameters", "least_latency parameters: %v", err)
		}
		if p.Exploration != nil {
			e := *p.Exploration
			if math.IsNaN(e) || e < 0 || e > 0.5 {
				return nil, Invalid("invalid_parameters", "least_latency exploration must be from 0 to 0.5")
			}
		}
		out, _ := json.Marshal(p)
		return out, nil
	case "":
		return nil, Invalid("missing_strategy", "strategy is required")
	default:
		return nil, Invalid("invalid_strategy", "unknown strategy %q: use round_robin, weighted or least_latency", strategy)
	}
}

// Endpoint is one entry of REGIONAL_ENDPOINTS.
type Endpoint struct {
	Region   string
	Endpoint string
}

// ParseEndpoints reads REGIONAL_ENDPOINTS ("name:url,name:url", split at the
// first colon). Empty input gives no endpoints; duplicates are an error.
func ParseEndpoints(s string, allowPlaintext bool) ([]Endpoint, error) {
	var out []Endpoint
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, u, ok := strings.Cut(item, ":")
		if !ok {
			return nil, Invalid("invalid_endpoints", "entry %q must be name:url", item)
		}
		name, u = strings.TrimSpace(name), strings.TrimSpace(u)
		if err := ValidateRegionName(name); err != nil {
			return nil, err
		}
		if err := ValidateEndpoint(u, allowPlaintext); err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, Invalid("duplicate_region", "region %q is listed twice", name)
		}
		seen[name] = true
		out = append(out, Endpoint{Region: name, Endpoint: u})
	}
	return out, nil
}
