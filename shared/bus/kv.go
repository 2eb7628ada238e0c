package bus

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/model"
)

// RevisionAge tells a dead holder's lock or lease key from a live one
// without comparing clocks across machines: a live holder rewrites its key
// more often than the TTL, so a revision this replica has seen unchanged
// for the TTL, by its own monotonic clock, is a dead holder's.
type RevisionAge struct {
	rev   uint64
	since time.Time
}

// Stale records rev as seen at now and reports whether it has stayed
// unchanged for ttl.
func (a *RevisionAge) Stale(rev uint64, now time.Time, ttl time.Duration) bool {
	if rev != a.rev || a.since.IsZero() {
		a.rev, a.since = rev, now
		return false
	}
	return now.Sub(a.since) >= ttl
}

// Reset starts rev's age at now (a holder that steps down watches its own
// last revision like any other).
func (a *RevisionAge) Reset(rev uint64, now time.Time) { a.rev, a.since = rev, now }

// IsWrongRevision reports a KV create or compare-and-swap that another
// writer won (the key exists, or its revision moved on): the caller reads
// again and retries.
func IsWrongRevision(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Unavailable turns a NATS failure into the typed 503 the API answers.
func Unavailable(err error) error {
	return model.Unavailable("NATS: %v", err)
}
