// Package lease elects one leader among replicas with a single key in a KV
// bucket. Every write is revision-checked, so at most one replica can hold a
// given revision of the key:
//
//   - a candidate with no lease in sight creates the key (Create fails if
//     someone else was faster);
//   - the leader renews it every Renew with Update(key, rev) on the revision
//     it wrote last; a failed compare-and-swap means it was taken over;
//   - a standby polls the key every Poll and remembers, on its own clock,
//     when it last saw the revision change. If the revision has not changed
//     for TTL the leader is presumed dead and the standby updates the key
//     on exactly that revision, so two standbys cannot both win;
//   - a leader that cannot renew (NATS gone, connection closed) stops
//     acting at sent+TTL-TTL/4, where sent is when it sent its last
//     successful renewal. A standby saw that revision no earlier than sent,
//     so it takes over no earlier than sent+TTL: the old leader has already
//     stopped. No clock is compared across machines.
//   - on shutdown the leader deletes the key (again on its revision), so a
//     standby takes over within one Poll instead of one TTL.
//
// Take-over after a crash happens within TTL plus two polls, inside two
// lease periods. The term of a leadership is the KV revision that won it,
// unique and increasing, which makes a good fencing token for logs.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
)

// KV is the part of jetstream.KeyValue the elector needs.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

// Options configure an Elector.
type Options struct {
	// Key is the lease key, one per role (for example "failover").
	Key string
	// ID names this replica in the lease document.
	ID string
	// TTL is how long a lease lasts without renewal.
	TTL time.Duration
	// Renew is the leader's renewal period; default TTL/3.
	Renew time.Duration
	// Poll is the standby's polling period; default TTL/10.
	Poll time.Duration
	// OnChange is called from the elector's goroutine whenever this replica
	// gains (true) or loses (false) the leadership, with the term.
	OnChange func(leading bool, term uint64)
	// Log receives hand-overs and errors; nil discards.
	Log *slog.Logger
}

// Doc is the lease document stored under the key.
type Doc struct {
	Holder    string    `json:"holder"`
	Term      uint64    `json:"term"`
	RenewedAt time.Time `json:"renewed_at"`
	TTLMS     int64     `json:"ttl_ms"`
}

// Elector campaigns for and holds one lease.
type Elector struct {
	kv   KV
	opts Options
	log  *slog.Logger

	mu         sync.Mutex
	leading    bool
	term       uint64
	rev        uint64    // revision this replica wrote last while leading
	validUntil time.Time // local deadline for acting as leader

	// standby view
	seen bus.RevisionAge
}

// New builds an elector; it does nothing until Run.
func New(kv KV, o Options) *Elector {
	if o.Renew <= 0 {
		o.Renew = o.TTL / 3
	}
	if o.Poll <= 0 {
		o.Poll = o.TTL / 10
	}
	o.Poll = max(o.Poll, 10*time.Millisecond)
	o.Renew = max(o.Renew, 10*time.Millisecond)
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{kv: kv, opts: o, log: log.With("lease", o.Key)}
}

// Leading reports whether this replica may act as leader at this moment,
// and its term. It turns false as soon as the lease may have run out, even
// before the elector's goroutine notices.
func (e *Elector) Leading() (uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leading || !time.Now().Before(e.validUntil) {
		return 0, false
	}
	return e.term, true
}

// Run campaigns until ctx ends, then releases the lease if it holds it.
func (e *Elector) Run(ctx context.Context) {
	defer e.release()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := e.step(ctx)
		t.Reset(wait)
	}
}

// step does one round and returns how long to wait before the next.
func (e *Elector) step(ctx context.Context) time.Duration {
	e.mu.Lock()
	leading, rev, term := e.leading, e.rev, e.term
	e.mu.Unlock()
	if leading {
		e.renew(ctx, rev, term)
		return e.opts.Renew
	}
	e.campaign(ctx)
	return e.opts.Poll
}

func (e *Elector) doc(term uint64) []byte {
	data, _ := json.Marshal(Doc{Holder: e.opts.ID, Term: term, RenewedAt: time.Now().UTC(), TTLMS: e.opts.TTL.Milliseconds()})
	return data
}

// margin is how long before a standby could take over a leader stops.
func (e *Elector) margin() time.Duration { return e.opts.TTL / 4 }

