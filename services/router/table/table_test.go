package table_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mrlb/mrlb/services/router/table"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
)

func newTable(t testing.TB, n int, strategyName string) *table.Table {
	t.Helper()
	tb := table.New(table.Options{NewUpstream: func(name, ep string) (*table.Upstream, error) { return table.ParseEndpoint(name, ep) }})
	st := table.NewState()
	for i := range n {
		name := fmt.Sprintf("r%04d", i)
		st.Regions[name] = model.Region{Region: name, Endpoint: fmt.Sprintf("http://127.0.0.1:%d/p", 10000+i), Weight: float64(1 + i%3)}
	}
	st.Strategy = &model.StrategyConfig{Strategy: strategyName, Parameters: json.RawMessage(`{}`)}
	tb.Replace(st)
	return tb
}

func TestFailoverAndRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc         string
		health       map[string]string
		failover     map[string]string
		strategyName string
		want         map[string]int // picks per region over 12 picks
		panic        bool
	}{
		{"all in rotation", nil, nil, model.StrategyRoundRobin, map[string]int{"r0000": 4, "r0001": 4, "r0002": 4}, false},
		{"unhealthy out, share spread", map[string]string{"r0001": model.StatusUnhealthy}, nil, model.StrategyRoundRobin, map[string]int{"r0000": 6, "r0002": 6}, false},
		{"failed over share to target", nil, map[string]string{"r0000": "r0002"}, model.StrategyRoundRobin, map[string]int{"r0001": 4, "r0002": 8}, false},
		{"failed over without target spread", nil, map[string]string{"r0000": ""}, model.StrategyRoundRobin, map[string]int{"r0001": 6, "r0002": 6}, false},
		{"weighted target gets the weight", nil, map[string]string{"r0000": "r0001"}, model.StrategyWeighted, map[string]int{"r0001": 6, "r0002": 6}, false},
		{"none in rotation: panic routing", map[string]string{"r0000": model.StatusUnhealthy, "r0001": model.StatusUnhealthy, "r0002": model.StatusUnhealthy}, nil, model.StrategyWeighted, map[string]int{"r0000": 4, "r0001": 4, "r0002": 4}, true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tb := newTable(t, 3, tc.strategyName)
			for k, v := range tc.health {
				data, _ := json.Marshal(model.Health{Region: k, Status: v})
				tb.Put(bus.BucketHealth, k, data)
			}
			for k, v := range tc.failover {
				data, _ := json.Marshal(model.Failover{FromRegion: k, ToRegion: v, Reason: model.ReasonManual})
				tb.Put(bus.BucketFailover, k, data)
			}
			s := tb.Snapshot()
			if s.Panic != tc.panic {
				t.Fatalf("panic = %v", s.Panic)
			}
			got := map[string]int{}
			for range 12 {
				got[s.Pick().Name]++
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("picks %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPicksWhileSnapshotsSwap(t *testing.T) {
	t.Parallel()
	tb := newTable(t, 5, model.StrategyRoundRobin)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var picks atomic.Int64
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				if u := tb.Snapshot().Pick(); u == nil {
					t.Error("no pick while regions exist")
					return
				}
				picks.Add(1)
			}
		})
	}
	strats := []string{model.StrategyRoundRobin, model.StrategyWeighted, model.StrategyLeastLatency}
	for i := range 300 {
		data, _ := json.Marshal(model.StrategyConfig{Strategy: strats[i%3]})
		tb.Put(bus.BucketConfig, bus.KeyStrategy, data)
		h, _ := json.Marshal(model.Health{Region: "r0001", Status: []string{model.StatusHealthy, model.StatusUnhealthy}[i%2]})
		tb.Put(bus.BucketHealth, "r0001", h)
	}
	stop.Store(true)
	wg.Wait()
	if picks.Load() == 0 {
		t.Fatal("no picks")
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	t.Parallel()
	tb := newTable(t, 3, model.StrategyWeighted)
	path := t.TempDir() + "/s.json"
	if err := table.SaveState(path, tb.State()); err != nil {
		t.Fatal(err)
	}
	st, err := table.LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	tb2 := table.New(table.Options{NewUpstream: func(name, ep string) (*table.Upstream, error) { return table.ParseEndpoint(name, ep) }})
	tb2.Replace(st)
	if s := tb2.Snapshot(); len(s.Candidates) != 3 || s.Strategy != model.StrategyWeighted {
		t.Fatalf("restored snapshot: %d candidates, %s", len(s.Candidates), s.Strategy)
	}
	if _, err := table.LoadState(t.TempDir() + "/none.json"); err != table.ErrNoState {
		t.Fatalf("missing file: %v", err)
	}
}

func BenchmarkSnapshotPick(b *testing.B) {
	for _, n := range []int{3, 1000} {
		for _, strategyName := range []string{model.StrategyRoundRobin, model.StrategyWeighted, model.StrategyLeastLatency} {
			tb := newTable(b, n, strategyName)
			b.Run(fmt.Sprintf("%s/regions=%d", strategyName, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if tb.Snapshot().Pick() == nil {
						b.Fatal("nil")
					}
				}
			})
		}
	}
}
