// Package state is the per-region health state machine: a pure function from
// the previous state and one check result to the next state and, when the
// status flips, the transition to announce. Keeping it free of I/O lets the
// rules be table-tested and lets every caller (scheduled and on-demand
// checks, any replica) apply exactly the same rules.
//
// Rules:
//   - healthy → unhealthy after Fall consecutive failed checks;
//   - unhealthy → healthy after Rise consecutive good checks;
//   - unknown (never checked) → the first result decides: one good check
//     makes the region healthy, one failed check makes it unhealthy. This is
//     Envoy's start-up rule (a single success is enough for a new host) and,
//     because unknown regions are in rotation, a region that was never seen
//     healthy does not keep traffic while failures accumulate.
//
// Latency is an EWMA (alpha LatencyAlpha) over checks that got an HTTP
// answer; timeouts and connection errors carry no latency information.
package state

import (
	"fmt"
	"slices"

	"github.com/mrlb/mrlb/shared/model"
)

// WindowSize is how many recent outcomes Health.Window keeps; the failover
// manager's FAILOVER_THRESHOLD is a fraction of this window.
const WindowSize = 10

// LatencyAlpha weighs the newest latency sample in the EWMA: about the last
// six checks dominate, so a slow region is noticed within a few intervals.
const LatencyAlpha = 0.3

// Thresholds are HEALTH_FAILURE_THRESHOLD (Fall) and
// HEALTH_RECOVERY_THRESHOLD (Rise).
type Thresholds struct {
	Fall int
	Rise int
}

// Transition is a status change, announced as health.changed.
type Transition struct {
	From   string
	To     string
	Reason string
}

// Apply returns the state after result r. prev may be the zero Health (a
// region never checked). The returned Health never shares memory with prev.
func Apply(prev model.Health, r model.CheckResult, th Thresholds) (model.Health, *Transition) {
	th.Fall = max(th.Fall, 1)
	th.Rise = max(th.Rise, 1)

	next := prev
	next.Region = r.Region
	if next.Status == "" {
		next.Status = model.StatusUnknown
	}
	if r.Healthy {
		next.ConsecutiveSuccesses++
		next.ConsecutiveFailures = 0
	} else {
		next.ConsecutiveFailures++
		next.ConsecutiveSuccesses = 0
	}

	w := slices.Clone(prev.Window)
	w = append(w, r.Healthy)
	if len(w) > WindowSize {
		w = slices.Clone(w[len(w)-WindowSize:])
	}
	next.Window = w

	if r.StatusCode > 0 {
		if prev.LatencyMS <= 0 {
			next.LatencyMS = r.LatencyMS
		} else {
			next.LatencyMS = LatencyAlpha*r.LatencyMS + (1-LatencyAlpha)*prev.LatencyMS
		}
	}
	last := r
	next.Last = &last
	next.UpdatedAt = r.CheckedAt

	to, reason := decide(next, r, th)
	if to == next.Status {
		return next, nil
	}
	tr := &Transition{From: next.Status, To: to, Reason: reason}
	next.Status = to
	return next, tr
}

// decide returns the status after the counters were updated, and why.
func decide(h model.Health, r model.CheckResult, th Thresholds) (string, string) {
	switch h.Status {
	case model.StatusHealthy:
		if h.ConsecutiveFailures >= th.Fall {
			return model.StatusUnhealthy, fmt.Sprintf("%d consecutive failed checks: %s", h.ConsecutiveFailures, failure(r))
		}
	case model.StatusUnhealthy:
		if h.ConsecutiveSuccesses >= th.Rise {
			return model.StatusHealthy, fmt.Sprintf("%d consecutive good checks", h.ConsecutiveSuccesses)
		}
	default: // unknown, or a value this version does not know
		// A region not yet checked is in rotation already, so one good check
		// confirms it; taking it out needs the same consecutive failures as
		// for a healthy one (HEALTH_FAILURE_THRESHOLD), so one unlucky first
		// probe does not fail a new region over.
		if r.Healthy {
			return model.StatusHealthy, "first check passed"
		}
		if h.ConsecutiveFailures >= th.Fall {
			return model.StatusUnhealthy, fmt.Sprintf("%d consecutive failed checks: %s", h.ConsecutiveFailures, failure(r))
		}
	}
	return h.Status, ""
}

func failure(r model.CheckResult) string {
	if r.Error != "" {
		return r.Error
	}
	return fmt.Sprintf("status %d", r.StatusCode)
}
