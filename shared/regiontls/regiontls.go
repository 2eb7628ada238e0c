// Package regiontls builds the TLS client configuration used to reach
// regions, so the health checker and the router verify regions the same way.
package regiontls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/mrlb/mrlb/shared/config"
)

// Build returns a client TLS config: system roots plus the optional CA
// bundle, the optional client certificate, and verification on unless
// InsecureSkipVerify is set (which is logged as a warning).
func Build(c config.RegionTLS, log *slog.Logger) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &config.VarError{Var: "REGION_TLS_CA_FILE", Err: err}
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.VarError{Var: "REGION_TLS_CA_FILE", Err: errors.New("no PEM certificates found")}
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &config.VarError{Var: "REGION_TLS_CERT_FILE", Err: fmt.Errorf("load key pair: %w", err)}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if c.InsecureSkipVerify {
		if log != nil {
			log.Warn("REGION_TLS_INSECURE_SKIP_VERIFY=true: certificates of regions are NOT verified")
		}
		cfg.InsecureSkipVerify = true // the operator asked for it and is warned
	}
	return cfg, nil
}
