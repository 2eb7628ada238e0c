// Package bus is the NATS side of the contract in code: the one place that
// names every subject, stream and bucket, the connect helper every service
// uses, the idempotent creation of buckets and streams, and command requests.
package bus

// KV buckets. The first four are the contract's; the rest are internal
// coordination buckets whose keys expire on their own.
const (
	// BucketRegions holds the region registry, key = region name.
	BucketRegions = "lb_regions"
	// BucketConfig holds the strategy under KeyStrategy.
	BucketConfig = "lb_config"
	// BucketHealth holds each region's health state, key = region name.
	BucketHealth = "lb_health"
	// BucketFailover holds active failovers, key = from_region.
	BucketFailover = "lb_failover"
	// BucketRouters holds router presence records, key = router id; entries
	// expire so a dead router drops out of the status on its own.
	BucketRouters = "lb_routers"
	// BucketMembers holds healthchecker membership heartbeats, key = member id.
	BucketMembers = "lb_members"
	// BucketLeases holds leader leases, key = role (for example "failover").
	BucketLeases = "lb_leases"
	// BucketCerts holds what automatic certificates need (certmagic's
	// storage, services/router/acme): every router replica serves the same.
	BucketCerts = "lb_certs"
)

// Keys with a fixed name.
const (
	// KeyStrategy is the key of the strategy document in BucketConfig.
	KeyStrategy = "strategy"
	// KeyFailoverSettings is the key in BucketConfig where the failover
	// manager publishes its effective settings (enabled, threshold).
	KeyFailoverSettings = "failover"
)

// Streams.
const (
	// StreamHealth keeps every check result on SubjectHealthResults.
	StreamHealth = "LB_HEALTH"
	// StreamEvents keeps every event on lb.events.>.
	StreamEvents = "LB_EVENTS"
)

// Subjects of results and events.
const (
	// SubjectHealthResultsPrefix is followed by the region name.
	SubjectHealthResultsPrefix = "lb.health.results."
	// SubjectHealthResultsAll matches every region's results.
	SubjectHealthResultsAll = "lb.health.results.>"
	// SubjectEventsAll matches every event.
	SubjectEventsAll = "lb.events.>"
	// SubjectEventsHealthPrefix is followed by the region name.
	SubjectEventsHealthPrefix = "lb.events.health."
	// SubjectEventsFailoverPrefix is followed by the from_region name.
	SubjectEventsFailoverPrefix = "lb.events.failover."
	// SubjectEventsFailoverAll matches every failover event.
	SubjectEventsFailoverAll = "lb.events.failover.>"
	// SubjectEventsConfig carries region and strategy changes.
	SubjectEventsConfig = "lb.events.config"
	// SubjectEventsTLS carries the routers' certificate events.
	SubjectEventsTLS = "lb.events.tls"
)

// Command subjects (request/reply, nats.go/micro endpoints in queue groups).
const (
	// SubjectCmdConfigRegionAdd creates a region.
	SubjectCmdConfigRegionAdd = "lb.cmd.config.region.add"
	// SubjectCmdConfigRegionUpdate partially updates a region.
	SubjectCmdConfigRegionUpdate = "lb.cmd.config.region.update"
	// SubjectCmdConfigRegionRemove deletes a region.
	SubjectCmdConfigRegionRemove = "lb.cmd.config.region.remove"
	// SubjectCmdConfigStrategySet replaces the strategy and its parameters.
	SubjectCmdConfigStrategySet = "lb.cmd.config.strategy.set"
	// SubjectCmdHealthCheck runs an on-demand health check.
	SubjectCmdHealthCheck = "lb.cmd.health.check"
	// SubjectCmdFailoverTrigger starts a manual failover.
	SubjectCmdFailoverTrigger = "lb.cmd.failover.trigger"
	// SubjectCmdFailoverClear ends a failover.
	SubjectCmdFailoverClear = "lb.cmd.failover.clear"
)

// Micro service names and queue groups (one queue group per service so that
// replicas share the commands).
const (
	// ServiceConfigMgr is the micro service name of configmgr.
	ServiceConfigMgr = "lb-configmgr"
	// ServiceHealthChecker is the micro service name of the health checker.
	ServiceHealthChecker = "lb-healthchecker"
	// ServiceFailover is the micro service name of the failover manager.
	ServiceFailover = "lb-failover"
)

// HealthResultsSubject is where results of one region's checks are published.
func HealthResultsSubject(region string) string { return SubjectHealthResultsPrefix + region }

// HealthEventsSubject is where one region's health events are published.
func HealthEventsSubject(region string) string { return SubjectEventsHealthPrefix + region }

// FailoverEventsSubject is where one region's failover events are published.
func FailoverEventsSubject(region string) string { return SubjectEventsFailoverPrefix + region }

// KVLeaderElectedSubject is the JetStream advisory sent when the stream
// behind KV bucket gets a new leader: watchers re-open then, instead of
// waiting for their consumer's missed heartbeats (many seconds).
func KVLeaderElectedSubject(bucket string) string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.KV_" + bucket
}
