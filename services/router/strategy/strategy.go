// Package strategy holds the load-balancing policies of the router. Each
// policy is one small type behind Picker, built once per routing snapshot and
// then only read (or advanced with atomics), so a pick takes no lock and does
// not allocate.
package strategy

import (
	"encoding/json"
	"fmt"

	"github.com/mrlb/mrlb/shared/model"
)

// Picker chooses the index of the next candidate of a snapshot, or -1 when
// it has none. Implementations are safe for concurrent use.
type Picker interface {
	Pick() int
}

// Compile-time guards: every policy is a Picker.
var (
	_ Picker = (*RoundRobin)(nil)
	_ Picker = (*Weighted)(nil)
	_ Picker = (*LeastLatency)(nil)
	_ Picker = none{}
)

// Candidate is what a policy knows of one region in rotation.
type Candidate struct {
	// Shares is how many equal round-robin shares the region serves: 1 for
	// itself plus 1 for each failed-over region redirected to it.
	Shares int
	// Weight is the region's weight plus the weights redirected to it.
	Weight float64
	// Latency is the region's live latency estimate (least_latency only).
	Latency *Latency
}

// New builds the Picker of strategy name over cands. Unknown strategies and
// bad parameters are errors so a bad KV value is reported, not guessed.
func New(name string, params json.RawMessage, cands []Candidate) (Picker, error) {
	norm, err := model.NormalizeStrategy(name, params)
	if err != nil {
		return nil, fmt.Errorf("strategy %q: %w", name, err)
	}
	if len(cands) == 0 {
		return none{}, nil
	}
	switch name {
	case model.StrategyRoundRobin:
		shares := make([]int, len(cands))
		for i, c := range cands {
			shares[i] = max(c.Shares, 1)
		}
		return NewRoundRobin(shares), nil
	case model.StrategyWeighted:
		w := make([]float64, len(cands))
		for i, c := range cands {
			w[i] = c.Weight
		}
		return NewWeighted(w), nil
	default: // least_latency; NormalizeStrategy rejected anything else
		var p model.LeastLatencyParams
		if err := json.Unmarshal(norm, &p); err != nil {
			return nil, fmt.Errorf("least_latency parameters: %w", err)
		}
		lat := make([]*Latency, len(cands))
		for i, c := range cands {
			lat[i] = c.Latency
			if lat[i] == nil {
				lat[i] = new(Latency)
			}
		}
		return NewLeastLatency(lat, p.ExplorationOrDefault()), nil
	}
}

// none is the Picker of an empty snapshot.
type none struct{}

// Pick implements Picker.
func (none) Pick() int { return -1 }
