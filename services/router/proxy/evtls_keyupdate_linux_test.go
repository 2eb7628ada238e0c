//go:build linux

package proxy

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// tls13Records writes TLS 1.3 records with a client's application traffic
// secret (from its key log), so that a test can send what Go's client never
// sends on demand: KeyUpdate messages.
type tls13Records struct {
	conn   net.Conn
	hash   func() hash.Hash
	keyLen int // 0: ChaCha20-Poly1305
	aead   cipher.AEAD
	iv     []byte
	secret []byte
	seq    uint64
}

func tls13ExpandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	l := "tls13 " + label
	info := append([]byte{byte(n >> 8), byte(n), byte(len(l))}, l...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		panic(err)
	}
	return out
}

func (r *tls13Records) setSecret(s []byte) error {
	r.secret, r.seq = s, 0
	r.iv = tls13ExpandLabel(r.hash, s, "iv", 12)
	var err error
	if r.keyLen == 0 {
		r.aead, err = chacha20poly1305.New(tls13ExpandLabel(r.hash, s, "key", chacha20poly1305.KeySize))
		return err
	}
	block, err := aes.NewCipher(tls13ExpandLabel(r.hash, s, "key", r.keyLen))
	if err != nil {
		return err
	}
	r.aead, err = cipher.NewGCM(block)
	return err
}

func (r *tls13Records) write(typ byte, data []byte) error {
	inner := append(append([]byte{}, data...), typ)
	hdr := []byte{0x17, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+r.aead.Overhead()))
	nonce := append([]byte{}, r.iv...)
	for i := range 8 {
		nonce[4+i] ^= byte(r.seq >> (56 - 8*i))
	}
	r.seq++
	_, err := r.conn.Write(r.aead.Seal(hdr, nonce, inner, hdr))
	return err
}

// keyUpdate sends KeyUpdate(update_requested), which makes the peer send
// one back, then moves to the next secret.
func (r *tls13Records) keyUpdate() error {
	if err := r.write(0x16, []byte{24, 0, 0, 1, 1}); err != nil {
		return err
	}
	return r.setSecret(tls13ExpandLabel(r.hash, r.secret, "traffic upd", r.hash().Size()))
}

// A client that never reads its answer is cut after ClientWriteTimeout
// without progress; KeyUpdates sent meanwhile (each makes the router write
// a record) must not keep it, and its region connection, open.
func TestHTTPSKeyUpdatesDoNotDefeatWriteTimeout(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("z"), 64<<20)
	g := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) }))
	t.Cleanup(g.Close)
	f := startFront(t, Options{ClientWriteTimeout: time.Second}, FrontDoor{}, map[string]string{"r1": g.URL})
	f.r.awaitLoop(t)
	raw, err := net.Dial("tcp", f.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var keylog bytes.Buffer
	c := tls.Client(raw, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS13, KeyLogWriter: &keylog})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	r := &tls13Records{conn: raw, hash: sha256.New}
	switch cs := c.ConnectionState().CipherSuite; cs {
	case tls.TLS_AES_128_GCM_SHA256:
		r.keyLen = 16
	case tls.TLS_AES_256_GCM_SHA384:
		r.hash, r.keyLen = sha512.New384, 32
	case tls.TLS_CHACHA20_POLY1305_SHA256:
	default:
		t.Fatalf("cipher suite %x", cs)
	}
	var secret []byte
	for line := range strings.SplitSeq(keylog.String(), "\n") {
		if fs := strings.Fields(line); len(fs) == 3 && fs[0] == "CLIENT_TRAFFIC_SECRET_0" {
			secret, _ = hex.DecodeString(fs[2])
		}
	}
	if err := r.setSecret(secret); err != nil {
		t.Fatal(err)
	}
	if err := r.write(0x17, []byte("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// The client never reads: a KeyUpdate every 300 ms for 4 s (under Go's
	// limit of 16 records in a row without data).
	start := time.Now()
	for range 13 {
		time.Sleep(300 * time.Millisecond) // the attacker's pace
		if err := r.keyUpdate(); err != nil {
			break // closed already: what the test wants
		}
	}
	// Drain: a connection still open goes on sending until the deadline.
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<20)
	for {
		_, err := raw.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("still open %s after the client stopped reading (ClientWriteTimeout 1s): its KeyUpdates kept it", time.Since(start).Round(time.Second))
		}
		return // closed
	}
}
