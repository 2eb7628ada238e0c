// Package embeddednats runs a NATS server with JetStream inside the process:
// the standalone binary uses it as its message bus and tests use it as a real
// server instead of a mock.
package embeddednats

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure the embedded server.
type Options struct {
	// StoreDir is the JetStream file store; it must survive restarts for
	// state to survive.
	StoreDir string
	// Listen is host:port for clients; empty means 127.0.0.1 on a random port.
	Listen string
	// ServerName names the server (shown in monitoring); default "lb-embedded".
	ServerName string
	// Logs sends the server's own log to stderr.
	Logs bool
	// InProcessOnly opens no TCP listener at all: clients connect with
	// ConnectOption, so nothing outside the process can reach the server.
	InProcessOnly bool
}

// Server is a running embedded server.
type Server struct {
	ns   *server.Server
	opts Options
}

// Start starts the server and waits until it accepts clients.
func Start(o Options) (*Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embeddednats: StoreDir is required")
	}
	host, port := "127.0.0.1", -1
	if o.Listen != "" {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embeddednats: listen %q: %w", o.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("embeddednats: listen %q: bad port", o.Listen)
		}
		host = h
		if host == "" {
			host = "0.0.0.0"
		}
		if port == 0 {
			// nats-server reads port 0 as its default 4222; -1 is "random".
			port = -1
		} else {
			// nats-server does not report a busy port: it would only fail
			// ReadyForConnections after 15s. Find out now.
			ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
			if err != nil {
				return nil, fmt.Errorf("embeddednats: listen %q: %w", o.Listen, err)
			}
			_ = ln.Close()
		}
	}
	name := o.ServerName
	if name == "" {
		name = "lb-embedded"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		DontListen: o.InProcessOnly,
		NoLog:      !o.Logs,
		MaxPayload: 8 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embeddednats: %w", err)
	}
	if o.Logs {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embeddednats: server not ready within 15s")
	}
	return &Server{ns: ns, opts: o}, nil
}

// ConnectOption makes a nats.go client connect to this server in process,
// which is the only way when InProcessOnly is set.
func (s *Server) ConnectOption() nats.Option { return nats.InProcessServer(s.ns) }

// InProcessOnly reports whether the server has no TCP listener.
func (s *Server) InProcessOnly() bool { return s.opts.InProcessOnly }

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it is down.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// NATS gives tests access to the underlying server.
func (s *Server) NATS() *server.Server { return s.ns }
