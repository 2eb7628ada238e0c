package bus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watchHeartbeat is how often an idle watch hears from its consumer. After
// two missed heartbeats nats.go re-creates the consumer, on a live node,
// from the last change it delivered: a NATS node lost with the watch's
// consumer on it costs about two heartbeats of delay instead of the 10 s
// and more of the KV watcher's fixed 5 s heartbeat.
const watchHeartbeat = time.Second

// kvWatcher is jetstream's KV watch (all keys, last value per key, then
// every change) with a short heartbeat; the KV API does not let callers set
// one. It implements jetstream.KeyWatcher: a nil entry marks the end of the
// initial values.
type kvWatcher struct {
	mu          sync.Mutex
	sub         *nats.Subscription
	updates     chan jetstream.KeyValueEntry
	prefix      string
	bucket      string
	initDone    bool
	initPending uint64
	received    uint64
}

func watchAll(ctx context.Context, nc *nats.Conn, bucket string) (*kvWatcher, error) {
	js, err := nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	}
	w := &kvWatcher{updates: make(chan jetstream.KeyValueEntry, 256), prefix: "$KV." + bucket + ".", bucket: bucket}
	// Created under the lock so that no update is handled before the
	// initial count is known; updates block on the channel by design.
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, err := js.Subscribe(w.prefix+">", w.update,
		nats.BindStream("KV_"+bucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject(),
		nats.IdleHeartbeat(watchHeartbeat), nats.Context(ctx))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	}
	sub.SetClosedHandler(func(string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		close(w.updates)
	})
	if pending, err := sub.InitialConsumerPending(); err == nil {
		if pending == 0 {
			w.initDone = true
			w.updates <- nil
		} else {
			w.initPending = pending
		}
	}
	w.sub = sub
	return w, nil
}

func (w *kvWatcher) update(m *nats.Msg) {
	meta, err := m.Metadata()
	if err != nil || len(m.Subject) <= len(w.prefix) {
		return
	}
	op := jetstream.KeyValuePut
	switch m.Header.Get("KV-Operation") {
	case "DEL":
		op = jetstream.KeyValueDelete
	case "PURGE":
		op = jetstream.KeyValuePurge
	case "":
		switch m.Header.Get("Nats-Marker-Reason") {
		case "MaxAge", "Purge":
			op = jetstream.KeyValuePurge
		case "Remove":
			op = jetstream.KeyValueDelete
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.updates <- &kvEntry{
		bucket: w.bucket, key: m.Subject[len(w.prefix):], value: m.Data,
		revision: meta.Sequence.Stream, created: meta.Timestamp, delta: meta.NumPending, op: op,
	}
	if !w.initDone {
		w.received++
		if w.received >= w.initPending || meta.NumPending == 0 {
			w.initDone = true
			w.updates <- nil
		}
	}
}

// Updates implements jetstream.KeyWatcher.
func (w *kvWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// Stop implements jetstream.KeyWatcher.
func (w *kvWatcher) Stop() error {
	if err := w.sub.Unsubscribe(); err != nil {
		return fmt.Errorf("stop watch %s: %w", w.bucket, err)
	}
	return nil
}

// kvEntry is one watched value.
type kvEntry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	delta       uint64
	op          jetstream.KeyValueOp
}

func (e *kvEntry) Bucket() string                  { return e.bucket }
func (e *kvEntry) Key() string                     { return e.key }
func (e *kvEntry) Value() []byte                   { return e.value }
func (e *kvEntry) Revision() uint64                { return e.revision }
func (e *kvEntry) Created() time.Time              { return e.created }
func (e *kvEntry) Delta() uint64                   { return e.delta }
func (e *kvEntry) Operation() jetstream.KeyValueOp { return e.op }
