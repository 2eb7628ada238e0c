// Package failover is the failover manager: it decides where a sick
// region's traffic goes and when it comes back, owns KV lb_failover (key =
// from_region), and announces every change once on
// lb.events.failover.<from_region>.
//
// # Decisions
//
// Every rule lives in package decide as pure functions (state and clock in,
// changes out): automatic failover when a region turns unhealthy or its
// failure rate over the last ten checks reaches FAILOVER_THRESHOLD, the
// choice of target (Good, not failed over, lowest latency, name breaks
// ties; empty when none qualifies), re-targeting of failovers whose target
// fails, failback with hysteresis, manual TTLs. See its documentation.
//
// What counts as healthy: automatic decisions want a region that is known
// good (status healthy and failure rate under the threshold) both as a
// target and before failing back. A manual target only has to be in
// rotation as far as health goes (model.InRotation): healthy or not yet
// checked; an unhealthy target needs force, and a failed-over target is
// refused (it would be re-targeted at once, and could form a cycle).
//
// # Leadership
//
// Every replica watches lb_regions, lb_health and lb_failover (re-opening
// the watches after a NATS reconnect, with a fresh snapshot) and serves the
// commands. Only the holder of the lease "failover" in lb_leases (package
// lease: revision-checked create and update, TTL = FAILOVER_LEASE_TTL, no
// cross-machine clock comparison) makes automatic decisions. A standby
// takes over within two lease periods of a leader's death, and at once
// when a leader shuts down gracefully (it deletes its lease). A new leader
// continues from lb_failover, where the failback clock is stored with each
// automatic failover (field healthy_since, ignored by readers of
// model.Failover), so nothing is started twice or forgotten.
//
// Every write to lb_failover is a compare-and-swap on the revision the
// decision was based on: a leader that lost a race, or a stale leader in
// the instant before it notices that its lease ran out, fails instead of
// overwriting. The leader decides on every change of the watched buckets,
// when a failback clock or a TTL runs out (decide.Next), and at least once
// a second.
//
// # Commands
//
// lb.cmd.failover.trigger and lb.cmd.failover.clear are micro endpoints of
// service lb-failover in queue group "failover": any replica, leader or
// standby, answers them, reading the current state straight from KV and
// writing with a compare-and-swap (retried on conflict). Errors are typed
// *model.Error: 400 missing_region, invalid_region, same_region,
// invalid_ttl, invalid_json; 404 region_not_found, failover_not_found (a
// known region without a failover); 409 target_unhealthy (unless force),
// target_failed_over; 503 while NATS is away. A manual failover ends only
// by a clear or when its ttl (stored as expires_at) runs out.
//
// # Events
//
// failover.started (also for a re-target, with the new target and the
// reason kept) and failover.ended carry from_region, to_region and reason.
// The writer of a change publishes its event after the write succeeded,
// with Nats-Msg-Id "failover:<started|ended>:<region>:<revision>" (for an
// end, the revision of the record that was deleted), so retries are
// de-duplicated by LB_EVENTS. A refreshed TTL or a failback clock update is
// not announced: it changes nothing for traffic. If a writer dies between
// its write and its publish, the leader notices (on taking over and every
// ten seconds it compares each region's last failover event with
// lb_failover) and publishes the missing event with the same id.
//
// The leader also stores the effective settings (enabled, threshold) in
// lb_config under bus.KeyFailoverSettings for the API's status.
//
// # Metrics
//
// lb_failover_active{reason}, lb_failover_started_total{reason},
// lb_failover_retargeted_total{reason}, lb_failover_ended_total{reason,cause},
// lb_failover_leader, lb_failover_leader_term,
// lb_failover_leader_acquired_total, lb_failover_commands_total{command,result},
// lb_failover_event_publish_errors_total.
package failover
