// Command healthchecker runs the health checker service.
package main

import (
	"context"
	"log/slog"

	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	cfg := healthchecker.DefaultConfig()
	lifecycle.Main("healthchecker", &cfg, func(ctx context.Context, log *slog.Logger) error {
		svc, err := lifecycle.Start(ctx, "healthchecker", cfg.URL, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		hc, err := healthchecker.New(ctx, svc.NC, cfg, log, svc.Reg)
		if err != nil {
			return err
		}
		return svc.Run(ctx, hc)
	})
}
