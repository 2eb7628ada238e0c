// Package poll lets tests wait for what they can observe, with a deadline,
// instead of sleeping for a guessed time.
package poll

import (
	"testing"
	"time"
)

// Interval is how often a condition is re-checked.
const Interval = 10 * time.Millisecond

// Until calls fn until it returns nil, failing the test with fn's last error
// when timeout passes. It returns how long the condition took.
func Until(t testing.TB, timeout time.Duration, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(Interval)
	}
}

// True is Until for a condition without an explanation.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Until(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

type notYet struct{}

func (notYet) Error() string { return "condition still false" }

var errNotYet error = notYet{}
