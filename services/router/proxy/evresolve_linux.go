//go:build linux

package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Regions named by DNS (compose service names, say) are resolved off the
// loops: a loop never blocks on a lookup. Until a name has an address the
// connections that need it go to the fasthttp path; after that the address
// is refreshed in the background every evResolveTTL (a failed refresh keeps
// the last address).
const (
	evResolveTTL   = 30 * time.Second
	evResolveRetry = 5 * time.Second
)

type evResolver struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	names  map[string]*evName
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

type evName struct {
	sa        unix.Sockaddr // nil until resolved
	next      time.Time     // when to refresh
	resolving bool
}

func newResolver() *evResolver {
	ctx, cancel := context.WithCancel(context.Background())
	return &evResolver{ctx: ctx, cancel: cancel, names: map[string]*evName{}, lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}}
}

// sockaddr returns the address to dial for hostport ("host:port"), or nil
// while it is being resolved (or cannot be).
func (r *evResolver) sockaddr(hostport string) unix.Sockaddr {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return toSockaddr(ap)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.names[hostport]
	if n == nil {
		n = &evName{}
		r.names[hostport] = n
	}
	if !n.resolving && !time.Now().Before(n.next) && r.ctx.Err() == nil {
		n.resolving = true
		r.wg.Add(1)
		go r.resolve(hostport, n)
	}
	return n.sa
}

func (r *evResolver) resolve(hostport string, n *evName) {
	defer r.wg.Done()
	var sa unix.Sockaddr
	host, port, err := net.SplitHostPort(hostport)
	if err == nil {
		var p uint64
		p, err = parsePort(port)
		if err == nil {
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			var addrs []netip.Addr
			addrs, err = r.lookup(ctx, host)
			cancel()
			if err == nil && len(addrs) > 0 {
				a := addrs[0]
				for _, x := range addrs { // IPv4 first, as Go's dialer
					if x.Unmap().Is4() {
						a = x
						break
					}
				}
				sa = toSockaddr(netip.AddrPortFrom(a, uint16(p)))
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n.resolving = false
	if sa != nil {
		n.sa = sa
		n.next = time.Now().Add(evResolveTTL)
	} else {
		n.next = time.Now().Add(evResolveRetry)
	}
}

func parsePort(s string) (uint64, error) {
	ap, err := netip.ParseAddrPort("0.0.0.0:" + s)
	if err != nil {
		return 0, err // only tells whether it parsed
	}
	return uint64(ap.Port()), nil
}

// failed notes a failed dial to hostport: a name is looked up again at the
// next dial (its address may have moved, a restarted container say).
func (r *evResolver) failed(hostport string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.names[hostport]; n != nil && n.sa != nil {
		n.next = time.Time{}
	}
}

// stop cancels the lookups in progress and waits for them.
func (r *evResolver) stop() {
	r.cancel()
	r.wg.Wait()
}

func toSockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr().Unmap(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
