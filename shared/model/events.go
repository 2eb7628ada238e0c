package model

import (
	"encoding/json"
	"strings"
	"time"
)

// Event types.
const (
	EventHealthChanged   = "health.changed"
	EventOutlierEjected  = "outlier.ejected"
	EventOutlierReturned = "outlier.returned"
	EventFailoverStarted = "failover.started"
	EventFailoverEnded   = "failover.ended"
	EventRegionAdded     = "region.added"
	EventRegionUpdated   = "region.updated"
	EventRegionRemoved   = "region.removed"
	EventStrategyChanged = "strategy.changed"
	// EventTLSReloadFailed: a router kept its old certificates because the
	// new files are bad (Reason says why).
	EventTLSReloadFailed = "tls.reload_failed"
	// EventTLSCertificateIssued: a router obtained or renewed a certificate
	// by ACME (Names; Reason is "new" or "renewal").
	EventTLSCertificateIssued = "tls.certificate_issued"
	// EventTLSCertificateFailed: an ACME order failed (Names, Reason); it is
	// retried with backoff.
	EventTLSCertificateFailed = "tls.certificate_failed"
)

// Event is the one JSON shape of every event on lb.events.>; fields that do
// not apply to a type are omitted.
type Event struct {
	Type string    `json:"type"`
	At   time.Time `json:"at"`

	// Region is the region the event is about (health and config events).
	Region string `json:"region,omitempty"`

	// health.changed
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`

	// outlier.ejected / outlier.returned / tls.*
	RouterID string `json:"router_id,omitempty"`
	// tls.certificate_*: the certificate's names.
	Names []string `json:"names,omitempty"`

	// failover.started / failover.ended
	FromRegion string `json:"from_region,omitempty"`
	ToRegion   string `json:"to_region,omitempty"`

	// region.* carry the region after the change (removed: before it);
	// strategy.changed carries the new strategy.
	RegionDoc *Region         `json:"region_doc,omitempty"`
	Strategy  *StrategyConfig `json:"strategy,omitempty"`
}

// MarshalJSON always writes to_region on failover events, even when it is
// empty (a failover with no healthy target), as the contract lists it.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	if !strings.HasPrefix(e.Type, "failover.") {
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		plain
		ToRegion string `json:"to_region"`
	}{plain(e), e.ToRegion})
}
