package model

import "time"

// InRotation is the one rule of who may receive traffic: healthy or not yet
// checked, and not failed over. The router and the API both use it.
func InRotation(h *Health, f *Failover) bool {
	if f != nil {
		return false
	}
	return h == nil || h.Status != StatusUnhealthy
}

// RegionView is the Region document of the REST API: the registry entry joined
// with its health and failover state.
type RegionView struct {
	Region         string       `json:"region"`
	Endpoint       string       `json:"endpoint"`
	Weight         float64      `json:"weight"`
	HealthPath     string       `json:"health_path"`
	ExpectedStatus *StatusRange `json:"expected_status,omitempty"`
	Status         string       `json:"status"`
	InRotation     bool         `json:"in_rotation"`
	LatencyMS      *float64     `json:"latency_ms"`
	LastCheck      *time.Time   `json:"last_check"`
	FailedOverTo   *string      `json:"failed_over_to"`
}

// NewRegionView joins a region with its health (nil: never checked) and its
// failover (nil: none). defaultHealthPath fills in a region without its own.
func NewRegionView(r Region, h *Health, f *Failover, defaultHealthPath string) RegionView {
	v := RegionView{
		Region:         r.Region,
		Endpoint:       r.Endpoint,
		Weight:         r.Weight,
		HealthPath:     r.HealthPath,
		ExpectedStatus: r.ExpectedStatus,
		Status:         StatusUnknown,
		InRotation:     InRotation(h, f),
	}
	if v.HealthPath == "" {
		v.HealthPath = defaultHealthPath
	}
	if h != nil {
		if h.Status != "" {
			v.Status = h.Status
		}
		if h.Last != nil {
			lat := h.LatencyMS
			v.LatencyMS = &lat
			t := h.Last.CheckedAt
			v.LastCheck = &t
		}
	}
	if f != nil {
		to := f.ToRegion
		v.FailedOverTo = &to
	}
	return v
}
