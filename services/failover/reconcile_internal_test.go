package failover

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/failover/decide"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
)

// TestReconcileAnnouncesWhatACrashedWriterDidNot simulates a replica that
// died between its write to lb_failover and its event: the leader
// announces the change, once, with the id the writer would have used; and
// likewise for a deletion.
func TestReconcileAnnouncesWhatACrashedWriterDidNot(t *testing.T) {
	oldGrace, oldEvery := reconcileGrace, reconcileEvery
	reconcileGrace, reconcileEvery = 0, 100*time.Millisecond
	t.Cleanup(func() { reconcileGrace, reconcileEvery = oldGrace, oldEvery })

	ns := embeddednats.StartForTest(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	regions, _ := js.KeyValue(ctx, bus.BucketRegions)
	failovers, _ := js.KeyValue(ctx, bus.BucketFailover)
	for _, r := range []string{"a", "b"} {
		if _, err := regions.Put(ctx, r, []byte(`{"region":"`+r+`","endpoint":"http://127.0.0.1:1","weight":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	rec := decide.Record{Failover: model.Failover{FromRegion: "a", ToRegion: "b", Reason: model.ReasonManual, Since: time.Now().UTC()}}
	data, _ := json.Marshal(rec)
	rev, err := failovers.Create(ctx, "a", data)
	if err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.URL, cfg.MetricsAddr, cfg.ID = ns.ClientURL(), "off", "fo-1"
	cfg.LeaseTTL = config.Duration(time.Second)
	svc, err := New(ctx, nc, cfg, logging.Discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	stream, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	lastEvent := func() (model.Event, nats.Header, uint64) {
		msg, err := stream.GetLastMsgForSubject(ctx, bus.FailoverEventsSubject("a"))
		if err != nil {
			return model.Event{}, nil, 0
		}
		var ev model.Event
		_ = json.Unmarshal(msg.Data, &ev)
		return ev, msg.Header, msg.Sequence
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("started announced", func() bool { ev, _, _ := lastEvent(); return ev.Type == model.EventFailoverStarted })
	ev, hdr, seq := lastEvent()
	if ev.ToRegion != "b" || ev.Reason != model.ReasonManual || hdr.Get(jetstream.MsgIDHeader) != startedID("a", rev) {
		t.Fatalf("event %+v id %q", ev, hdr.Get(jetstream.MsgIDHeader))
	}

	// The deletion, unannounced.
	if err := failovers.Delete(ctx, "a", jetstream.LastRevision(rev)); err != nil {
		t.Fatal(err)
	}
	wait("ended announced", func() bool { ev, _, _ := lastEvent(); return ev.Type == model.EventFailoverEnded })
	ev, hdr, seq2 := lastEvent()
	if ev.ToRegion != "b" || ev.Reason != model.ReasonManual || hdr.Get(jetstream.MsgIDHeader) != endedID("a", rev) || seq2 != seq+1 {
		t.Fatalf("event %+v id %q seq %d after %d", ev, hdr.Get(jetstream.MsgIDHeader), seq2, seq)
	}
	// Several more reconciliations add nothing.
	time.Sleep(5 * reconcileEvery) // proving that nothing happens takes time
	if _, _, seq3 := lastEvent(); seq3 != seq2 {
		t.Fatalf("more events after reconciliation: seq %d", seq3)
	}
}
