// Package acme holds what the router's automatic certificates need from
// JetStream: Storage, certmagic's storage on the lb_certs bucket, so that
// every router replica serves the same account, certificates and keys, and
// its lock lets one replica at a time order or renew.
package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
)

// Key layout in the bucket: certmagic's path segments, each escaped to the
// characters a KV key token allows, joined by '.', under "f." (files) or
// "l." (locks). Prefix listing is then a subject filter.
const (
	filePrefix = "f."
	lockPrefix = "l."
)

// DefaultLockTTL is how long a lock outlives its holder's last renewal; the
// holder renews every third of it. A holder that dies (a killed replica)
// leaves a lock that another takes over once it has seen it unchanged that
// long.
const DefaultLockTTL = 15 * time.Second

// Storage implements certmagic.Storage on a KV bucket.
type Storage struct {
	kv  jetstream.KeyValue
	id  string
	ttl time.Duration
	now func() time.Time

	log *slog.Logger

	mu   sync.Mutex
	held map[string]*heldLock
	// seen ages each lock's revision on this replica's clock: a lock is
	// taken over once its revision has not moved for the TTL, so clocks
	// that disagree between replicas never let a live holder's lock go.
	seen map[string]*bus.RevisionAge
	wg   sync.WaitGroup // renewers
}

type heldLock struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	rev    uint64
}

// lockDoc is a lock's value: who holds it and, for people reading the
// bucket, until when by the holder's clock (takeover goes by revisions).
type lockDoc struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

var _ certmagic.Storage = (*Storage)(nil)

// NewStorage stores in kv; id names this replica in the locks it holds, ttl
// (0: DefaultLockTTL) bounds how long a dead holder blocks the others.
func NewStorage(kv jetstream.KeyValue, id string, ttl time.Duration) *Storage {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	return &Storage{kv: kv, id: id, ttl: ttl, now: time.Now, log: slog.Default(), held: map[string]*heldLock{}, seen: map[string]*bus.RevisionAge{}}
}

// encodeKey turns a certmagic key ("a/b/c.crt") into KV key tokens.
func encodeKey(key string) string {
	segs := strings.Split(strings.Trim(key, "/"), "/")
	for i, s := range segs {
		segs[i] = escape(s)
	}
	return strings.Join(segs, ".")
}

// escape keeps [A-Za-z0-9_-] and writes every other byte as =XX.
func escape(s string) string {
	if s == "" {
		return "="
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "=%02X", c)
	}
	return b.String()
}

func unescape(s string) string {
	if s == "=" {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '=' && i+2 < len(s) {
			if c, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(c))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func decodeKey(kvKey string) string {
	segs := strings.Split(kvKey, ".")
	for i, s := range segs {
		segs[i] = unescape(s)
	}
	return strings.Join(segs, "/")
}

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if _, err := s.kv.Put(ctx, filePrefix+encodeKey(key), value); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key; fs.ErrNotExist when there is none.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.kv.Get(ctx, filePrefix+encodeKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", key, err)
	}
	return e.Value(), nil
}

// keysUnder lists the KV keys of the files below key (not key itself).
func (s *Storage) keysUnder(ctx context.Context, key string) ([]string, error) {
	filter := filePrefix + ">"
	if k := strings.Trim(key, "/"); k != "" {
		filter = filePrefix + encodeKey(k) + ".>"
	}
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", key, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// Delete deletes key and everything below it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	under, err := s.keysUnder(ctx, key)
	if err != nil {
		return err
	}
	for _, k := range append(under, filePrefix+encodeKey(key)) {
		if err := s.kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	return nil
}

// Exists reports whether key is a file or has files below it.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if _, err := s.kv.Get(ctx, filePrefix+encodeKey(key)); err == nil {
		return true
	}
	under, err := s.keysUnder(ctx, key)
	return err == nil && len(under) > 0
}

// List returns the keys below path: all of them when recursive, else the
// files and directories directly in it.
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	under, err := s.keysUnder(ctx, path)
	if err != nil {
		return nil, err
	}
	base := strings.Trim(path, "/")
	seen := map[string]bool{}
	var out []string
	for _, k := range under {
		full := decodeKey(strings.TrimPrefix(k, filePrefix))
		if !recursive {
			rest := strings.TrimPrefix(strings.TrimPrefix(full, base), "/")
			first, _, _ := strings.Cut(rest, "/")
			if base != "" {
				full = base + "/" + first
			} else {
				full = first
			}
		}
		if !seen[full] {
			seen[full] = true
			out = append(out, full)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("list %s: %w", path, fs.ErrNotExist)
	}
	return out, nil
}

