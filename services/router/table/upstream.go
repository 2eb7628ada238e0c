package table

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/services/router/metrics"
	"github.com/mrlb/mrlb/services/router/strategy"
)

// Upstream is one region as this router sees it: where to send requests, its
// connection pool, and the live counters that outlast snapshot swaps. A
// region whose endpoint changes gets a new Upstream.
type Upstream struct {
	Name     string
	Endpoint string
	// TLS is true for https endpoints; the pool's dialer does the handshake
	// with SNI = Host.
	TLS bool
	// TLSConfig is the client configuration of an https region's
	// connections, shared by every path that dials it (nil for http).
	TLSConfig *tls.Config
	// Addr is the host:port dialled.
	Addr string
	// Host is the endpoint's host (and port when given), sent as the Host
	// header and used as the TLS server name.
	Host string
	// PathPrefix is the endpoint's path without a trailing slash; it goes in
	// front of every proxied path.
	PathPrefix string
	// Client is the region's keep-alive pool; the proxy owns how it is used.
	Client *fasthttp.HostClient
	// Latency is the estimate least_latency reads.
	Latency strategy.Latency
	// Metrics are the region's Prometheus handles.
	Metrics *metrics.Region

	failures atomic.Int32
	ejected  atomic.Bool
	requests atomic.Uint64
	errors   atomic.Uint64
}

// ParseEndpoint splits an endpoint URL into what an Upstream needs.
func ParseEndpoint(name, endpoint string) (*Upstream, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("region %s endpoint %q: %w", name, endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("region %s endpoint %q: not an absolute http(s) URL", name, endpoint)
	}
	up := &Upstream{Name: name, Endpoint: endpoint, TLS: u.Scheme == "https", Host: u.Host}
	port := u.Port()
	if port == "" {
		port = "80"
		if up.TLS {
			port = "443"
		}
	}
	up.Addr = net.JoinHostPort(u.Hostname(), port)
	up.PathPrefix = strings.TrimRight(u.EscapedPath(), "/")
	return up, nil
}

// Ejected reports whether this router has ejected the region.
func (u *Upstream) Ejected() bool { return u.ejected.Load() }

// Success resets the consecutive failure count (only written when non-zero,
// to keep the cache line shared on the common path).
func (u *Upstream) Success() {
	u.requests.Add(1)
	if u.failures.Load() != 0 {
		u.failures.Store(0)
	}
}

// Failure counts a failed answer and returns the consecutive count.
func (u *Upstream) Failure() int {
	u.requests.Add(1)
	u.errors.Add(1)
	return int(u.failures.Add(1))
}

// Counts returns the total requests and errors seen, for presence rates.
func (u *Upstream) Counts() (requests, errors uint64) {
	return u.requests.Load(), u.errors.Load()
}

// ejection is the control-plane record of an ejected region.
type ejection struct {
	since time.Time
	until time.Time
}
