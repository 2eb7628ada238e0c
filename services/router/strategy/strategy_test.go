package strategy_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/mrlb/mrlb/services/router/strategy"
)

func seq(p strategy.Picker, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = p.Pick()
	}
	return out
}

func TestRoundRobinSequences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		shares []int
		want   []int
	}{
		{"equal shares in order", []int{1, 1, 1}, []int{0, 1, 2, 0, 1, 2}},
		{"single region", []int{1}, []int{0, 0, 0}},
		{"a failed-over share goes to its target", []int{1, 2}, []int{1, 0, 1, 1, 0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got := seq(strategy.NewRoundRobin(tc.shares), len(tc.want))
			if !equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWeightedSmoothSequences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		weights []float64
		want    []int
	}{
		{"nginx 5:1:1", []float64{5, 1, 1}, []int{0, 0, 1, 0, 2, 0, 0}},
		{"2:1", []float64{2, 1}, []int{0, 1, 0}},
		{"weight 0 never picked", []float64{0, 1, 1}, []int{1, 2, 1, 2}},
		{"fractions", []float64{0.5, 1.5}, []int{1, 0, 1, 1}},
		{"all zero picks nothing", []float64{0, 0}, []int{-1, -1}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got := seq(strategy.NewWeighted(tc.weights), len(tc.want))
			if !equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWeightedExactOverEveryWindow(t *testing.T) {
	t.Parallel()
	weights := []float64{3, 0, 7, 1, 4}
	const sum = 15
	got := seq(strategy.NewWeighted(weights), sum*20)
	for start := 0; start+sum <= len(got); start++ {
		counts := make([]int, len(weights))
		for _, i := range got[start : start+sum] {
			counts[i]++
		}
		for i, w := range weights {
			if counts[i] != int(w) {
				t.Fatalf("window at %d: region %d got %d picks, want %v (%v)", start, i, counts[i], w, counts)
			}
		}
	}
}

func TestLeastLatencyPrefersFastest(t *testing.T) {
	t.Parallel()
	lat := []*strategy.Latency{new(strategy.Latency), new(strategy.Latency), new(strategy.Latency)}
	lat[0].ObserveMS(50)
	lat[1].ObserveMS(5)
	lat[2].ObserveMS(80)
	p := strategy.NewLeastLatency(lat, 0)
	for i := range 1000 {
		if got := p.Pick(); got != 1 {
			t.Fatalf("pick %d = %d, want the fastest (1)", i, got)
		}
	}
}

func TestLeastLatencyExplorationShare(t *testing.T) {
	t.Parallel()
	lat := []*strategy.Latency{new(strategy.Latency), new(strategy.Latency), new(strategy.Latency), new(strategy.Latency)}
	for i, ms := range []float64{5, 50, 60, 70} {
		lat[i].ObserveMS(ms)
	}
	const n = 200000
	for _, explore := range []float64{0.05, 0.2} {
		p := strategy.NewLeastLatency(lat, explore)
		counts := make([]int, len(lat))
		for range n {
			counts[p.Pick()]++
		}
		// Exploration is spread over all candidates, so each slow one gets
		// explore/4 of the picks.
		for i := 1; i < len(lat); i++ {
			share := float64(counts[i]) / n
			if want := explore / 4; share < want*0.8 || share > want*1.2 {
				t.Fatalf("exploration %v: region %d share %.4f, want about %.4f (%v)", explore, i, share, want, counts)
			}
		}
	}
}

func TestLeastLatencyTiesSpreadEvenly(t *testing.T) {
	t.Parallel()
	lat := []*strategy.Latency{new(strategy.Latency), new(strategy.Latency), new(strategy.Latency)}
	lat[0].ObserveMS(10)
	lat[1].ObserveMS(10.2) // within the tie tolerance
	lat[2].ObserveMS(40)
	p := strategy.NewLeastLatency(lat, 0)
	counts := make([]int, 3)
	const n = 60000
	for range n {
		counts[p.Pick()]++
	}
	if counts[2] != 0 || counts[0] < n/2*9/10 || counts[1] < n/2*9/10 {
		t.Fatalf("ties not spread evenly: %v", counts)
	}
}

func TestLatencyEstimateDecays(t *testing.T) {
	t.Parallel()
	var l strategy.Latency
	if l.MS() != 0 {
		t.Fatal("new estimate should be unknown (0)")
	}
	l.ObserveMS(100)
	for range 50 {
		l.ObserveMS(10)
	}
	if got := l.MS(); got < 9.9 || got > 11 {
		t.Fatalf("estimate %v did not converge to 10", got)
	}
}

func TestNewValidatesParameters(t *testing.T) {
	t.Parallel()
	cands := []strategy.Candidate{{Shares: 1, Weight: 1}, {Shares: 1, Weight: 2}}
	tests := []struct {
		desc   string
		name   string
		params string
		ok     bool
	}{
		{"round robin", "round_robin", `{}`, true},
		{"weighted", "weighted", ``, true},
		{"least latency default", "least_latency", `{}`, true},
		{"least latency exploration", "least_latency", `{"exploration":0.1}`, true},
		{"exploration too big", "least_latency", `{"exploration":0.9}`, false},
		{"unknown parameter", "round_robin", `{"x":1}`, false},
		{"unknown strategy", "random", `{}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := strategy.New(tc.name, json.RawMessage(tc.params), cands)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestConcurrentPicks(t *testing.T) {
	t.Parallel()
	lat := []*strategy.Latency{new(strategy.Latency), new(strategy.Latency), new(strategy.Latency)}
	pickers := []strategy.Picker{
		strategy.NewRoundRobin([]int{1, 1, 1}),
		strategy.NewWeighted([]float64{1, 2, 3}),
		strategy.NewLeastLatency(lat, 0.05),
	}
	for _, p := range pickers {
		var wg sync.WaitGroup
		counts := make([][3]int, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 6000 {
					counts[g][p.Pick()]++
					lat[i%3].ObserveMS(float64(i % 7))
				}
			})
		}
		wg.Wait()
		var total [3]int
		for _, c := range counts {
			for i := range c {
				total[i] += c[i]
			}
		}
		if total[0]+total[1]+total[2] != 48000 {
			t.Fatalf("lost picks: %v", total)
		}
		if _, ok := p.(*strategy.RoundRobin); ok && (total[0] != 16000 || total[1] != 16000) {
			t.Fatalf("round robin under concurrency not exact: %v", total)
		}
		if _, ok := p.(*strategy.Weighted); ok && (total[0] != 8000 || total[1] != 16000 || total[2] != 24000) {
			t.Fatalf("weighted under concurrency not exact: %v", total)
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLeastLatencyRankingFollowsEstimates(t *testing.T) {
	t.Parallel()
	lat := []*strategy.Latency{new(strategy.Latency), new(strategy.Latency), new(strategy.Latency)}
	lat[0].ObserveMS(5)
	lat[1].ObserveMS(50)
	p := strategy.NewLeastLatency(lat, 0)
	// Region 2 has no estimate yet, so it ranks first; once its first
	// estimate arrives the next pick ranks again instead of flooding it
	// until the refresh.
	if got := p.Pick(); got != 2 {
		t.Fatalf("unmeasured region not preferred: got %d", got)
	}
	lat[2].ObserveMS(80)
	p.Pick() // sees the estimate and ranks again
	if got := p.Pick(); got != 0 {
		t.Fatalf("after the first estimate: got %d, want 0", got)
	}
	// Region 0 becomes the slowest: within RankRefresh the picks follow.
	for range 40 {
		lat[0].ObserveMS(500)
	}
	deadline := time.Now().Add(20 * strategy.RankRefresh)
	for p.Pick() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("ranking did not follow the changed estimates")
		}
		time.Sleep(time.Millisecond)
	}
}
