package apigw

import (
	"io"
	"net"
	"sync"
	"time"
)

// Lingering close bounds: how long and how much a closing connection keeps
// reading what the client is still sending.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 4 << 20
)

// lingerListener makes every close a lingering close, as net/http does.
// fasthttp answers a body over the limit with 413 and closes at once; with
// the client's body still unread the kernel would reset the connection and
// the client would see "connection reset" instead of our 413. Sending FIN
// first and discarding the rest for a short while lets the answer arrive.
type lingerListener struct {
	net.Listener
}

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &lingerConn{TCPConn: tc}, nil
	}
	return c, nil
}

type lingerConn struct {
	*net.TCPConn
	once sync.Once
	err  error
}

func (c *lingerConn) Close() error {
	c.once.Do(func() {
		if c.TCPConn.CloseWrite() == nil {
			_ = c.TCPConn.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.TCPConn, lingerMax)
		}
		c.err = c.TCPConn.Close()
	})
	return c.err
}
