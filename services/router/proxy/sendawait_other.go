//go:build !unix

package proxy

import (
	"errors"
	"syscall"
)

// errPeerClosed: see the unix sendAwait.
var errPeerClosed = errors.New("region closed the idle connection")

// sendAwait is the unix fast path's stand-in: it writes nothing, so the
// caller writes and reads the usual way.
func sendAwait(syscall.RawConn, []byte, bool) (int, error) { return 0, nil }
