// Command prof is a temporary profiling build of the router (pprof on :6060).
package main

import (
	"context"
	"log/slog"
	"net/http"
	_ "net/http/pprof"

	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	go func() { _ = http.ListenAndServe("127.0.0.1:6060", nil) }()
	cfg := router.DefaultConfig()
	lifecycle.Main("router", &cfg, func(ctx context.Context, log *slog.Logger) error {
		svc, err := lifecycle.Start(ctx, "router", cfg.URL, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		r, err := router.New(ctx, svc.NC, cfg, log, svc.Reg)
		if err != nil {
			return err
		}
		return svc.Run(ctx, r)
	})
}