// Stat describes key: a file (with its size and time) or a directory.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	e, err := s.kv.Get(ctx, filePrefix+encodeKey(key))
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: e.Created(), Size: int64(len(e.Value())), IsTerminal: true}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	if under, err := s.keysUnder(ctx, key); err == nil && len(under) > 0 {
		return certmagic.KeyInfo{Key: key}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, fs.ErrNotExist)
}

// lockPoll is how often a waiting Lock looks at the lock again.
const lockPoll = 250 * time.Millisecond

// Lock takes the named lock, waiting while another live replica holds it;
// a lock whose holder stopped renewing it for the TTL is taken over.
func (s *Storage) Lock(ctx context.Context, name string) error {
	key := lockPrefix + encodeKey(name)
	for {
		rev, err := s.tryLock(ctx, key)
		if err != nil {
			return err
		}
		if rev != 0 {
			s.hold(name, key, rev)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// tryLock creates the lock, or takes over an expired one; 0 when another
// holds it.
func (s *Storage) tryLock(ctx context.Context, key string) (uint64, error) {
	doc := s.doc()
	rev, err := s.kv.Create(ctx, key, doc)
	if err == nil {
		return rev, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("lock %s: %w", key, err)
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil // released meanwhile: the next try creates it
	}
	if err != nil {
		return 0, fmt.Errorf("lock %s: %w", key, err)
	}
	// The holder rewrites the lock every TTL/3: a revision unchanged for
	// the TTL, by this replica's clock, is a dead holder's.
	s.mu.Lock()
	age := s.seen[key]
	if age == nil {
		age = &bus.RevisionAge{}
		s.seen[key] = age
	}
	stale := age.Stale(e.Revision(), s.now(), s.ttl)
	s.mu.Unlock()
	if !stale {
		return 0, nil
	}
	// Take it over on exactly this revision, so that two waiters cannot
	// both win.
	rev, err = s.kv.Update(ctx, key, doc, e.Revision())
	if err != nil {
		return 0, nil // another took it first
	}
	s.mu.Lock()
	delete(s.seen, key)
	s.mu.Unlock()
	var dead lockDoc
	_ = json.Unmarshal(e.Value(), &dead)
	s.log.Warn("acme: took over a lock its holder stopped renewing", "lock", key, "holder", dead.Holder)
	return rev, nil
}

func (s *Storage) doc() []byte {
	b, _ := json.Marshal(lockDoc{Holder: s.id, Expires: s.now().Add(s.ttl)})
	return b
}

// hold renews a taken lock every TTL/3 until Unlock.
func (s *Storage) hold(name, key string, rev uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heldLock{cancel: cancel, rev: rev}
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	s.wg.Go(func() {
		t := time.NewTicker(s.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			h.mu.Lock()
			rctx, rcancel := context.WithTimeout(ctx, s.ttl/3)
			rev, err := s.kv.Update(rctx, key, s.doc(), h.rev)
			switch {
			case err == nil:
				h.rev = rev
			case bus.IsWrongRevision(err), errors.Is(err, jetstream.ErrKeyNotFound):
				// Another replica took the lock over (this one stalled
				// past the TTL): its order may overlap with ours.
				s.log.Warn("acme: lost a lock while holding it", "lock", name, "err", err)
			}
			rcancel()
			h.mu.Unlock()
		}
	})
}

// Unlock releases a lock this replica holds.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlock %s: not held", name)
	}
	h.cancel()
	h.mu.Lock()
	rev := h.rev
	h.mu.Unlock()
	key := lockPrefix + encodeKey(name)
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		// A renewal cancelled by this Unlock may still have been applied,
		// leaving rev behind: delete the lock if it is still ours.
		if e, gerr := s.kv.Get(ctx, key); gerr == nil {
			var cur lockDoc
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder == s.id {
				err = s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
			}
		} else if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			err = nil
		}
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	return nil
}

// Close stops renewing the locks still held (they expire by themselves).
func (s *Storage) Close() {
	s.mu.Lock()
	for name, h := range s.held {
		h.cancel()
		delete(s.held, name)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
