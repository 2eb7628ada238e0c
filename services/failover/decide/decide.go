// Package decide holds every rule of the failover manager as pure functions:
// the current regions, health and failovers go in, the changes to make come
// out, and time is whatever the caller says it is. Keeping it free of I/O
// lets each rule be table-tested, and lets a new leader make exactly the
// decisions the old one would have made from the same state in KV.
//
// Rules (Decide applies them in this order, to a copy of the state):
//
//  1. Ends. A failover whose from_region left the registry ends
//     (WhyRegionRemoved). A manual failover ends when its ExpiresAt has
//     passed (WhyExpired); otherwise only a clear command ends it. An
//     automatic failover (reason unhealthy or failure_rate) ends when its
//     region has been Good continuously for FailbackDelay (WhyFailback):
//     the first time it is seen Good the clock starts (HealthySince is set
//     and stored with the failover, so a new leader keeps counting), and a
//     relapse stops the clock (HealthySince cleared).
//  2. Starts, only when automatic failover is enabled. A registered region
//     without a failover whose status is unhealthy fails over with reason
//     unhealthy; otherwise one whose FailureRate reaches the threshold fails
//     over with reason failure_rate (a flapping region that never fails
//     enough checks in a row).
//  3. Targets. A new failover, and every failover whose to_region is empty,
//     unregistered or itself failed over, gets the best target: the Good,
//     registered, not-failed-over region other than itself with the lowest
//     latency (name breaks ties), or "" when none qualifies. Re-targeting
//     keeps the reason and the since of the failover. Because a target is
//     never a failed-over region, the result never has chains or cycles.
package decide

