package embeddednats

import (
	"testing"
)

// StartForTest starts a server on a random loopback port with its store in
// t.TempDir() and shuts it down when the test ends.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// RestartForTest stops s and starts a new server on the same port and store,
// as a NATS restart would; the new server is shut down when the test ends.
func RestartForTest(t testing.TB, s *Server) *Server {
	t.Helper()
	o := s.opts
	o.Listen = s.ns.Addr().String()
	s.Shutdown()
	ns, err := Start(o)
	if err != nil {
		t.Fatalf("restart embedded NATS: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	return ns
}
