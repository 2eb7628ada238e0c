// Command router is the data plane: it proxies HTTP traffic to regions.
package main

import (
	"context"
	"log/slog"

	"github.com/mrlb/mrlb/services/router"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
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
		svc.AddReady(r.Ready)
		return svc.Run(ctx, r)
	})
}
