// Command apigw serves the load balancer's REST API (/api/v1/lb/*).
package main

import (
	"context"
	"log/slog"

	"github.com/mrlb/mrlb/services/apigw"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	cfg := apigw.DefaultConfig()
	lifecycle.Main("apigw", &cfg, func(ctx context.Context, log *slog.Logger) error {
		svc, err := lifecycle.Start(ctx, "apigw", cfg.URL, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		api, err := apigw.New(ctx, svc.NC, cfg, log, svc.Reg)
		if err != nil {
			return err
		}
		return svc.Run(ctx, api)
	})
}