func (e *Elector) renew(ctx context.Context, rev, term uint64) {
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, e.opts.TTL/2)
	newRev, err := e.kv.Update(rctx, e.opts.Key, e.doc(term), rev)
	cancel()
	if err == nil {
		e.mu.Lock()
		e.rev, e.validUntil = newRev, sent.Add(e.opts.TTL-e.margin())
		e.mu.Unlock()
		return
	}
	if ctx.Err() != nil {
		return
	}
	if bus.IsWrongRevision(err) {
		e.log.Warn("lease taken over by another replica", "term", term, "err", err)
		e.stepDown(rev)
		return
	}
	e.mu.Lock()
	expired := !time.Now().Before(e.validUntil)
	e.mu.Unlock()
	e.log.Warn("lease renewal failed", "term", term, "err", err, "expired", expired)
	if expired {
		e.stepDown(rev)
	}
}

func (e *Elector) stepDown(rev uint64) {
	e.mu.Lock()
	term := e.term
	e.leading = false
	// Watch our own last revision like any standby: if nobody took over,
	// it is ours to take again after TTL.
	e.seen.Reset(rev, time.Now())
	e.mu.Unlock()
	e.log.Info("leadership lost", "id", e.opts.ID, "term", term)
	if e.opts.OnChange != nil {
		e.opts.OnChange(false, term)
	}
}

func (e *Elector) campaign(ctx context.Context) {
	sent := time.Now()
	gctx, cancel := context.WithTimeout(ctx, max(e.opts.TTL/2, e.opts.Poll))
	defer cancel()
	entry, err := e.kv.Get(gctx, e.opts.Key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Free (never taken, released, or expired by the bucket's TTL).
		rev, err := e.kv.Create(gctx, e.opts.Key, e.doc(0))
		if err != nil {
			if !bus.IsWrongRevision(err) && ctx.Err() == nil {
				e.log.Warn("lease create failed", "err", err)
			}
			return
		}
		e.win(gctx, rev, sent)
	case err != nil:
		if ctx.Err() == nil {
			e.log.Warn("lease read failed", "err", err)
		}
	default:
		if !e.seen.Stale(entry.Revision(), time.Now(), e.opts.TTL) {
			return
		}
		var d Doc
		_ = json.Unmarshal(entry.Value(), &d)
		rev, err := e.kv.Update(gctx, e.opts.Key, e.doc(0), entry.Revision())
		if err != nil {
			if !bus.IsWrongRevision(err) && ctx.Err() == nil {
				e.log.Warn("lease take-over failed", "err", err)
			}
			return
		}
		e.log.Info("lease expired, taking over", "previous", d.Holder, "previous_term", d.Term)
		e.win(gctx, rev, sent)
	}
}

// win records the leadership won at revision rev (the term) and writes the
// term into the document.
func (e *Elector) win(ctx context.Context, rev uint64, sent time.Time) {
	term := rev
	if r, err := e.kv.Update(ctx, e.opts.Key, e.doc(term), rev); err == nil {
		rev = r
	} else if bus.IsWrongRevision(err) {
		return
	}
	e.mu.Lock()
	e.leading, e.term, e.rev, e.validUntil = true, term, rev, sent.Add(e.opts.TTL-e.margin())
	e.mu.Unlock()
	e.log.Info("leadership acquired", "id", e.opts.ID, "term", term)
	if e.opts.OnChange != nil {
		e.opts.OnChange(true, term)
	}
}

// release gives the lease up on shutdown so that a standby takes over at
// once; it only deletes the revision this replica wrote.
func (e *Elector) release() {
	e.mu.Lock()
	leading, rev, term := e.leading, e.rev, e.term
	e.leading = false
	e.mu.Unlock()
	if !leading {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.kv.Delete(ctx, e.opts.Key, jetstream.LastRevision(rev)); err != nil {
		e.log.Warn("lease release failed; a standby takes over when it expires", "err", err)
	} else {
		e.log.Info("lease released", "term", term)
	}
	if e.opts.OnChange != nil {
		e.opts.OnChange(false, term)
	}
}

// String is for logs.
func (d Doc) String() string { return fmt.Sprintf("%s@%d", d.Holder, d.Term) }
