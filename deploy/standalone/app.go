package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/deploy/standalone/demo"
	"github.com/mrlb/mrlb/services/apigw"
	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/lifecycle"
	"github.com/mrlb/mrlb/shared/ops"
)

// app is what run starts and later stops.
type app struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	natsURL string
	// natsOpts connect to the embedded server in process when it has no
	// TCP listener (NATS_LISTEN unset).
	natsOpts []nats.Option
	conns    []*nats.Conn
	runners  []lifecycle.Runner
	lines    []string // what the banner prints
	apiURL   string
	// readyChecks are services' own readiness conditions (the router's table).
	readyChecks []ops.ReadyFunc
}

// run starts everything, serves until ctx ends, and shuts down in order:
// services first (in-flight requests finish), then their NATS connections
// drain, then the embedded server stops.
func run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	a := &app{cfg: cfg, log: log, reg: ops.NewRegistry(), natsURL: cfg.NATS.URL}
	if a.natsURL == "" {
		ns, err := startEmbedded(cfg.Standalone, log)
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		a.natsURL = ns.ClientURL()
		if ns.InProcessOnly() {
			a.natsURL = "in-process"
			a.natsOpts = append(a.natsOpts, ns.ConnectOption())
		}
	}
	if strings.TrimSpace(cfg.RegionalEndpoints) == "" {
		if err := a.startDemoRegions(); err != nil {
			return err
		}
	}
	err := a.startServices(ctx)
	defer a.drain()
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" && cfg.MetricsAddr != "off" {
		srv, err := ops.Listen(cfg.MetricsAddr, a.reg, a.ready, log)
		if err != nil {
			return err
		}
		a.runners = append(a.runners, srv)
		a.lines = append(a.lines, fmt.Sprintf("metrics   http://%s/metrics  (also /healthz, /readyz)", displayAddr(srv.Addr())))
	}
	a.printBanner(out)
	return lifecycle.Group(ctx, a.runners...)
}

func startEmbedded(c config.Standalone, log *slog.Logger) (*embeddednats.Server, error) {
	dir := c.DataDir
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, &config.VarError{Var: "STANDALONE_DATA_DIR", Err: fmt.Errorf("no default (user cache dir unknown: %w); set it", err)}
		}
		dir = filepath.Join(cache, "mrlb", "standalone")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, &config.VarError{Var: "STANDALONE_DATA_DIR", Err: err}
	}
	// Without NATS_LISTEN the server opens no port at all: only this
	// process reaches it, so API_KEYS cannot be bypassed through NATS.
	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: dir, Listen: c.NATSListen, ServerName: "lb-standalone", InProcessOnly: c.NATSListen == ""})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if ns.InProcessOnly() {
		log.Info("embedded NATS started in process (set NATS_LISTEN to expose it)", "store", dir)
	} else {
		log.Info("embedded NATS started", "url", ns.ClientURL(), "store", dir)
	}
	return ns, nil
}

func (a *app) startDemoRegions() error {
	var eps []string
	for _, d := range demo.Defaults {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.cfg.DemoPort+d.Offset))
		r, err := demo.Listen(d.Name, addr, d.Latency)
		if err != nil {
			return fmt.Errorf("demo regions need ports %d-%d (set STANDALONE_DEMO_PORT or REGIONAL_ENDPOINTS): %w", a.cfg.DemoPort, a.cfg.DemoPort+2, err)
		}
		a.runners = append(a.runners, r)
		eps = append(eps, d.Name+":"+r.URL())
		a.lines = append(a.lines, fmt.Sprintf("demo      %-8s %s  (latency %s)", d.Name, r.URL(), d.Latency))
	}
	a.cfg.RegionalEndpoints = strings.Join(eps, ",")
	return nil
}

// connect opens one NATS connection per service, as separate processes would.
func (a *app) connect(ctx context.Context, name string) (*nats.Conn, error) {
	url := a.natsURL
	if len(a.natsOpts) > 0 {
		url = "" // the in-process option takes the place of a server URL
	}
	nc, err := bus.Connect(ctx, "standalone-"+name, url, a.log.With("component", name), a.natsOpts...)
	if err != nil {
		return nil, err
	}
	a.conns = append(a.conns, nc)
	return nc, nil
}

