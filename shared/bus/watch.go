package bus

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchFunc receives a bucket's whole content (snapshot true), then every
// change (snapshot false, one entry). A snapshot replaces what the receiver
// knew: keys absent from it are gone.
type WatchFunc func(snapshot bool, entries []jetstream.KeyValueEntry)

// Watch follows kv until ctx ends. It re-opens the watch, with a fresh
// snapshot, whenever the NATS connection is re-established or the watcher
// ends, so that changes made while NATS was away (or by a restarted server)
// are never missed. It also re-opens when the bucket's stream elects a new
// leader (a NATS node died): the watch's consumer lived on the old leader and
// would otherwise be noticed gone only after missed heartbeats, many seconds
// during which changes would not arrive. apply is called from this goroutine
// only.
func Watch(ctx context.Context, nc *nats.Conn, kv jetstream.KeyValue, apply WatchFunc, log *slog.Logger) {
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	elected := make(chan nats.Status, 1)
	if sub, err := nc.Subscribe(KVLeaderElectedSubject(kv.Bucket()), func(*nats.Msg) {
		select {
		case elected <- nats.CONNECTED:
		default:
		}
	}); err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	} else {
		log.Warn("no leader advisories: after a NATS node is lost, changes may arrive late", "bucket", kv.Bucket(), "err", err)
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		w, err := watchAll(ctx, nc, kv.Bucket())
		if err != nil {
			if wait < 5*time.Second { // log the first failures, not every retry of a long outage
				log.Warn("watch failed, retrying", "bucket", kv.Bucket(), "err", err)
			}
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		again := consume(ctx, w, reconnected, elected, apply)
		_ = w.Stop()
		drain(w.Updates())
		if !again {
			return
		}
		log.Info("re-opening watch", "bucket", kv.Bucket())
		// Jittered, so that the replicas of every service do not all read
		// the bucket at the same instant after an election.
		if !sleep(ctx, 50*time.Millisecond+rand.N(200*time.Millisecond)) {
			return
		}
	}
}

// consume applies updates until ctx ends (false) or the watch must be
// re-opened (true).
func consume(ctx context.Context, w jetstream.KeyWatcher, reconnected, elected <-chan nats.Status, apply WatchFunc) bool {
	var snap []jetstream.KeyValueEntry
	loaded := false
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case <-elected:
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

// IsDelete reports whether a watched entry removes its key.
func IsDelete(e jetstream.KeyValueEntry) bool {
	op := e.Operation()
	return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
}

// drain empties a stopped watch's channel so that a delivery blocked on it
// can finish; the channel is closed once the subscription has ended.
func drain(updates <-chan jetstream.KeyValueEntry) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-updates:
			if !ok {
				return
			}
		case <-t.C:
			return
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
