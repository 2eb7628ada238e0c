//go:build !race

package proxy

// raceEnabled: sync.Pool drops items at random under the race detector.
const raceEnabled = false
