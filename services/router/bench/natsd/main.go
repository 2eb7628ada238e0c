// Command natsd is the bench's NATS: an embedded JetStream server seeded with
// the bench regions (round_robin), running until interrupted.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/model"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4333", "client address")
	dir := flag.String("dir", os.TempDir(), "JetStream store")
	regions := flag.String("regions", "", "name=url,name=url")
	flag.Parse()
	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: *dir, Listen: *listen})
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
		log.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, bus.BucketRegions)
	for _, item := range strings.Split(*regions, ",") {
		name, url, _ := strings.Cut(item, "=")
		data, _ := json.Marshal(model.Region{Region: name, Endpoint: url, Weight: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()})
		if _, err := kv.Put(ctx, name, data); err != nil {
			log.Fatal(err)
		}
	}
	cfg, _ := js.KeyValue(ctx, bus.BucketConfig)
	data, _ := json.Marshal(model.StrategyConfig{Strategy: model.StrategyRoundRobin, Parameters: json.RawMessage(`{}`), UpdatedAt: time.Now()})
	if _, err := cfg.Put(ctx, bus.KeyStrategy, data); err != nil {
		log.Fatal(err)
	}
	log.Printf("nats ready on %s", ns.ClientURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