import (
	"cmp"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

// WindowSize is the number of checks FAILOVER_THRESHOLD is a fraction of. It
// mirrors the health checker's window (model.Health.Window keeps the last
// ten outcomes).
const WindowSize = 10

// Reasons a failover ends, reported in logs and metrics.
const (
	WhyFailback      = "failback"
	WhyExpired       = "expired"
	WhyRegionRemoved = "region_removed"
	WhyCleared       = "cleared"
)

// Policy is the automatic failover policy (FAILOVER_ENABLED,
// FAILOVER_THRESHOLD, FAILBACK_DELAY).
type Policy struct {
	Enabled       bool
	Threshold     float64
	FailbackDelay time.Duration
}

// Record is what the failover manager stores in lb_failover: the contract's
// Failover plus the failback clock. Readers that decode a model.Failover
// (router, apigw) ignore the extra field.
type Record struct {
	model.Failover
	// HealthySince is when an automatically failed-over region was first
	// seen Good again; nil while it is not. Storing it lets a new leader
	// continue the hysteresis instead of restarting it.
	HealthySince *time.Time `json:"healthy_since,omitempty"`
}

// State is everything a decision depends on.
type State struct {
	Now time.Time
	// Regions is the registry: every registered region with its health
	// (nil when it was never checked).
	Regions map[string]*model.Health
	// Failovers are the active failovers by from_region.
	Failovers map[string]Record
}

// Kind says what a Change does.
type Kind int

// Kinds of changes.
const (
	// Start creates a failover (event failover.started).
	Start Kind = iota + 1
	// Retarget points an existing failover at a new target (event
	// failover.started with the new target, reason kept).
	Retarget
	// End removes a failover (event failover.ended).
	End
	// Clock only starts or stops the failback clock (no event).
	Clock
)

// String names the kind in logs.
func (k Kind) String() string {
	switch k {
	case Start:
		return "start"
	case Retarget:
		return "retarget"
	case End:
		return "end"
	case Clock:
		return "clock"
	}
	return "unknown"
}

// Change is one write to lb_failover.
type Change struct {
	Kind   Kind
	Region string
	// Before is the failover as it was (nil for Start); After is what it
	// becomes (nil for End).
	Before *Record
	After  *Record
	// Why is set for End (WhyFailback, WhyExpired, WhyRegionRemoved).
	Why string
}

// FailureRate is the failed fraction of a region's last WindowSize checks.
// A window that is not full yet counts the missing checks as passed, so a
// single failure right after start-up (one failed check out of two) is not
// a 50% failure rate; with a full window it equals Health.FailureRate.
func FailureRate(h *model.Health) float64 {
	if h == nil || len(h.Window) == 0 {
		return 0
	}
	failed := 0
	for _, ok := range h.Window {
		if !ok {
			failed++
		}
	}
	return float64(failed) / float64(max(len(h.Window), WindowSize))
}

// Good reports whether a region is fit to receive traffic by the failover
// manager's standard: status healthy (known good, not merely unchecked) and
// a failure rate under the threshold. Failback waits for it, and automatic
// targets must be Good.
func Good(h *model.Health, threshold float64) bool {
	return h != nil && h.Status == model.StatusHealthy && FailureRate(h) < threshold
}

// Trigger returns the reason a region must fail over, or "" if it need not.
func Trigger(h *model.Health, threshold float64) string {
	switch {
	case h == nil:
		return ""
	case h.Status == model.StatusUnhealthy:
		return model.ReasonUnhealthy
	case FailureRate(h) >= threshold:
		return model.ReasonFailureRate
	}
	return ""
}

// Automatic reports whether a failover was started by the manager (and so
// fails back by itself) rather than by an operator.
func Automatic(f model.Failover) bool { return f.Reason != model.ReasonManual }

// Decide returns the changes that bring the failovers in s in line with the
// rules of the package documentation, in the order they should be applied:
// ends, then starts, then re-targets, then clock updates; regions in name
// order within each kind. Applying them in order is safe to interrupt: the
// next call with the resulting state finishes the job.
func Decide(p Policy, s State) []Change {
	changes := map[string]*Change{}
	next := maps.Clone(s.Failovers)
	if next == nil {
		next = map[string]Record{}
	}

	// 1. Ends and failback clocks.
	for _, name := range slices.Sorted(maps.Keys(s.Failovers)) {
		f := s.Failovers[name]
		before := f
		h, registered := s.Regions[name]
		end := func(why string) {
			delete(next, name)
			changes[name] = &Change{Kind: End, Region: name, Before: &before, Why: why}
		}
		switch {
		case !registered:
			end(WhyRegionRemoved)
		case !Automatic(f.Failover):
			if f.ExpiresAt != nil && !s.Now.Before(*f.ExpiresAt) {
				end(WhyExpired)
			}
		case !Good(h, p.Threshold):
			if f.HealthySince != nil {
				f.HealthySince = nil
				next[name] = f
				changes[name] = &Change{Kind: Clock, Region: name, Before: &before, After: &f}
			}
		default:
			since := s.Now
			if f.HealthySince != nil {
				since = *f.HealthySince
			}
			switch {
			case s.Now.Sub(since) >= p.FailbackDelay:
				end(WhyFailback)
			case f.HealthySince == nil:
				now := s.Now
				f.HealthySince = &now
				next[name] = f
				changes[name] = &Change{Kind: Clock, Region: name, Before: &before, After: &f}
			}
		}
	}

	// 2. Automatic starts.
	if p.Enabled {
		for _, name := range slices.Sorted(maps.Keys(s.Regions)) {
			if _, active := next[name]; active {
				continue
			}
			if _, ended := changes[name]; ended {
				// It ended on this pass because it is Good or expired; an
				// expired manual failover of a sick region is replaced on
				// the next pass, after its end is written and announced.
				continue
			}
			reason := Trigger(s.Regions[name], p.Threshold)
			if reason == "" {
				continue
			}
			f := Record{Failover: model.Failover{FromRegion: name, Reason: reason, Since: s.Now}}
			next[name] = f
			changes[name] = &Change{Kind: Start, Region: name, After: &f}
		}
	}

	// 3. Targets.
	valid := func(from, to string) bool {
		if to == "" || to == from {
			return false
		}
		if _, ok := s.Regions[to]; !ok {
			return false
		}
		_, failed := next[to]
		return !failed
	}
	for _, name := range slices.Sorted(maps.Keys(next)) {
		f := next[name]
		c := changes[name]
		isNew := c != nil && c.Kind == Start
		if !isNew && valid(name, f.ToRegion) {
			continue
		}
		to := bestTarget(name, s.Regions, next, p.Threshold)
		if !isNew && to == f.ToRegion {
			continue
		}
		f.ToRegion = to
		next[name] = f
		switch {
		case isNew:
			c.After = &f
		case c != nil: // a clock change: fold it into the re-target
			c.Kind, c.After = Retarget, &f
		default:
			before := s.Failovers[name]
			changes[name] = &Change{Kind: Retarget, Region: name, Before: &before, After: &f}
		}
	}

	out := make([]Change, 0, len(changes))
	for _, c := range changes {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Change) int {
		return cmp.Or(cmp.Compare(order(a.Kind), order(b.Kind)), cmp.Compare(a.Region, b.Region))
	})
	return out
}

