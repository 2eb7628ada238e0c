package healthchecker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mrlb/mrlb/shared/version"
)

// memberRecord is a replica's heartbeat in lb_members. DeadAfterMS lets
// each member state its own liveness bound, so replicas with different
// intervals still judge each other fairly.
type memberRecord struct {
	ID          string    `json:"id"`
	Started     time.Time `json:"started"`
	HeartbeatMS int64     `json:"heartbeat_ms"`
	DeadAfterMS int64     `json:"dead_after_ms"`
	Version     string    `json:"version"`
}

// heartbeatLoop keeps this replica's membership record fresh until ctx ends.
func (s *Service) heartbeatLoop(ctx context.Context) {
	rec := memberRecord{
		ID:          s.id,
		Started:     time.Now().UTC(),
		HeartbeatMS: s.heartbeat.Milliseconds(),
		DeadAfterMS: s.deadAfter.Milliseconds(),
		Version:     version.Version,
	}
	data, _ := json.Marshal(rec)
	put := func() {
		pctx, cancel := context.WithTimeout(ctx, max(s.heartbeat, time.Second))
		defer cancel()
		if _, err := s.kvMembers.Put(pctx, s.id, data); err != nil && ctx.Err() == nil && s.errLog.allow() {
			s.log.Warn("heartbeat failed", "err", err)
		}
	}
	put()
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			put()
		}
	}
}
