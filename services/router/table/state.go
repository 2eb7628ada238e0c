package table

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

// State is everything a snapshot is built from: the four KV buckets as last
// seen. It is also what the state file keeps for static stability.
type State struct {
	Regions  map[string]model.Region   `json:"regions"`
	Strategy *model.StrategyConfig     `json:"strategy,omitempty"`
	Health   map[string]model.Health   `json:"health"`
	Failover map[string]model.Failover `json:"failover"`
	SavedAt  time.Time                 `json:"saved_at"`
}

// NewState returns an empty state.
func NewState() State {
	return State{
		Regions:  map[string]model.Region{},
		Health:   map[string]model.Health{},
		Failover: map[string]model.Failover{},
	}
}

func (s State) clone() State {
	c := NewState()
	for k, v := range s.Regions {
		c.Regions[k] = v
	}
	for k, v := range s.Health {
		c.Health[k] = v
	}
	for k, v := range s.Failover {
		c.Failover[k] = v
	}
	if s.Strategy != nil {
		st := *s.Strategy
		c.Strategy = &st
	}
	c.SavedAt = s.SavedAt
	return c
}

// SaveState writes s to path atomically (temp file and rename) so a crash
// never leaves half a file.
func SaveState(path string, s State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	s.SavedAt = time.Now().UTC()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".router-state-*")
	if err != nil {
		return fmt.Errorf("state temp file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("close state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("rename state: %w", err)
	}
	return nil
}

// ErrNoState is returned by LoadState when there is no state file yet.
var ErrNoState = errors.New("no saved routing state")

// LoadState reads a state file written by SaveState.
func LoadState(path string) (State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, ErrNoState
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	s := NewState()
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("decode state %s: %w", path, err)
	}
	if s.Regions == nil {
		s.Regions = map[string]model.Region{}
	}
	if s.Health == nil {
		s.Health = map[string]model.Health{}
	}
	if s.Failover == nil {
		s.Failover = map[string]model.Failover{}
	}
	return s, nil
}
