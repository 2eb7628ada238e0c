//go:build unix

package proxy

import (
	"errors"
	"syscall"
)

// sendAwait writes b on the socket behind rc and then waits until the
// socket is readable. The readiness state is reset before the write (RawConn
// Read does that first), so a response that arrives at once cannot be
// missed, and the response is then read once, when it is there: the usual
// write-then-read costs one more read syscall that finds nothing
// (EAGAIN) on nearly every request. It returns how much of b was written; a
// short count with a nil error means the socket buffer was full and the
// caller writes the rest itself.
func sendAwait(rc syscall.RawConn, b []byte) (int, error) {
	n := 0
	var werr error
	sent := false
	err := rc.Read(func(fd uintptr) bool {
		if sent {
			return true
		}
		sent = true
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == nil:
			case errors.Is(e, syscall.EINTR):
			default:
				werr = e
				return true
			}
		}
		return false
	})
	switch {
	case errors.Is(werr, syscall.EAGAIN):
		return n, nil
	case werr != nil:
		return n, werr
	}
	return n, err
}