func order(k Kind) int {
	switch k {
	case End:
		return 0
	case Start:
		return 1
	case Retarget:
		return 2
	}
	return 3
}

// bestTarget is the Good, registered, not-failed-over region other than from
// with the lowest latency; the name breaks ties. "" when none qualifies.
func bestTarget(from string, regions map[string]*model.Health, failovers map[string]Record, threshold float64) string {
	best, bestLat := "", 0.0
	for name, h := range regions {
		if name == from || !Good(h, threshold) {
			continue
		}
		if _, failed := failovers[name]; failed {
			continue
		}
		if best == "" || h.LatencyMS < bestLat || (h.LatencyMS == bestLat && name < best) {
			best, bestLat = name, h.LatencyMS
		}
	}
	return best
}

// Manual-command errors. They are *model.Error so they cross NATS and reach
// API clients with their status and code.
var (
	// ErrSameRegion is a trigger whose target is its source.
	ErrSameRegion = model.Invalid("same_region", "from_region and to_region must differ")
	// ErrTargetUnhealthy is a trigger towards an unhealthy region without force.
	ErrTargetUnhealthy = model.Conflict("target_unhealthy", "target region is not healthy")
	// ErrTargetFailedOver is a trigger towards a region that is itself failed over.
	ErrTargetFailedOver = model.Conflict("target_failed_over", "target region is failed over itself")
	// ErrNoFailover is a clear of a registered region that has no failover.
	ErrNoFailover = &model.Error{Status: http.StatusNotFound, Code: "failover_not_found", Message: "region has no active failover"}
)

// CheckTrigger applies the rules of a manual failover from → to to the
// current state; names are assumed syntactically valid. A target counts as
// healthy when it is healthy or not checked yet (unknown), the same rule as
// model.InRotation: the router already sends an unknown region its share,
// so refusing it as a manual target would be inconsistent. An unhealthy
// target needs force. A failed-over target is refused even with force: the
// failover pointing at it would be re-targeted at once, and allowing it
// could form a cycle.
func CheckTrigger(s State, from, to string, force bool) error {
	if from == to {
		return ErrSameRegion
	}
	if _, ok := s.Regions[from]; !ok {
		return model.NotFound(from)
	}
	h, ok := s.Regions[to]
	if !ok {
		return model.NotFound(to)
	}
	if _, failed := s.Failovers[to]; failed {
		return model.Conflict(ErrTargetFailedOver.Code, "target region %q is failed over itself; clear that first or choose another target", to)
	}
	if !force && h != nil && h.Status == model.StatusUnhealthy {
		return model.Conflict(ErrTargetUnhealthy.Code, "target region %q is unhealthy; set force to fail over to it anyway", to)
	}
	return nil
}

// Manual builds the record of a manual failover triggered at now. A ttl of
// zero means none. If prev is the same manual failover (same target), its
// since is kept: re-triggering only refreshes the TTL.
func Manual(prev *Record, from, to string, ttl time.Duration, now time.Time) Record {
	r := Record{Failover: model.Failover{FromRegion: from, ToRegion: to, Reason: model.ReasonManual, Since: now}}
	if prev != nil && prev.Reason == model.ReasonManual && prev.ToRegion == to {
		r.Since = prev.Since
	}
	if ttl > 0 {
		exp := now.Add(ttl)
		r.ExpiresAt = &exp
	}
	return r
}

// Announced reports whether going from before to after changes what the
// failover means for traffic (its target or its reason), which is what
// deserves a failover.started event; clock and TTL refreshes do not.
func Announced(before, after *Record) bool {
	if before == nil || after == nil {
		return true
	}
	return before.ToRegion != after.ToRegion || before.Reason != after.Reason
}

// Next is the earliest instant at which Decide could decide differently
// without any input changing: a failback clock or a manual TTL running out.
// It is zero when nothing is pending, so the caller sleeps until the next
// change instead of polling.
func Next(p Policy, s State) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, f := range s.Failovers {
		switch {
		case !Automatic(f.Failover) && f.ExpiresAt != nil:
			consider(*f.ExpiresAt)
		case Automatic(f.Failover) && f.HealthySince != nil:
			consider(f.HealthySince.Add(p.FailbackDelay))
		}
	}
	return next
}