func (a *app) startServices(ctx context.Context) error {
	c := a.cfg
	for _, sc := range []*config.NATS{&c.ConfigMgr.NATS, &c.Health.NATS, &c.Failover.NATS, &c.Router.NATS, &c.API.NATS} {
		sc.URL = a.natsURL
	}
	c.ConfigMgr.Seed = c.Seed
	steps := []struct {
		name  string
		build func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error)
	}{
		{"configmgr", func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error) {
			return configmgr.New(ctx, nc, c.ConfigMgr, log, a.reg)
		}},
		{"healthchecker", func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error) {
			return healthchecker.New(ctx, nc, c.Health, log, a.reg)
		}},
		{"failover", func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error) {
			return failover.New(ctx, nc, c.Failover, log, a.reg)
		}},
		{"router", func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error) {
			r, err := router.New(ctx, nc, c.Router, log, a.reg)
			if err == nil {
				a.readyChecks = append(a.readyChecks, r.Ready)
				a.lines = append(a.lines, fmt.Sprintf("router    http://%s/  (send your traffic here)", displayAddr(r.Addr())))
				if addr := r.TLSAddr(); addr != "" {
					a.lines = append(a.lines, fmt.Sprintf("router    https://%s/  (HTTPS; HTTP/2 by ALPN)", displayAddr(addr)))
				}
			}
			return r, err
		}},
		{"apigw", func(nc *nats.Conn, log *slog.Logger) (lifecycle.Runner, error) {
			g, err := apigw.New(ctx, nc, c.API, log, a.reg)
			if err == nil {
				a.apiURL = g.URL()
				a.lines = append(a.lines, fmt.Sprintf("api       %s/api/v1/lb/status", g.URL()))
			}
			return g, err
		}},
	}
	for _, st := range steps {
		nc, err := a.connect(ctx, st.name)
		if err != nil {
			return err
		}
		r, err := st.build(nc, a.log.With("component", st.name))
		if err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
		a.runners = append(a.runners, r)
	}
	return nil
}

func (a *app) ready(ctx context.Context) error {
	for _, nc := range a.conns {
		if !nc.IsConnected() {
			return errors.New("nats not connected")
		}
	}
	for _, fn := range a.readyChecks {
		if err := fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), lifecycle.DrainTimeout)
	defer cancel()
	for _, nc := range a.conns {
		bus.Drain(ctx, nc)
	}
}

func (a *app) printBanner(out io.Writer) {
	var b strings.Builder
	b.WriteString("\nmulti-region load balancer (standalone) is up\n\n")
	for _, l := range a.lines {
		b.WriteString("  " + l + "\n")
	}
	if a.natsURL == "in-process" {
		fmt.Fprintf(&b, "  nats      in process only (set NATS_LISTEN=127.0.0.1:4222 to subscribe to events)\n")
	} else {
		fmt.Fprintf(&b, "  nats      %s\n", a.natsURL)
	}
	if a.apiURL != "" {
		b.WriteString("\ntry:\n")
		auth := ""
		if len(a.cfg.API.Keys) > 0 {
			auth = ` -H "Authorization: Bearer $API_KEY"`
		}
		fmt.Fprintf(&b, "  curl -s%s %s/api/v1/lb/regions\n", auth, a.apiURL)
		for _, l := range a.lines {
			if strings.HasPrefix(l, "router") {
				if u := strings.Fields(l)[1]; strings.HasPrefix(u, "https:") {
					fmt.Fprintf(&b, "  curl -si --cacert <your certificate> %s\n", u)
				} else {
					fmt.Fprintf(&b, "  curl -si %s\n", u)
				}
			}
		}
	}
	b.WriteString("\nstarted at " + time.Now().Format(time.RFC3339) + "\n")
	_, _ = io.WriteString(out, b.String())
}

// displayAddr turns ":8080" into "127.0.0.1:8080" for copy-paste.
func displayAddr(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "127.0.0.1" + addr
	}
	if strings.HasPrefix(addr, "[::]:") {
		return "127.0.0.1:" + strings.TrimPrefix(addr, "[::]:")
	}
	if strings.HasPrefix(addr, "0.0.0.0:") {
		return "127.0.0.1:" + strings.TrimPrefix(addr, "0.0.0.0:")
	}
	return addr
}
