// Command natssub prints every message on a NATS subject, one line each:
// a tiny stand-in for `nats sub` that ships in the images, so the compose
// tour can watch events without installing anything:
//
//	docker-compose run --rm natssub            # lb.events.> on the cluster
//	natssub -s nats://127.0.0.1:4222 'lb.health.results.>'
//
// The server list comes from -s, else NATS_URL, else nats://127.0.0.1:4222;
// the subject from the argument (default lb.events.>).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = nats.DefaultURL
	}
	servers := flag.String("s", def, "comma-separated NATS server URLs")
	flag.Parse()
	subject := "lb.events.>"
	if flag.NArg() > 0 {
		subject = flag.Arg(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	nc, err := nats.Connect(*servers,
		nats.Name("natssub"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500*time.Millisecond),
		nats.ConnectHandler(func(c *nats.Conn) {
			fmt.Fprintf(os.Stderr, "natssub: connected to %s, subscribed to %s\n", c.ConnectedUrlRedacted(), subject)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, "natssub: disconnected:", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			fmt.Fprintln(os.Stderr, "natssub: reconnected to", c.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natssub:", err)
		os.Exit(1)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		fmt.Printf("[%s] %s %s\n", time.Now().Format("15:04:05.000"), m.Subject, m.Data)
	}); err != nil {
		fmt.Fprintln(os.Stderr, "natssub:", err)
		os.Exit(1)
	}
	<-ctx.Done()
}
