package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/services/failover/lease"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/poll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// flaky is a KV whose every call fails while broken, as when a replica
// loses NATS without dying.
type flaky struct {
	lease.KV
	broken atomic.Bool
}

var errBroken = errors.New("connection lost")

func (f *flaky) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if f.broken.Load() {
		return nil, errBroken
	}
	return f.KV.Get(ctx, key)
}

func (f *flaky) Create(ctx context.Context, key string, v []byte, o ...jetstream.KVCreateOpt) (uint64, error) {
	if f.broken.Load() {
		return 0, errBroken
	}
	return f.KV.Create(ctx, key, v, o...)
}

func (f *flaky) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	if f.broken.Load() {
		return 0, errBroken
	}
	return f.KV.Update(ctx, key, v, rev)
}

func (f *flaky) Delete(ctx context.Context, key string, o ...jetstream.KVDeleteOpt) error {
	if f.broken.Load() {
		return errBroken
	}
	return f.KV.Delete(ctx, key, o...)
}

// timeline records leadership intervals of every replica.
type timeline struct {
	mu     sync.Mutex
	events []event
}

type event struct {
	id      string
	leading bool
	term    uint64
	at      time.Time
}

func (tl *timeline) observer(id string) func(bool, uint64) {
	return func(leading bool, term uint64) {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		tl.events = append(tl.events, event{id, leading, term, time.Now()})
	}
}

// check fails the test if two replicas ever led at the same time (by their
// own account), or if a term was won twice.
func (tl *timeline) check(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	current := ""
	terms := map[uint64]string{}
	for _, e := range tl.events {
		if e.leading {
			if current != "" {
				t.Fatalf("%s became leader (term %d) while %s still led: %v", e.id, e.term, current, tl.events)
			}
			if prev, dup := terms[e.term]; dup {
				t.Fatalf("term %d won twice (%s, %s)", e.term, prev, e.id)
			}
			terms[e.term] = e.id
			current = e.id
		} else if e.id == current {
			current = ""
		}
	}
}

func (tl *timeline) leader() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	cur := ""
	for _, e := range tl.events {
		if e.leading {
			cur = e.id
		} else if e.id == cur {
			cur = ""
		}
	}
	return cur
}

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, _, js := embeddednats.JetStreamForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

type replica struct {
	e      *lease.Elector
	kv     *flaky
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, kv jetstream.KeyValue, id string, ttl time.Duration, tl *timeline) *replica {
	t.Helper()
	f := &flaky{KV: kv}
	r := &replica{kv: f, done: make(chan struct{})}
	r.e = lease.New(f, lease.Options{Key: "failover", ID: id, TTL: ttl, OnChange: tl.observer(id)})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.e.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func TestOneLeaderAndReleaseHandsOverAtOnce(t *testing.T) {
	kv := bucket(t)
	tl := &timeline{}
	const ttl = time.Second
	reps := map[string]*replica{}
	for _, id := range []string{"r1", "r2", "r3"} {
		reps[id] = start(t, kv, id, ttl, tl)
	}
	poll.True(t, 5*time.Second, "a leader", func() bool { return tl.leader() != "" })
	first := tl.leader()
	// Stable: nobody else takes over while the leader renews.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if tl.leader() != first {
			t.Fatalf("leader changed from %s to %s without a failure", first, tl.leader())
		}
		n := 0
		for _, r := range reps {
			if _, ok := r.e.Leading(); ok {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("%d replicas think they lead", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A graceful stop releases the lease: a standby takes over well within
	// one TTL.
	reps[first].stop()
	took := poll.True(t, ttl, "hand-over after release", func() bool { l := tl.leader(); return l != "" && l != first })
	t.Logf("hand-over after release: %v", took)
	tl.check(t)
}

func TestCrashedLeaderIsReplacedWithinTwoTTL(t *testing.T) {
	kv := bucket(t)
	tl := &timeline{}
	const ttl = time.Second
	a := start(t, kv, "a", ttl, tl)
	poll.True(t, 5*time.Second, "a leads", func() bool { return tl.leader() == "a" })
	b := start(t, kv, "b", ttl, tl)
	a.kv.broken.Store(true)
	took := poll.True(t, 2*ttl+500*time.Millisecond, "b takes over", func() bool {
		_, ok := b.e.Leading()
		return ok
	})
	t.Logf("take-over after crash: %v", took)
	if took > 2*ttl {
		t.Fatalf("take-over took %v, more than two lease periods", took)
	}
	if _, ok := a.e.Leading(); ok {
		t.Fatal("the cut-off leader still thinks it leads")
	}
	// a comes back: it must not lead again while b renews.
	a.kv.broken.Store(false)
	time.Sleep(2 * ttl) // observing that nothing happens needs time
	if tl.leader() != "b" {
		t.Fatalf("leader is %s after a came back", tl.leader())
	}
	tl.check(t)
}

func TestDocString(t *testing.T) {
	if got := fmt.Sprint(lease.Doc{Holder: "x", Term: 7}); got != "x@7" {
		t.Fatal(got)
	}
}
