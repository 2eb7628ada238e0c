package apigw

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxClients bounds the limiter's memory under a flood of distinct clients.
const maxClients = 100_000

// limiter is a token bucket per client. An entry idle for longer than it
// takes to refill its bucket is indistinguishable from a new one, so it is
// evicted; sweeps run lazily on the request path, so no goroutine is needed.
type limiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration

	mu        sync.Mutex
	clients   map[string]*client
	lastSweep time.Time
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(perSec float64, burst int) *limiter {
	refill := time.Duration(float64(burst) / perSec * float64(time.Second))
	return &limiter{
		limit:   rate.Limit(perSec),
		burst:   burst,
		idle:    max(refill, time.Minute),
		clients: make(map[string]*client),
	}
}

// allow takes a token for id at now; when none is left it returns how long
// until one is.
func (l *limiter) allow(id string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle {
		l.sweep(now)
	}
	c, found := l.clients[id]
	if !found {
		if len(l.clients) >= maxClients {
			l.sweep(now)
			for k := range l.clients { // still full: drop an arbitrary entry
				if len(l.clients) < maxClients {
					break
				}
				delete(l.clients, k)
			}
		}
		c = &client{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[id] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *limiter) sweep(now time.Time) {
	for k, c := range l.clients {
		if now.Sub(c.seen) >= l.idle {
			delete(l.clients, k)
		}
	}
	l.lastSweep = now
}

// size is the number of tracked clients (for tests and metrics).
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// retryAfterSeconds rounds up, and is at least 1, as Retry-After counts
// whole seconds and 0 would invite an immediate retry.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
