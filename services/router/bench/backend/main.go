// Command backend is the bench's region: a minimal HTTP server answering a
// small fixed body on each address given, so the proxies are what is measured.
// -gencert DIR writes a self-signed certificate for 127.0.0.1 and localhost
// (DIR/cert.pem, DIR/key.pem, and DIR/both.pem for HAProxy) and exits; with
// -tls DIR it serves HTTPS with that certificate.
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
	tlsDir := flag.String("tls", "", "serve HTTPS with DIR/cert.pem and DIR/key.pem")
	genDir := flag.String("gencert", "", "write a self-signed certificate to DIR and exit")
	flag.Parse()
	if *genDir != "" {
		if err := selfSigned(*genDir); err != nil {
			log.Fatal(err)
		}
		return
	}
	if flag.NArg() < 1 {
		log.Fatal("usage: backend [-tls DIR] ADDR... | backend -gencert DIR")
	}
	var cfg *tls.Config
	if *tlsDir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(*tlsDir, "cert.pem"), filepath.Join(*tlsDir, "key.pem"))
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

// selfSigned makes a certificate for 127.0.0.1 and localhost (ECDSA P-256)
// and writes it and its key to dir.
func selfSigned(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
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
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	c := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	k := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	for name, b := range map[string][]byte{"cert.pem": c, "key.pem": k, "both.pem": append(append([]byte{}, c...), k...)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
