// Command failover decides where a sick region's traffic goes and when it
// comes back: automatic and manual failover, failback, leader election.
package main

import (
	"context"
	"log/slog"

	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	cfg := failover.DefaultConfig()
	lifecycle.Main("failover", &cfg, func(ctx context.Context, log *slog.Logger) error {
		app, err := lifecycle.Start(ctx, "failover", cfg.URL, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		svc, err := failover.New(ctx, app.NC, cfg, log, app.Reg)
		if err != nil {
			return err
		}
		return app.Run(ctx, svc)
	})
}
