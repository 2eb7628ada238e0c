// Command healthprobe GETs one URL and exits 0 when the answer is 2xx, 1
// otherwise. The service images are FROM scratch (no shell, no curl), so
// compose.yaml uses it as the container healthcheck:
//
//	healthcheck:
//	  test: ["CMD", "/healthprobe", "http://127.0.0.1:9094/healthz"]
//
// -timeout bounds the whole request (default 2s).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 2*time.Second, "bound of the whole request")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: healthprobe [-timeout 2s] URL")
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := probe(flag.Arg(0), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "healthprobe:", err)
		os.Exit(1)
	}
}

func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
