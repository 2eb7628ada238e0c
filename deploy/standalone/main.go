// Command standalone runs the whole load balancer in one process: an
// embedded NATS server with JetStream on disk, every service through the
// same constructor its own binary uses, and demo regions when none are
// configured.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/lifecycle"
)

func main() {
	cfg := DefaultConfig()
	for _, s := range cfg.services() {
		config.MustLoad(s)
	}
	lifecycle.Main("standalone", &cfg, func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, cfg, log, os.Stdout)
	})
}
