package strategy_test

import (
	"fmt"
	"testing"

	"github.com/mrlb/mrlb/services/router/strategy"
)

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 1000} {
		shares := make([]int, n)
		weights := make([]float64, n)
		lat := make([]*strategy.Latency, n)
		for i := range n {
			shares[i] = 1
			weights[i] = float64(1 + i%10)
			lat[i] = new(strategy.Latency)
			lat[i].ObserveMS(float64(10 + i%50))
		}
		for _, p := range []struct {
			name string
			p    strategy.Picker
		}{
			{"round_robin", strategy.NewRoundRobin(shares)},
			{"weighted", strategy.NewWeighted(weights)},
			{"least_latency", strategy.NewLeastLatency(lat, 0.05)},
		} {
			b.Run(fmt.Sprintf("%s/regions=%d", p.name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if p.p.Pick() < 0 {
							b.Fatal("no pick")
						}
					}
				})
			})
		}
	}
}
