package acme

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/poll"
)

func certsKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	_, _, js := embeddednats.JetStreamForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketCerts)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestKeyEscaping(t *testing.T) {
	for _, k := range []string{"certificates/acme-v02.api.letsencrypt.org-directory/*.example.com/*.example.com.crt",
		"acme/localhost:14000-dir/users/ops@example.com/ops.json", "a=b/=/x y", "plain"} {
		if got := decodeKey(encodeKey(k)); got != k {
			t.Errorf("round trip %q: %q (encoded %q)", k, got, encodeKey(k))
		}
	}
}

// The storage as certmagic uses it: files by path (with the characters
// ACME paths have), directories, listing, stat, delete of a tree.
func TestStorageFiles(t *testing.T) {
	s := NewStorage(certsKV(t), "r1", 0)
	ctx := context.Background()
	files := map[string]string{
		"certificates/ca-dir/*.example.com/*.example.com.crt": "chain",
		"certificates/ca-dir/*.example.com/*.example.com.key": "key",
		"certificates/ca-dir/shop.example/shop.example.json":  "meta",
		"acme/ca-dir/users/ops@example.com/ops.json":          "account",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		if b, err := s.Load(ctx, k); err != nil || string(b) != v {
			t.Fatalf("load %s: %q %v", k, b, err)
		}
	}
	if _, err := s.Load(ctx, "certificates/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if !s.Exists(ctx, "certificates/ca-dir") || !s.Exists(ctx, "acme/ca-dir/users/ops@example.com/ops.json") || s.Exists(ctx, "nope") {
		t.Fatal("Exists is wrong for a directory, a file or nothing")
	}
	top, err := s.List(ctx, "certificates/ca-dir", false)
	slices.Sort(top)
	if err != nil || !slices.Equal(top, []string{"certificates/ca-dir/*.example.com", "certificates/ca-dir/shop.example"}) {
		t.Fatalf("List non-recursive: %v %v", top, err)
	}
	all, err := s.List(ctx, "certificates", true)
	if err != nil || len(all) != 3 {
		t.Fatalf("List recursive: %v %v", all, err)
	}
	fi, err := s.Stat(ctx, "certificates/ca-dir/shop.example/shop.example.json")
	if err != nil || !fi.IsTerminal || fi.Size != 4 || fi.Modified.IsZero() {
		t.Fatalf("Stat of a file: %+v %v", fi, err)
	}
	if fi, err := s.Stat(ctx, "certificates/ca-dir"); err != nil || fi.IsTerminal {
		t.Fatalf("Stat of a directory: %+v %v", fi, err)
	}
	if err := s.Delete(ctx, "certificates/ca-dir/*.example.com"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/ca-dir/*.example.com/*.example.com.key") || !s.Exists(ctx, "certificates/ca-dir/shop.example") {
		t.Fatal("Delete of a directory removed too little or too much")
	}
	if err := s.Delete(ctx, "never/there"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
}

// One holder at a time: a second replica's Lock waits until the first
// unlocks; a holder that dies (stops renewing) is taken over after the TTL.
func TestStorageLock(t *testing.T) {
	kv := certsKV(t)
	ttl := 600 * time.Millisecond
	a, b := NewStorage(kv, "router-a", ttl), NewStorage(kv, "router-b", ttl)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_shop.example"); err != nil {
		t.Fatal(err)
	}
	var bHolds atomic.Bool
	done := make(chan error, 1)
	go func() {
		err := b.Lock(ctx, "issue_cert_shop.example")
		bHolds.Store(err == nil)
		done <- err
	}()
	// a keeps renewing: b still waits after several TTLs.
	hold := time.Now()
	poll.True(t, 10*time.Second, "three TTLs pass with a holding the lock", func() bool { return time.Since(hold) > 3*ttl })
	if bHolds.Load() {
		t.Fatal("b took the lock while a held and renewed it")
	}
	if err := a.Unlock(ctx, "issue_cert_shop.example"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b did not get the lock after a unlocked")
	}

	// b dies holding it (its renewals stop, the lock stays): a takes over
	// once the TTL has passed, not before.
	b.Close()
	died := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Lock(lctx, "issue_cert_shop.example"); err != nil {
		t.Fatalf("a after b died: %v", err)
	}
	if waited := time.Since(died); waited < ttl/2 {
		t.Fatalf("a took a live-looking lock after %v (TTL %v)", waited, ttl)
	}
	if err := a.Unlock(ctx, "issue_cert_shop.example"); err != nil {
		t.Fatal(err)
	}

	// A waiting Lock honours its context.
	if err := a.Lock(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := b.Lock(short, "other"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with an expiring context: %v", err)
	}
}

// Replicas' clocks need not agree: a waiter whose clock is an hour ahead
// (the live holder's expiry time long past by it) still waits while the
// holder renews, and takes over only once the lock stops changing.
func TestStorageLockIgnoresClockSkew(t *testing.T) {
	kv := certsKV(t)
	ttl := 600 * time.Millisecond
	a, b := NewStorage(kv, "router-a", ttl), NewStorage(kv, "router-b", ttl)
	defer b.Close()
	b.now = func() time.Time { return time.Now().Add(time.Hour) }
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_skew.example"); err != nil {
		t.Fatal(err)
	}
	var bHolds atomic.Bool
	done := make(chan error, 1)
	go func() {
		err := b.Lock(ctx, "issue_cert_skew.example")
		bHolds.Store(err == nil)
		done <- err
	}()
	hold := time.Now()
	poll.True(t, 10*time.Second, "three TTLs pass with a renewing", func() bool { return time.Since(hold) > 3*ttl })
	if bHolds.Load() {
		t.Fatal("a waiter with a skewed clock took a live lock")
	}
	a.Close() // a dies: its renewals stop
	died := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b never took over the dead holder's lock")
	}
	if waited := time.Since(died); waited < ttl/2 {
		t.Fatalf("took over %v after the holder died (TTL %v)", waited, ttl)
	}
}
