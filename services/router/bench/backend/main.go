// Command backend is the bench's region: a minimal HTTP server answering a
// small fixed body on each address given, so the proxies are what is measured.
// With -tls DIR it serves HTTPS with a self-signed certificate for 127.0.0.1
// and localhost, written to DIR/cert.pem for the proxies to trust.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	tlsDir := flag.String("tls", "", "serve HTTPS; the certificate goes to DIR/cert.pem")
	flag.Parse()
	if flag.NArg() < 1 {
		log.Fatal("usage: backend [-tls DIR] ADDR...")
	}
	var cfg *tls.Config
	if *tlsDir != "" {
		cert, err := selfSigned(filepath.Join(*tlsDir, "cert.pem"))
		if err != nil {
			log.Fatal(err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var wg sync.WaitGroup
	for _, addr := range flag.Args() {
		body := []byte(fmt.Sprintf("hello from %s\n", addr))
		wg.Go(func() {
			s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("text/plain")
				ctx.SetBody(body)
			}, NoDefaultServerHeader: true}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				log.Fatal(err)
			}
			if cfg != nil {
				ln = tls.NewListener(ln, cfg)
			}
			if err := s.Serve(ln); err != nil {
				log.Fatal(err)
			}
		})
	}
	wg.Wait()
}

// selfSigned makes a certificate for 127.0.0.1 and localhost and writes it
// (PEM) to path.
func selfSigned(path string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mrlb bench backend"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
