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
// (EAGAIN) on nearly every request.
//
// The reset also forgets an end-of-file that arrived while the connection
// was idle in the pool, and a region that half-closed (shutdown, still
// reading) would then never wake the wait. So with probe set (a connection
// idle for a while) the socket is first peeked without blocking: an
// end-of-file or unexpected bytes there return errPeerClosed with nothing
// written.
//
// It returns how much of b was written; a short count with a nil error
// means the socket buffer was full and the caller writes the rest itself.
func sendAwait(rc syscall.RawConn, b []byte, probe bool) (int, error) {
	s := sendPool.Get().(*sendState)
	s.b, s.n, s.err, s.sent, s.probe = b, 0, nil, false, probe
	err := rc.Read(s.fn)
	n, werr, sent := s.n, s.err, s.sent
	s.b = nil
	sendPool.Put(s)
	switch {
	case errors.Is(werr, syscall.EAGAIN):
		return n, nil
	case werr != nil:
		return n, werr
	case err != nil && !sent:
		return 0, errors.Join(errNotSent, err)
	}
	return n, err
}

// errPeerClosed is a pooled connection the region closed (or wrote to)
// while it was idle; nothing was sent on it.
var errPeerClosed = errors.New("region closed the idle connection")

// sendState is one sendAwait in progress; fn is bound once, when the state
// is made, so that a request allocates nothing.
type sendState struct {
	b     []byte
	n     int
	err   error
	sent  bool
	probe bool
	peek  [1]byte
	fn    func(fd uintptr) bool
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
	if s.probe {
		_, _, e := syscall.Recvfrom(int(fd), s.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if e == nil || (!errors.Is(e, syscall.EAGAIN) && !errors.Is(e, syscall.EINTR)) {
			// End-of-file, bytes nobody asked for, or a reset.
			s.err = errPeerClosed
			return true
		}
	}
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
