// Package certs holds the router's HTTPS listener certificates, read from
// files, so that operators can replace them on disk without a restart or a
// dropped connection.
package certs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
)

// The operator-facing variables that errors name.
const (
	envCert = "ROUTER_TLS_CERT_FILE"
	envKey  = "ROUTER_TLS_KEY_FILE"
	envDir  = "ROUTER_TLS_CERT_DIR"
)

// Options are the caller's settings, kept apart from the environment so that
// the package can be tested and reused without it.
type Options struct {
	CertFile, KeyFile string       // ROUTER_TLS_CERT_FILE / ROUTER_TLS_KEY_FILE
	Dir               string       // ROUTER_TLS_CERT_DIR
	Log               *slog.Logger // nil: discard
	// OnReloadFailed is called (from the goroutine that reloaded) when a reload kept the old certificates.
	OnReloadFailed func(err error)
	// OnLoaded is called after every successful load (start-up included) with what is now served.
	OnLoaded func([]Info)
}

// Info describes one served certificate (for GET /api/v1/lb/certificates and the expiry metric).
// Names are the DNS SANs (and IP SANs as strings), the subject CN when
// there are none; Issuer is the issuer's CN, else its full string.
type Info = model.CertInfo

// Store serves the certificates to TLS handshakes while letting them be
// replaced as a whole at any time.
type Store struct {
	o    Options
	log  *slog.Logger
	snap atomic.Pointer[snapshot]
	mu   sync.Mutex // serialises reloads; guards seen
	seen files      // what the last load or reload read
}

// snapshot is one immutable set of certificates, swapped as a whole.
type snapshot struct {
	exact    map[string]*tls.Certificate // by lower-case name
	wild     map[string]*tls.Certificate // by the suffix after "*."
	fallback *tls.Certificate            // dir default, else the single pair, else the first loaded
	infos    []Info
}

// file is one file as read, with what tells a change from the last read.
type file struct {
	data  []byte
	err   error // already prefixed with the variable name
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
}

// files is everything a load reads.
type files struct {
	cert, key file
	dir       map[string]file // by file name; "" holds the error of listing the dir
}

// Load reads the certificates once, so that a bad configuration stops the
// router at start-up rather than at the first handshake.
func Load(o Options) (*Store, error) {
	switch {
	case o.CertFile == "" && o.KeyFile == "" && o.Dir == "":
		return nil, varErr(envCert, "neither %s nor %s is set", envCert, envDir)
	case o.CertFile != "" && o.KeyFile == "":
		return nil, varErr(envKey, "not set while %s is", envCert)
	case o.CertFile == "" && o.KeyFile != "":
		return nil, varErr(envCert, "not set while %s is", envKey)
	}
	s := &Store{o: o, log: o.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.seen = s.read()
	sn, err := s.build(s.seen)
	if err != nil {
		return nil, err
	}
	s.publish(sn)
	return s, nil
}

// GetCertificate picks the certificate by SNI without taking a lock, so that
// handshakes never wait for a reload.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	sn := s.snap.Load()
	if sn == nil || sn.fallback == nil {
		return nil, errors.New("certs: no certificate loaded")
	}
	if hello != nil {
		name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
		if c := sn.exact[name]; c != nil && name != "" {
			return c, nil
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := sn.wild[name[i+1:]]; c != nil {
				return c, nil
			}
		}
	}
	return sn.fallback, nil
}

// Reload re-reads every file so that a SIGHUP applies a change at once; it
// is all or nothing, keeping the old certificates when any file is bad.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apply(s.read())
}

// Watch polls the files so that a replaced certificate is served without an
// operator's signal; a file counts as changed when its size, mtime or content
// hash differs, which catches atomic renames and same-second rewrites.
func (s *Store) Watch(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if fs := s.read(); !fs.same(s.seen) {
			_ = s.apply(fs) // logged and reported by apply
		}
		s.mu.Unlock()
	}
}

// Certificates reports what is served now, for the API and the expiry metric.
func (s *Store) Certificates() []Info {
	if sn := s.snap.Load(); sn != nil {
		return slices.Clone(sn.infos)
	}
	return nil
}

// apply builds a snapshot from fs and serves it, or keeps the old one. The
// caller holds s.mu.
func (s *Store) apply(fs files) error {
	s.seen = fs
	sn, err := s.build(fs)
	if err != nil {
		s.log.Error("TLS certificates not reloaded, keeping the old ones", "err", err)
		if s.o.OnReloadFailed != nil {
			s.o.OnReloadFailed(err)
		}
		return err
	}
	s.publish(sn)
	return nil
}

func (s *Store) publish(sn *snapshot) {
	s.snap.Store(sn)
	s.log.Info("TLS certificates loaded", "count", len(sn.infos))
	if s.o.OnLoaded != nil {
		s.o.OnLoaded(slices.Clone(sn.infos))
	}
}

