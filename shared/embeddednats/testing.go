package embeddednats

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// JetStreamForTest is StartForTest plus a connection and its JetStream
// context, closed when the test ends.
func JetStreamForTest(t testing.TB) (*Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := StartForTest(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect to embedded NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return s, nc, js
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

// StartClusterForTest starts n clustered JetStream servers on random
// loopback ports (stores in t.TempDir()) and waits until they have a
// JetStream leader; they are shut down when the test ends. Tests of node
// loss stop one with Shutdown.
func StartClusterForTest(t testing.TB, n int) []*Server {
	t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	servers := make([]*Server, n)
	for i := range servers {
		opts := &server.Options{
			ServerName: fmt.Sprintf("node-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("cluster node %d: %v", i, err)
		}
		go ns.Start()
		s := &Server{ns: ns, opts: Options{StoreDir: opts.StoreDir, ServerName: opts.ServerName}}
		servers[i] = s
		t.Cleanup(s.Shutdown)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range servers {
		if !s.ns.ReadyForConnections(time.Until(deadline)) {
			t.Fatalf("cluster node %s not ready", s.ns.Name())
		}
	}
	for time.Now().Before(deadline) {
		for _, s := range servers {
			if s.ns.JetStreamIsLeader() && len(s.ns.JetStreamClusterPeers()) == n {
				return servers
			}
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	t.Fatal("cluster: no JetStream leader within 30s")
	return nil
}
