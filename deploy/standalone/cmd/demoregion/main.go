// Command demoregion is one demo region server for trying the load balancer
// in containers (compose.yaml) or by hand: it answers /health, echoes every
// other request as JSON with its region name, and lets its health and
// latency be changed while it runs:
//
//	curl -X POST 'http://HOST:PORT/_demo/health?healthy=false'
//	curl -X POST 'http://HOST:PORT/_demo/latency?ms=200'
//	curl 'http://HOST:PORT/_demo/state'
//
// Environment: DEMO_REGION (name, default "demo"), DEMO_ADDR (listen
// address, default ":9000"), DEMO_LATENCY (added latency, a Go duration or a
// number of milliseconds, default 0). Flags -region, -addr and -latency
// override them.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mrlb/mrlb/deploy/standalone/demo"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "demoregion")
	name := flag.String("region", envOr("DEMO_REGION", "demo"), "region name")
	addr := flag.String("addr", envOr("DEMO_ADDR", ":9000"), "listen address")
	lat := flag.String("latency", envOr("DEMO_LATENCY", "0"), "added latency (Go duration or milliseconds)")
	flag.Parse()
	latency, err := parseLatency(*lat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demoregion: DEMO_LATENCY: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r, err := demo.Listen(*name, *addr, latency)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demoregion: %v\n", err)
		os.Exit(1)
	}
	log.Info("demo region listening", "region", r.Name(), "url", r.URL(), "latency", latency.String())
	if err := r.Run(ctx); err != nil {
		log.Error("demo region failed", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func parseLatency(s string) (time.Duration, error) {
	if ms, err := strconv.Atoi(s); err == nil {
		if ms < 0 {
			return 0, fmt.Errorf("%q is negative", s)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: use a Go duration (25ms) or a number of milliseconds", s)
	}
	return d, nil
}
