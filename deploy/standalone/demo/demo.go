// Package demo is a tiny region server for trying the load balancer without
// real regions: it answers its health path, echoes every request with its
// region name, and lets its health and latency be changed at run time so that
// failover can be shown by hand.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Region is one demo region server.
type Region struct {
	name    string
	latency atomic.Int64 // nanoseconds added to every answer
	healthy atomic.Bool
	srv     *http.Server
	ln      net.Listener
}

// Defaults are the demo regions standalone starts when no REGIONAL_ENDPOINTS
// are given, on loopback ports base, base+1 and base+2 (9001-9003 by
// default): fixed, so a registry kept from an earlier run still points at
// them, and with different latencies so least_latency has a choice.
var Defaults = []struct {
	Name    string
	Offset  int
	Latency time.Duration
}{
	{"us-east", 0, 5 * time.Millisecond},
	{"eu-west", 1, 25 * time.Millisecond},
	{"ap-south", 2, 60 * time.Millisecond},
}

// Listen binds addr and returns a region ready to Run.
func Listen(name, addr string, latency time.Duration) (*Region, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo region %s: %w", name, err)
	}
	r := &Region{name: name, ln: ln}
	r.latency.Store(int64(latency))
	r.healthy.Store(true)
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	return r, nil
}

// URL is the region's endpoint.
func (r *Region) URL() string { return "http://" + r.ln.Addr().String() }

// Name is the region's name.
func (r *Region) Name() string { return r.name }

// Run serves until ctx ends.
func (r *Region) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- r.srv.Serve(r.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.srv.Shutdown(sctx)
		// After Shutdown, Serve returns http.ErrServerClosed.
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// ServeHTTP answers:
//   - GET /health: 200 when healthy, 503 when made sick;
//   - POST /_demo/health?healthy=false|true: change health;
//   - POST /_demo/latency?ms=N: change latency;
//   - anything else: a JSON echo of the request with the region's name.
func (r *Region) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/_demo/health":
		if req.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		v, err := strconv.ParseBool(req.URL.Query().Get("healthy"))
		if err != nil {
			http.Error(w, "healthy=true|false", http.StatusBadRequest)
			return
		}
		r.healthy.Store(v)
		r.writeState(w)
		return
	case "/_demo/latency":
		if req.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		ms, err := strconv.Atoi(req.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > 60000 {
			http.Error(w, "ms=0..60000", http.StatusBadRequest)
			return
		}
		r.latency.Store(int64(time.Duration(ms) * time.Millisecond))
		r.writeState(w)
		return
	case "/_demo/state":
		r.writeState(w)
		return
	}
	if d := time.Duration(r.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return
		}
	}
	if req.URL.Path == "/health" || req.URL.Path == "/healthz" {
		if !r.healthy.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"region": r.name, "status": "unhealthy"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"region": r.name, "status": "ok"})
		return
	}
	n, _ := io.Copy(io.Discard, req.Body)
	w.Header().Set("X-Demo-Region", r.name)
	writeJSON(w, http.StatusOK, map[string]any{
		"region":     r.name,
		"method":     req.Method,
		"path":       req.URL.Path,
		"query":      req.URL.RawQuery,
		"host":       req.Host,
		"body_bytes": n,
		"forwarded":  req.Header.Get("X-Forwarded-For"),
	})
}

func (r *Region) writeState(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]any{
		"region":     r.name,
		"healthy":    r.healthy.Load(),
		"latency_ms": time.Duration(r.latency.Load()).Milliseconds(),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
