package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/config"

	"github.com/mrlb/mrlb/shared/poll"
	"github.com/mrlb/mrlb/shared/testpki"
)

func week() time.Time { return time.Now().Add(7 * 24 * time.Hour).Truncate(time.Second) }

func write(t *testing.T, path string, data ...[]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(data, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replace writes path atomically, as deploy tools do.
func replace(t *testing.T, path string, data ...[]byte) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, data...)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func serialFor(t *testing.T, s *Store, sni string) int64 {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil || c == nil {
		t.Fatalf("GetCertificate(%q) = %v, %v", sni, c, err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func pairFiles(t *testing.T, certPEM, keyPEM []byte) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write(t, cf, certPEM)
	write(t, kf, keyPEM)
	return cf, kf
}

func TestSinglePair(t *testing.T) {
	ca := testpki.NewCA(t)
	notAfter := week()
	c, k := ca.Leaf(t, 7, notAfter, "single.example.com", "127.0.0.1")
	cf, kf := pairFiles(t, c, k)
	var loaded [][]Info
	s, err := Load(Options{CertFile: cf, KeyFile: kf, OnLoaded: func(i []Info) { loaded = append(loaded, i) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"", "single.example.com", "other.test"} {
		if got := serialFor(t, s, sni); got != 7 {
			t.Errorf("SNI %q: serial %d, want 7", sni, got)
		}
	}
	if c, err := s.GetCertificate(nil); err != nil || c == nil {
		t.Errorf("GetCertificate(nil) = %v, %v", c, err)
	}
	infos := s.Certificates()
	if len(infos) != 1 || len(loaded) != 1 {
		t.Fatalf("Certificates() = %+v, OnLoaded calls %d", infos, len(loaded))
	}
	i := infos[0]
	if strings.Join(i.Names, ",") != "single.example.com,127.0.0.1" || i.Issuer != "mrlb test CA" ||
		!i.NotAfter.Equal(notAfter) || i.Source != "file" {
		t.Errorf("info = %+v", i)
	}
}

func TestExpiredStillLoaded(t *testing.T) {
	ca := testpki.NewCA(t)
	c, k := ca.Leaf(t, 1, time.Now().Add(-time.Hour), "old.example.com")
	cf, kf := pairFiles(t, c, k)
	var buf bytes.Buffer
	s, err := Load(Options{CertFile: cf, KeyFile: kf, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if serialFor(t, s, "old.example.com") != 1 || !strings.Contains(buf.String(), "level=WARN") {
		t.Errorf("expired certificate not served with a warning; log:\n%s", buf.String())
	}
}

func TestDirSelection(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	c, k := ca.Leaf(t, 1, week(), "a.example.com")
	write(t, filepath.Join(dir, "a.example.com.crt"), c)
	write(t, filepath.Join(dir, "a.example.com.key"), k)
	c, k = ca.Leaf(t, 2, week(), "*.example.org")
	write(t, filepath.Join(dir, "wild.pem"), c, k)
	c, k = ca.Leaf(t, 3, week(), "default.example.net")
	write(t, filepath.Join(dir, "default.pem"), k, c) // key first works too
	write(t, filepath.Join(dir, "README.txt"), []byte("ignored"))
	s, err := Load(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]int64{
		"a.example.com":   1,
		"A.Example.COM.":  1,
		"x.example.org":   2,
		"X.EXAMPLE.ORG.":  2,
		"a.b.example.org": 3,
		"example.org":     3,
		"unknown.test":    3,
		"":                3,
		"b.a.example.com": 3,
	} {
		if got := serialFor(t, s, sni); got != want {
			t.Errorf("SNI %q: serial %d, want %d", sni, got, want)
		}
	}
	infos := s.Certificates()
	if len(infos) != 3 || infos[0].Names[0] != "*.example.org" || infos[2].Names[0] != "default.example.net" {
		t.Errorf("Certificates() = %+v, want 3 sorted by first name", infos)
	}
}

func TestStartupErrorsNameTheVariable(t *testing.T) {
	ca := testpki.NewCA(t)
	c, k := ca.Leaf(t, 1, week(), "a.example.com")
	_, other := ca.Leaf(t, 2, week(), "a.example.com")
	cf, kf := pairFiles(t, c, k)
	_, badKey := pairFiles(t, c, other)
	garbage, _ := pairFiles(t, []byte("-----BEGIN CERTIFICATE-----\nnope\n"), nil)
	lonely := t.TempDir()
	write(t, filepath.Join(lonely, "default.pem"), c, k)
	write(t, filepath.Join(lonely, "a.crt"), c)
	for _, tc := range []struct {
		name   string
		o      Options
		prefix string
	}{
		{"missing key file", Options{CertFile: cf, KeyFile: kf + ".missing"}, envKey + ":"},
		{"key not matching", Options{CertFile: cf, KeyFile: badKey}, envCert + ":"},
		{"garbage PEM", Options{CertFile: garbage, KeyFile: kf}, envCert + ":"},
		{"crt without key", Options{Dir: lonely}, envDir + ":"},
		{"missing dir", Options{Dir: filepath.Join(lonely, "nope")}, envDir + ":"},
		{"empty dir", Options{Dir: t.TempDir()}, envDir + ":"},
		{"cert without key var", Options{CertFile: cf}, envKey + ":"},
		{"key without cert var", Options{KeyFile: kf}, envCert + ":"},
		{"nothing set", Options{}, envCert + ":"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Load(tc.o)
			if err == nil || s != nil {
				t.Fatalf("Load = %v, %v; want an error", s, err)
			}
			var ve *config.VarError
			if !errors.As(err, &ve) || ve.Var+":" != tc.prefix {
				t.Errorf("error %q does not name %q (config.VarError, exit 2 at start-up)", err, tc.prefix)
			}
		})
	}
	if _, err := Load(Options{CertFile: cf, KeyFile: kf + ".missing"}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v does not wrap fs.ErrNotExist", err)
	}
}

func TestReload(t *testing.T) {
	ca := testpki.NewCA(t)
	c, k := ca.Leaf(t, 1, week(), "a.example.com")
	cf, kf := pairFiles(t, c, k)
	var failed atomic.Int32
	s, err := Load(Options{CertFile: cf, KeyFile: kf, OnReloadFailed: func(error) { failed.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	c, k = ca.Leaf(t, 2, week(), "a.example.com")
	replace(t, cf, c)
	replace(t, kf, k)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serialFor(t, s, "a.example.com"); got != 2 {
		t.Fatalf("after reload: serial %d, want 2", got)
	}
	replace(t, cf, []byte("broken"))
	err = s.Reload()
	if err == nil || !strings.HasPrefix(err.Error(), "invalid "+envCert+":") {
		t.Errorf("Reload of a broken file = %v", err)
	}
	if got := serialFor(t, s, "a.example.com"); got != 2 || failed.Load() != 1 {
		t.Errorf("after failed reload: serial %d (want 2), OnReloadFailed calls %d (want 1)", got, failed.Load())
	}
}

func TestWatch(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "default.pem")
	c1, k1 := ca.Leaf(t, 1, week(), "default.example.com")
	write(t, path, c1, k1)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Watch(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	// Rewrite in place with a same-sized file and set the mtime back: only the
	// content hash tells the change.
	var c2, k2 []byte
	for range 100 {
		if c2, k2 = ca.Leaf(t, 2, week(), "default.example.com"); len(c2)+len(k2) == len(c1)+len(k1) {
			break
		}
	}
	if len(c2)+len(k2) != len(c1)+len(k1) {
		t.Fatal("no same-sized certificate generated")
	}
	s.mu.Lock() // so that Watch sees only the final state
	write(t, path, c2, k2)
	err = os.Chtimes(path, st.ModTime(), st.ModTime())
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "rewrite served", func() bool { return serialFor(t, s, "default.example.com") == 2 })

	c3, k3 := ca.Leaf(t, 3, week(), "new.example.net")
	replace(t, filepath.Join(dir, "new.pem"), c3, k3)
	poll.True(t, 5*time.Second, "new file served", func() bool { return serialFor(t, s, "new.example.net") == 3 })

	cancel()
	poll.True(t, 5*time.Second, "Watch returned", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}

func TestConcurrentReload(t *testing.T) {
	ca := testpki.NewCA(t)
	c, k := ca.Leaf(t, 1, week(), "a.example.com")
	cf, kf := pairFiles(t, c, k)
	s, err := Load(Options{CertFile: cf, KeyFile: kf})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com"}); c == nil || err != nil {
					t.Errorf("GetCertificate = %v, %v", c, err)
					return
				}
				_ = s.Certificates()
			}
		})
	}
	for i := range 50 {
		c, k := ca.Leaf(t, int64(i+2), week(), "a.example.com")
		replace(t, cf, c)
		replace(t, kf, k)
		if err := s.Reload(); err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if got := serialFor(t, s, "a.example.com"); got != 51 {
		t.Errorf("serial %d, want 51", got)
	}
}

func TestHandshake(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	c, k := ca.Leaf(t, 1, week(), "a.example.com")
	write(t, filepath.Join(dir, "a.example.com.crt"), c)
	write(t, filepath.Join(dir, "a.example.com.key"), k)
	c2, k2 := ca.Leaf(t, 2, week(), "default.example.com")
	write(t, filepath.Join(dir, "default.pem"), c2, k2)
	s, err := Load(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		_ = conn.(*tls.Conn).Handshake()
		_ = conn.Close()
	})
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "a.example.com", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer := conn.ConnectionState().PeerCertificates
	if len(peer) == 0 || !peer[0].Equal(want.Leaf) || peer[0].SerialNumber.Int64() != 1 {
		t.Errorf("peer certificate is not a.example.com's: %+v", peer)
	}
}
