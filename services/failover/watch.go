package failover

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watch feeds apply with a snapshot of the bucket (snapshot true), then with
// every change. It re-opens the watch, with a fresh snapshot, whenever the
// NATS connection is re-established or the watcher ends, so that changes
// made while NATS was away (or a restarted server) are not missed. It
// returns when ctx ends.
func (s *Service) watch(ctx context.Context, kv jetstream.KeyValue, bucket string, apply func(snapshot bool, entries []jetstream.KeyValueEntry)) {
	reconnected := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(reconnected)
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			s.log.Warn("watch failed, retrying", "bucket", bucket, "err", err)
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		again := consume(ctx, w, reconnected, apply)
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

// consume applies updates until ctx ends (false) or the watch must be
// re-opened (true).
func consume(ctx context.Context, w jetstream.KeyWatcher, reconnected <-chan nats.Status, apply func(bool, []jetstream.KeyValueEntry)) bool {
	var snap []jetstream.KeyValueEntry
	loaded := false
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return true
			case e == nil:
				loaded = true
				apply(true, snap)
				snap = nil
			case !loaded:
				snap = append(snap, e)
			default:
				apply(false, []jetstream.KeyValueEntry{e})
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
