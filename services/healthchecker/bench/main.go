// Command bench is the health checker's scale benchmark: one replica checks
// many regions (one HTTP server answering for every region on its own
// path) through a real embedded NATS, and reports checks per second
// achieved against scheduled, lateness of checks against their slots, and
// the CPU time and peak RSS of the health checker alone.
//
// The health checker runs in a child process (this binary re-executed with
// -child) so that its CPU and memory are measured apart from the NATS
// server and the HTTP server, which stay in the parent.
//
//	go run ./bench -regions 1000 -interval 1s -duration 30s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/services/healthchecker"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/logging"
	"github.com/mrlb/mrlb/shared/model"
)

var (
	regions  = flag.Int("regions", 1000, "number of regions")
	interval = flag.Duration("interval", time.Second, "HEALTH_CHECK_INTERVAL")
	duration = flag.Duration("duration", 30*time.Second, "measurement window")
	warmup   = flag.Duration("warmup", 3*time.Second, "time before the window (start-up, first checks)")
	child    = flag.Bool("child", false, "internal: run the health checker and report")
	natsURL  = flag.String("nats", "", "internal: NATS URL for the child")
	cpuProf  = flag.String("cpuprofile", "", "write the child's CPU profile of the window here")
)

// childReport is what the child prints on stdout.
type childReport struct {
	Checks      int     `json:"checks"`
	WindowS     float64 `json:"window_s"`
	LateP50MS   float64 `json:"late_p50_ms"`
	LateP99MS   float64 `json:"late_p99_ms"`
	LateMaxMS   float64 `json:"late_max_ms"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUUser     float64 `json:"cpu_user_seconds"`
	CPUSys      float64 `json:"cpu_sys_seconds"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	Goroutines  int     `json:"goroutines"`
	HeapInUseMB float64 `json:"heap_inuse_mib"`
}

func main() {
	flag.Parse()
	if *child {
		if err := runChild(); err != nil {
			log.Fatalf("child: %v", err)
		}
		return
	}
	if err := runParent(); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func runParent() error {
	dir, err := os.MkdirTemp("", "hc-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Printf("bench: remove %s: %v", dir, err)
		}
	}()
	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: dir})
	if err != nil {
		return err
	}
	defer ns.Shutdown()

	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.EnsureInfra(ctx, js, bus.DefaultInfra()); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, bus.BucketRegions)
	if err != nil {
		return err
	}
	for i := range *regions {
		name := fmt.Sprintf("r%04d", i)
		doc, _ := json.Marshal(model.Region{Region: name, Endpoint: srv.URL + "/" + name, Weight: 1, CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()})
		if _, err := kv.Put(ctx, name, doc); err != nil {
			return err
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	var parentStart syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &parentStart)
	cmd := exec.Command(self, "-child", "-nats", ns.ClientURL(),
		"-regions", fmt.Sprint(*regions), "-interval", interval.String(),
		"-duration", duration.String(), "-warmup", warmup.String(), "-cpuprofile", *cpuProf)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	fmt.Printf("health checker scale run: %d regions, interval %s, window %s (after %s warm-up), GOMAXPROCS of child = default\n",
		*regions, *interval, *duration, *warmup)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("child: %w", err)
	}
	var parentEnd syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &parentEnd)
	var rep childReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return fmt.Errorf("child report %q: %w", out.String(), err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)

	info, err := js.Stream(ctx, bus.StreamHealth)
	if err != nil {
		return err
	}
	st := info.CachedInfo().State

	scheduled := float64(*regions) / interval.Seconds()
	achieved := float64(rep.Checks) / rep.WindowS
	cpuShare := rep.CPUSeconds / rep.WindowS * 100
	fmt.Printf("checks/s:           %.1f achieved vs %.1f scheduled (%.1f%%)\n", achieved, scheduled, achieved/scheduled*100)
	fmt.Printf("lateness vs slot:   p50 %.2f ms, p99 %.2f ms, max %.2f ms   (goal p99 < 100 ms)\n", rep.LateP50MS, rep.LateP99MS, rep.LateMaxMS)
	fmt.Printf("CPU (checker):      %.2f s in %.0f s window = %.1f%% of one core   (goal < 20%%)\n", rep.CPUSeconds, rep.WindowS, cpuShare)
	fmt.Printf("                    user %.2f s, system %.2f s (system time includes the kernel's loopback TCP work for both ends)\n", rep.CPUUser, rep.CPUSys)
	fmt.Printf("peak RSS (checker): %.1f MiB (kernel maxrss %.1f MiB)   (goal < 100 MiB)\n", rep.PeakRSSMiB, float64(ru.Maxrss)/1024)
	fmt.Printf("checker at end:     %d goroutines, %.1f MiB heap in use\n", rep.Goroutines, rep.HeapInUseMB)
	fmt.Printf("CPU (NATS + HTTP server, parent, whole run): %.2f s\n", cpuSeconds(parentEnd)-cpuSeconds(parentStart))
	fmt.Printf("HTTP probes served: %d; LB_HEALTH holds %d results\n", hits.Load(), st.Msgs)
	return nil
}

func runChild() error {
	nc, err := nats.Connect(*natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := healthchecker.DefaultConfig()
	cfg.URL = *natsURL
	cfg.MetricsAddr = "off"
	cfg.Interval = config.Duration(*interval)
	cfg.Timeout = config.Duration(min(*interval, 5*time.Second))
	cfg.MemberID = "bench"

	var (
		mu        sync.Mutex
		recording bool
		late      []time.Duration
	)
	observe := func(d time.Duration) {
		mu.Lock()
		if recording {
			late = append(late, d)
		}
		mu.Unlock()
	}
	svc, err := healthchecker.New(context.Background(), nc, cfg, logging.NewTo(io.Discard, "healthchecker", 0),
		prometheus.NewRegistry(), healthchecker.WithLatenessObserver(observe))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	time.Sleep(*warmup)
	var start, end syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &start)
	var prof *os.File
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return err
		}
		prof = f
	}
	mu.Lock()
	recording = true
	t0 := time.Now()
	mu.Unlock()
	time.Sleep(*duration)
	pprof.StopCPUProfile()
	if prof != nil {
		if err := prof.Close(); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
	}
	mu.Lock()
	recording = false
	window := time.Since(t0)
	mu.Unlock()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &end)

	var ms runtimeStats
	ms.read()
	cancel()
	if err := <-done; err != nil {
		return err
	}
	var final syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &final)

	slices.Sort(late)
	rep := childReport{
		Checks:      len(late),
		WindowS:     window.Seconds(),
		LateP50MS:   pct(late, 0.50),
		LateP99MS:   pct(late, 0.99),
		LateMaxMS:   pct(late, 1),
		CPUSeconds:  cpuSeconds(end) - cpuSeconds(start),
		CPUUser:     tv(end.Utime) - tv(start.Utime),
		CPUSys:      tv(end.Stime) - tv(start.Stime),
		PeakRSSMiB:  float64(final.Maxrss) / 1024,
		Goroutines:  ms.goroutines,
		HeapInUseMB: ms.heapInUse,
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}

func tv(t syscall.Timeval) float64 { return time.Duration(syscall.TimevalToNsec(t)).Seconds() }

func cpuSeconds(ru syscall.Rusage) float64 {
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)).Seconds()
}
