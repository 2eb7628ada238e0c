package healthchecker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvEvent is either the full content of a bucket (snapshot) or one change.
type kvEvent struct {
	snapshot bool
	entries  []jetstream.KeyValueEntry
}

// watch delivers a snapshot of the bucket, then every change, to out. It
// re-opens the watch (and delivers a fresh snapshot) whenever the NATS
// connection comes back or the watcher ends, so nothing changed during an
// outage is missed. It returns when ctx ends.
func (s *Service) watch(ctx context.Context, kv jetstream.KeyValue, bucket string, out chan<- kvEvent) {
	reconnected := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(reconnected)
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			if s.errLog.allow() {
				s.log.Warn("watch failed, retrying", "bucket", bucket, "err", err)
			}
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		again := consume(ctx, w, reconnected, out)
		_ = w.Stop()
		if !again {
			return
		}
		s.log.Info("re-opening watch", "bucket", bucket)
		if !sleep(ctx, 50*time.Millisecond) {
			return
		}
	}
}

// consume forwards updates until ctx ends (false) or the watch must be
// re-opened (true).
func consume(ctx context.Context, w jetstream.KeyWatcher, reconnected <-chan nats.Status, out chan<- kvEvent) bool {
	var snap []jetstream.KeyValueEntry
	loaded := false
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case e, ok := <-w.Updates():
			if !ok {
				return true
			}
			var ev kvEvent
			switch {
			case e == nil:
				loaded = true
				ev = kvEvent{snapshot: true, entries: snap}
				snap = nil
			case !loaded:
				snap = append(snap, e)
				continue
			default:
				ev = kvEvent{entries: []jetstream.KeyValueEntry{e}}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return false
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func isDelete(e jetstream.KeyValueEntry) bool {
	op := e.Operation()
	return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
}
