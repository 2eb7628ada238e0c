//go:build unix

package proxy

import (
	"errors"
	"sync"
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
	s := sendPool.Get().(*sendState)
	s.b, s.n, s.err, s.sent = b, 0, nil, false
	err := rc.Read(s.fn)
	n, werr := s.n, s.err
	s.b = nil
	sendPool.Put(s)
	switch {
	case errors.Is(werr, syscall.EAGAIN):
		return n, nil
	case werr != nil:
		return n, werr
	}
	return n, err
}

// sendState is one sendAwait in progress; fn is bound once, when the state
// is made, so that a request allocates nothing.
type sendState struct {
	b    []byte
	n    int
	err  error
	sent bool
	fn   func(fd uintptr) bool
}

var sendPool = sync.Pool{New: func() any {
	s := &sendState{}
	s.fn = s.step
	return s
}}

// step is called by RawConn.Read: first to write (false: now wait until
// readable), then once readable (true: done).
func (s *sendState) step(fd uintptr) bool {
	if s.sent {
		return true
	}
	s.sent = true
	for s.n < len(s.b) {
		m, e := syscall.Write(int(fd), s.b[s.n:])
		if m > 0 {
			s.n += m
		}
		switch {
		case e == nil:
		case errors.Is(e, syscall.EINTR):
		default:
			s.err = e
			return true
		}
	}
	return false
}
