//go:build !unix

package proxy

import "syscall"

// sendAwait is the unix fast path's stand-in: it writes nothing, so the
// caller writes and reads the usual way.
func sendAwait(syscall.RawConn, []byte) (int, error) { return 0, nil }
