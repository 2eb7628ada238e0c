// Command configmgr owns the region registry and the strategy.
package main

import (
	"context"
	"log/slog"

	"github.com/mrlb/mrlb/services/configmgr"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	cfg := configmgr.DefaultConfig()
	lifecycle.Main("configmgr", &cfg, func(ctx context.Context, log *slog.Logger) error {
		app, err := lifecycle.Start(ctx, "configmgr", cfg.URL, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		svc, err := configmgr.New(ctx, app.NC, cfg, log, app.Reg)
		if err != nil {
			return err
		}
		return app.Run(ctx, svc)
	})
}
