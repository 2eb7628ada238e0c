package proxy

import (
	"io"
	"net"
	"time"
)

// errWouldBlock is tlsWire's "no ciphertext yet": temporary, so crypto/tls
// keeps what it has and returns it.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no data yet" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// tlsWire is a tls.Conn's transport: the dialled connection during the
// handshake, the loop's buffers after it.
type tlsWire struct {
	net.Conn // closed once the loop has the socket; kept for its addresses
	loop     bool
	in       []byte // ciphertext read from the socket: in[r:w] is unread
	r, w     int
	eof      bool
	out      []byte // ciphertext for the socket
	// pending is ciphertext the loop had not written when it handed the
	// connection off; it goes before the next write.
	pending []byte
}

func (t *tlsWire) Read(b []byte) (int, error) {
	if !t.loop && t.r == t.w {
		return t.Conn.Read(b) // (ciphertext the loop read first, when it handed a client off)
	}
	if t.r == t.w {
		if t.eof {
			return 0, io.EOF
		}
		return 0, errWouldBlock
	}
	n := copy(b, t.in[t.r:t.w])
	t.r += n
	if t.r == t.w {
		t.r, t.w = 0, 0
	}
	return n, nil
}

func (t *tlsWire) Write(b []byte) (int, error) {
	if !t.loop {
		if len(t.pending) > 0 {
			if _, err := t.Conn.Write(t.pending); err != nil {
				return 0, err
			}
			t.pending = nil
		}
		return t.Conn.Write(b)
	}
	t.out = append(t.out, b...)
	return len(b), nil
}

func (t *tlsWire) Close() error {
	if !t.loop {
		return t.Conn.Close()
	}
	return nil // the loop closes the socket
}

func (t *tlsWire) SetDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetDeadline(d)
	}
	return nil // the loop's own deadlines apply
}

func (t *tlsWire) SetReadDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetReadDeadline(d)
	}
	return nil
}

func (t *tlsWire) SetWriteDeadline(d time.Time) error {
	if !t.loop {
		return t.Conn.SetWriteDeadline(d)
	}
	return nil
}