// read reads the pair and the dir's .crt, .key and .pem files.
func (s *Store) read() files {
	var fs files
	if s.o.CertFile != "" {
		fs.cert = readFile(s.o.CertFile, envCert)
		fs.key = readFile(s.o.KeyFile, envKey)
	}
	if s.o.Dir != "" {
		fs.dir = map[string]file{}
		entries, err := os.ReadDir(s.o.Dir)
		if err != nil {
			fs.dir[""] = file{err: varErr(envDir, "%w", err)}
		}
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".crt", ".key", ".pem":
				if !e.IsDir() {
					fs.dir[e.Name()] = readFile(filepath.Join(s.o.Dir, e.Name()), envDir)
				}
			}
		}
	}
	return fs
}

func readFile(path, env string) file {
	f, err := os.Open(path)
	if err != nil {
		return file{err: varErr(env, "%w", err)}
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	var data []byte
	if err == nil {
		data, err = io.ReadAll(f)
	}
	if err != nil {
		return file{err: varErr(env, "%w", err)}
	}
	return file{data: data, size: st.Size(), mtime: st.ModTime(), sum: sha256.Sum256(data)}
}

func (f file) same(g file) bool {
	return (f.err == nil) == (g.err == nil) && f.size == g.size && f.mtime.Equal(g.mtime) && f.sum == g.sum
}

func (fs files) same(o files) bool {
	return fs.cert.same(o.cert) && fs.key.same(o.key) && maps.EqualFunc(fs.dir, o.dir, file.same)
}

// build parses fs into a snapshot; any bad file fails the whole of it.
func (s *Store) build(fs files) (*snapshot, error) {
	sn := &snapshot{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	var single, def, first *tls.Certificate
	if s.o.CertFile != "" {
		what := fmt.Sprintf("%s with %s %s", s.o.CertFile, envKey, s.o.KeyFile)
		c, err := s.add(sn, envCert, what, fs.cert, fs.key)
		if err != nil {
			return nil, err
		}
		single = c
	}
	if f, ok := fs.dir[""]; ok {
		return nil, f.err
	}
	done := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(fs.dir)) {
		stem := strings.TrimSuffix(name, filepath.Ext(name))
		if done[stem] {
			continue
		}
		done[stem] = true
		crt, hasCrt := fs.dir[stem+".crt"]
		key, hasKey := fs.dir[stem+".key"]
		pem, hasPem := fs.dir[stem+".pem"]
		what := filepath.Join(s.o.Dir, stem+".crt")
		switch {
		case hasPem && (hasCrt || hasKey):
			return nil, varErr(envDir, "%s.pem and %s.crt/.key are both present in %s", stem, stem, s.o.Dir)
		case hasPem:
			crt, key, what = pem, pem, filepath.Join(s.o.Dir, stem+".pem")
		case !hasCrt || !hasKey:
			have, want := stem+".crt", stem+".key"
			if hasKey {
				have, want = want, have
			}
			return nil, varErr(envDir, "%s has no %s", filepath.Join(s.o.Dir, have), want)
		}
		c, err := s.add(sn, envDir, what, crt, key)
		if err != nil {
			return nil, err
		}
		if stem == "default" {
			def = c
		}
		first = cmp.Or(first, c)
	}
	sn.fallback = cmp.Or(def, single, first)
	if sn.fallback == nil {
		return nil, varErr(envDir, "no certificate in %s", s.o.Dir)
	}
	slices.SortStableFunc(sn.infos, func(a, b Info) int { return cmp.Compare(firstName(a), firstName(b)) })
	return sn, nil
}

// add parses one certificate and indexes it by its names in sn; names
// already taken by an earlier certificate keep it.
func (s *Store) add(sn *snapshot, env, what string, cert, key file) (*tls.Certificate, error) {
	if err := cmp.Or(cert.err, key.err); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(cert.data, key.data)
	if err == nil && c.Leaf == nil {
		c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
	}
	if err != nil {
		return nil, varErr(env, "%s: %w", what, err)
	}
	info := infoOf(c.Leaf)
	if time.Now().After(c.Leaf.NotAfter) {
		s.log.Warn("TLS certificate expired, serving it anyway", "file", what, "names", info.Names, "not_after", c.Leaf.NotAfter)
	}
	for _, n := range info.Names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		m := sn.exact
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			n, m = suffix, sn.wild
		}
		if m[n] == nil {
			m[n] = &c
		}
	}
	sn.infos = append(sn.infos, info)
	return &c, nil
}

func infoOf(leaf *x509.Certificate) Info {
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	return Info{
		Names:    names,
		Issuer:   cmp.Or(leaf.Issuer.CommonName, leaf.Issuer.String()),
		NotAfter: leaf.NotAfter,
		Source:   "file",
	}
}

func firstName(i Info) string {
	if len(i.Names) == 0 {
		return ""
	}
	return i.Names[0]
}

// varErr names the variable whose file is wrong, so that start-up exits 2
// naming it.
func varErr(env, format string, args ...any) error {
	return &config.VarError{Var: env, Err: fmt.Errorf(format, args...)}
}
