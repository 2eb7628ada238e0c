package strategy

import (
	"math"
	"sync/atomic"
)

// MaxSequence bounds the precomputed smooth weighted round-robin cycle. Weights
// whose reduced integer sum exceeds it are scaled down proportionally (every
// positive weight keeps at least one slot), so proportions are then exact only
// to about 1/MaxSequence.
const MaxSequence = 1 << 16

// Weighted is smooth weighted round robin (the nginx algorithm): over every
// window of sum(weights) picks each candidate gets exactly its weight, spread
// evenly; weight 0 is never picked. The cycle is computed once when the
// snapshot is built, so a pick is one atomic add and an index.
type Weighted struct {
	seq []int32
	ctr atomic.Uint64
}

// NewWeighted builds the policy from the candidates' weights (0..1000,
// fractions allowed).
func NewWeighted(weights []float64) *Weighted {
	return &Weighted{seq: smoothSequence(integerWeights(weights))}
}

// Pick implements Picker.
func (w *Weighted) Pick() int {
	if len(w.seq) == 0 {
		return -1
	}
	i := w.ctr.Add(1) - 1
	return int(w.seq[i%uint64(len(w.seq))])
}

// integerWeights turns weights into the smallest integers with the same
// proportions (decimal fractions up to three places are exact).
func integerWeights(weights []float64) []int64 {
	out := make([]int64, len(weights))
	scale := 1.0
	for _, s := range []float64{1, 10, 100, 1000} {
		scale = s
		exact := true
		for _, w := range weights {
			v := w * s
			if math.Abs(v-math.Round(v)) > 1e-6 {
				exact = false
				break
			}
		}
		if exact {
			break
		}
	}
	var g int64
	for i, w := range weights {
		if w > 0 && !math.IsInf(w, 0) {
			out[i] = max(int64(math.Round(w*scale)), 1)
			g = gcd(g, out[i])
		}
	}
	if g > 1 {
		for i := range out {
			out[i] /= g
		}
	}
	var sum int64
	for _, v := range out {
		sum += v
	}
	if sum > MaxSequence {
		f := float64(MaxSequence) / float64(sum)
		for i, v := range out {
			if v > 0 {
				out[i] = max(int64(math.Round(float64(v)*f)), 1)
			}
		}
	}
	return out
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothSequence runs nginx's smooth weighted round robin for one full cycle
// of sum(w) picks: add each weight to its current value, pick the largest
// (first on ties), subtract the total from it.
func smoothSequence(w []int64) []int32 {
	var total int64
	for _, v := range w {
		total += v
	}
	if total == 0 {
		return nil
	}
	cur := make([]int64, len(w))
	seq := make([]int32, 0, total)
	for range total {
		best := -1
		for i, v := range w {
			if v == 0 {
				continue
			}
			cur[i] += v
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq = append(seq, int32(best))
	}
	return seq
}
