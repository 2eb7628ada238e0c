//go:build linux

package proxy

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mrlb/mrlb/shared/poll"
)

func TestResolverNeverBlocksAndPrefersIPv4(t *testing.T) {
	r := newResolver()
	defer r.stop()
	release := make(chan struct{})
	var calls atomic.Int32
	r.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		calls.Add(1)
		<-release
		if host != "region.example" {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.7")}, nil
	}
	if sa := r.sockaddr("192.0.2.1:80"); sa == nil {
		t.Fatal("an IP address needs no lookup")
	}
	if sa := r.sockaddr("region.example:8080"); sa != nil {
		t.Fatalf("answered %v before the lookup finished", sa)
	}
	if sa := r.sockaddr("region.example:8080"); sa != nil || calls.Load() > 1 {
		t.Fatalf("second ask: %v, %d lookups", sa, calls.Load())
	}
	close(release)
	var got unix.Sockaddr
	poll.True(t, 5*time.Second, "the name resolved", func() bool {
		got = r.sockaddr("region.example:8080")
		return got != nil
	})
	if a, ok := got.(*unix.SockaddrInet4); !ok || a.Port != 8080 || a.Addr != [4]byte{192, 0, 2, 7} {
		t.Fatalf("address %#v", got)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d lookups for one name within its TTL", calls.Load())
	}
	if sa := r.sockaddr("unknown.example:80"); sa != nil {
		t.Fatalf("unknown name answered %v", sa)
	}
}
