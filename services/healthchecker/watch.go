package healthchecker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
)

// kvEvent is either the full content of a bucket (snapshot) or one change.
type kvEvent struct {
	snapshot bool
	entries  []jetstream.KeyValueEntry
}

// toChan hands what bus.Watch sees to the engine's loop, which owns the
// state, as kvEvents on out.
func toChan(ctx context.Context, out chan<- kvEvent) bus.WatchFunc {
	return func(snapshot bool, entries []jetstream.KeyValueEntry) {
		select {
		case out <- kvEvent{snapshot: snapshot, entries: entries}:
		case <-ctx.Done():
		}
	}
}
