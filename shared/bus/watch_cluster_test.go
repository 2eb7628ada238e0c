package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
)

// A three-node cluster loses the node that holds the watch's consumer,
// either the stream's leader or a follower. The watcher's own connection (to
// another node) never drops: the leader advisory, or else the watch's short
// heartbeat, must get changes flowing again within a few seconds, not after
// the KV watcher's usual missed heartbeats (10 s and more).
func TestWatchFollowsTheLossOfItsConsumersNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three-node clusters")
	}
	for _, tc := range []struct {
		name    string
		leading bool
	}{{"stream leader lost", true}, {"follower lost", false}} {
		t.Run(tc.name, func(t *testing.T) { watchNodeLoss(t, tc.leading) })
	}
}

func watchNodeLoss(t *testing.T, leading bool) {
	const bucket, stream = "lb_watch_test", "KV_lb_watch_test"
	nodes := embeddednats.StartClusterForTest(t, 3)
	watcher := nodes[0]
	ncW, err := nats.Connect(watcher.ClientURL(), nats.NoReconnect())
	require.NoError(t, err)
	t.Cleanup(ncW.Close)
	jsW, err := jetstream.New(ncW)
	require.NoError(t, err)
	ctx := ctxT(t, 90*time.Second)
	kvW, err := jsW.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: 3})
	require.NoError(t, err)
	// A new R3 stream may have no leader yet on a loaded machine: the
	// first write waits for one.
	eventually(t, 30*time.Second, func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		_, err := kvW.PutString(pctx, "k", "v1")
		return err == nil
	}, "the new bucket took no write for 30s")

	var mu sync.Mutex
	seen := map[string]time.Time{}
	got := func(v string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); _, ok := seen[v]; return ok }
	}
	startWatch := func() (stop func()) {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			bus.Watch(wctx, ncW, kvW, func(_ bool, es []jetstream.KeyValueEntry) {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range es {
					if _, ok := seen[string(e.Value())]; !ok {
						seen[string(e.Value())] = time.Now()
					}
				}
			}, logging.Discard())
		}()
		eventually(t, 10*time.Second, got("v1"), "the watch's first snapshot")
		return func() { cancel(); <-done }
	}
	// holder is the node running the watch's consumer (nil while moving).
	holder := func() *embeddednats.Server {
		names := consumers(t, jsW, stream)
		for _, n := range nodes {
			for _, c := range names {
				if n.NATS().JetStreamIsConsumerLeader("$G", stream, c) {
					return n
				}
			}
		}
		return nil
	}
	leads := func(n *embeddednats.Server) bool { return n.NATS().JetStreamIsStreamLeader("$G", stream) }

	// Arrange the case: the consumer on a node other than the watcher's,
	// leading the stream or not as asked. A new watch places its consumer
	// anew; a stream step-down moves the leadership.
	stop := startWatch()
	var lost *embeddednats.Server
	eventually(t, 60*time.Second, func() bool {
		h := holder()
		switch {
		case h == nil:
			return false
		case h == watcher, h.NATS().JetStreamIsLeader():
			// Not the watcher's own node (that is a reconnect) nor the meta
			// leader (no consumer can be made until a new one is elected).
			stop()
			stop = startWatch()
			return false
		case leads(h) != leading:
			for _, n := range nodes {
				if leads(n) {
					_ = n.NATS().JetStreamStepdownStream("$G", stream)
				}
			}
			return false
		}
		lost = h
		return true
	}, "could not place the watch's consumer as the case needs")
	t.Cleanup(func() { stop() })

	var writer *embeddednats.Server // the third node
	for _, n := range nodes {
		if n != watcher && n != lost {
			writer = n
		}
	}
	ncO, err := nats.Connect(writer.ClientURL(), nats.NoReconnect())
	require.NoError(t, err)
	t.Cleanup(ncO.Close)
	js, err := jetstream.New(ncO)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)

	lost.Shutdown()
	var acked time.Time
	eventually(t, 30*time.Second, func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := kv.PutString(pctx, "k", "v2"); err != nil {
			return false
		}
		acked = time.Now()
		return true
	}, "no new leader acknowledged the write")
	eventually(t, 8*time.Second, got("v2"), "the change did not reach the watcher within 8s of its acknowledgement")
	mu.Lock()
	t.Logf("change seen %v after its acknowledgement", seen["v2"].Sub(acked).Round(time.Millisecond))
	mu.Unlock()
	require.True(t, ncW.IsConnected(), "the watcher's connection must not have dropped (that case is a reconnect)")
}

// consumers lists the stream's consumers; nil while the stream does not
// answer (a leader election in progress), and the caller asks again.
func consumers(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	var names []string
	l := st.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if l.Err() != nil {
		return nil
	}
	return names
}
