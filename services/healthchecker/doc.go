// Package healthchecker is the health checker service: it actively checks
// every region, keeps each region's health state in KV lb_health, publishes
// every result on lb.health.results.<region> (kept by stream LB_HEALTH) and
// every status change once on lb.events.health.<region>, and answers
// on-demand checks on lb.cmd.health.check.
//
// # Checks and state
//
// A check is GET <endpoint><health_path or HEALTH_CHECK_PATH> within
// HEALTH_CHECK_TIMEOUT (package probe); 2xx (or the region's
// expected_status range) is healthy. The state machine (package state) is
// pure: unknown → healthy on the first good check; unknown or healthy →
// unhealthy after HEALTH_FAILURE_THRESHOLD consecutive failures;
// unhealthy → healthy after
// HEALTH_RECOVERY_THRESHOLD consecutive successes. Writes to lb_health are
// compare-and-set on the key's revision: the writer keeps the revision of
// its last write, and on a conflict it re-reads the state, re-applies the
// result and tries again, so two writers (an on-demand check racing the
// scheduled one, or two replicas during a hand-over) never lose a result.
// A transition is announced after its write succeeded, with the Nats-Msg-Id
// "health-<region>-<revision>": the revision is unique per write, so a
// retried publish is de-duplicated by LB_EVENTS and a transition is never
// announced twice. (A crash between the write and the publish loses that
// one event; the state in lb_health stays right.)
//
// # Scheduling
//
// One goroutine owns a min-heap of the regions this replica checks and one
// timer (package schedule). Checks are aligned to wall-clock slots offset by
// a hash of the region name, so regions are spread evenly over the interval
// (a deterministic jitter) and every replica agrees on when a region is
// due. After any check the next one is the first slot at least half an
// interval later. A region that is added or whose endpoint, health path or
// expected status changes is checked at once; a removed region leaves the
// heap and its lb_health key is deleted by its owner. A region that a
// replica starts to own (start-up, or taking over) is first "primed": its
// lb_health entry is read, and if nobody checked it within the last interval
// it is checked within min(interval/4, 2s) (randomly spread, so a restart
// does not probe every region in one burst), otherwise at its next slot.
// Each check runs in its own goroutine; a region never has two scheduled
// checks in flight.
//
// # Sharing the work between replicas
//
// Membership: each replica puts a heartbeat record under its member id in KV
// lb_members every heartbeat period and deletes it on shutdown. Every
// replica watches lb_members and considers a member alive while its last
// heartbeat was seen less than deadAfter ago, measured on the local clock
// when the update arrives (no clock-skew sensitivity). deadAfter is the
// check interval, capped by the bucket's TTL; the heartbeat period is a
// quarter of it, so a member must miss four heartbeats to be declared dead.
//
// Assignment: rendezvous (highest-random-weight) hashing of the region name
// over the sorted list of live members (package rendezvous). Every replica
// computes the same owner from the same member list without coordination;
// a joining or leaving member moves only the regions it gains or loses.
// Together with the shared slots this gives one check per region per
// interval in steady state. During a membership change replicas may
// briefly disagree; the worst case is one extra or one missing probe for
// a region, and the revision-checked writes keep the state consistent.
//
// Take-over: a replica that stops gracefully deletes its member key, so the
// others re-assign at once and check its regions at their next slot (within
// one interval). A replica that dies stops heartbeating; after deadAfter
// (one interval) plus at most one sweep period (a quarter interval) the
// others drop it, prime its regions, see that they are overdue and check
// them within min(interval/4, 2s): about 1.5 intervals in the worst case,
// inside the two-interval bound.
//
// Watches of lb_regions and lb_members are re-opened whenever the NATS
// connection is re-established (and when a watcher ends), and each re-open
// delivers a full snapshot that is diffed against what the replica knew, so
// changes made while NATS was unreachable are not missed.
package healthchecker
