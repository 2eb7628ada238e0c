// Package probe runs one active health check: GET <endpoint><path> within a
// timeout, healthy when the status is in the region's expected range (2xx by
// default). It knows nothing about state or NATS.
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

// Outcomes of a check, the "result" label of the checks metric.
const (
	OutcomeOK        = "ok"
	OutcomeBadStatus = "bad_status"
	OutcomeTimeout   = "timeout"
	OutcomeError     = "error"
)

// maxBody bounds how much of a health response is read, so that the
// connection can be reused without trusting the region's body size.
const maxBody = 64 << 10

// Prober checks regions over one shared transport, so connections to a
// region are kept alive between checks (as Envoy does) instead of paying a
// TCP and TLS handshake every interval.
type Prober struct {
	client      *http.Client
	transport   *http.Transport
	defaultPath string
	timeout     time.Duration
}

// New returns a prober. tlsCfg verifies regions (see regiontls.Build); nil
// means Go's defaults. idle is how long an unused connection is kept; it
// should exceed the check interval so that connections survive between
// checks.
func New(tlsCfg *tls.Config, defaultPath string, timeout, idle time.Duration) *Prober {
	tr := &http.Transport{
		Proxy: nil, // checks go straight to the region, never through HTTP_PROXY
		DialContext: (&net.Dialer{
			Timeout:   timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   timeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // no global cap: one idle connection per region is the point
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       idle,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
	}
	return &Prober{
		transport: tr,
		client: &http.Client{
			Transport: tr,
			// A redirect is an answer: it counts against expected_status
			// instead of being followed to some other host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		defaultPath: defaultPath,
		timeout:     timeout,
	}
}

// Close drops idle connections.
func (p *Prober) Close() { p.transport.CloseIdleConnections() }

// URL is what a check of r requests: the endpoint (whose path is a prefix)
// followed by the region's health path or the default one.
func URL(r model.Region, defaultPath string) string {
	path := r.HealthPath
	if path == "" {
		path = defaultPath
	}
	return strings.TrimRight(r.Endpoint, "/") + path
}

// Healthy reports whether status is a good answer for r.
func Healthy(r model.Region, status int) bool {
	if rng := r.ExpectedStatus; rng != nil {
		return status >= rng.Min && status <= rng.Max
	}
	return status >= 200 && status <= 299
}

// Check runs one check now. It never returns an error: failures are
// results. Latency is the time to the response headers.
func (p *Prober) Check(ctx context.Context, r model.Region) model.CheckResult {
	res := model.CheckResult{Region: r.Region, CheckedAt: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, URL(r, p.defaultPath), nil)
	if err != nil {
		res.Error = fmt.Sprintf("bad health URL: %v", err)
		return res
	}
	req.Header.Set("User-Agent", "mrlb-healthchecker/1")
	req.Header.Set("Accept", "*/*")
	start := time.Now()
	resp, err := p.client.Do(req)
	elapsed := time.Since(start)
	if err != nil {
		res.Error = p.describe(ctx, err)
		return res
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	res.StatusCode = resp.StatusCode
	res.LatencyMS = float64(elapsed.Microseconds()) / 1000
	res.Healthy = Healthy(r, resp.StatusCode)
	if !res.Healthy {
		res.Error = fmt.Sprintf("unexpected status %d", resp.StatusCode)
	}
	return res
}

func (p *Prober) describe(ctx context.Context, err error) string {
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout after %s", p.timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err // drop the "Get <url>:" prefix, the region is known
	}
	return err.Error()
}

// Outcome classifies a result for metrics.
func Outcome(r model.CheckResult) string {
	switch {
	case r.Healthy:
		return OutcomeOK
	case r.StatusCode > 0:
		return OutcomeBadStatus
	case strings.HasPrefix(r.Error, "timeout"):
		return OutcomeTimeout
	default:
		return OutcomeError
	}
}
