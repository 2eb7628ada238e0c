//go:build !linux

package proxy

import (
	"context"
	"crypto/tls"
	"net"
)

// evEngine is the Linux event loop; elsewhere every connection takes the
// fasthttp path.
type evEngine struct{ srvDone chan struct{} }

func (p *Proxy) startEventLoop(net.Listener) (*evEngine, bool, error) { return nil, false, nil }

func (e *evEngine) accept() error { return nil }

func (e *evEngine) stop(context.Context) {}

func (p *Proxy) adoptTLS(net.Conn, *tls.Conn, *tlsWire) bool { return false }
