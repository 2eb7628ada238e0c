package regiontls_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/regiontls"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type keyPair struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

// issue makes a certificate signed by parent (self-signed when parent is nil).
func issue(t *testing.T, cn string, parent *keyPair, isCA bool, usage x509.ExtKeyUsage) *keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if !isCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func assertVarError(t *testing.T, err error, name string) {
	t.Helper()
	require.Error(t, err)
	var ve *config.VarError
	require.Truef(t, errors.As(err, &ve), "%v (%T) is not a *config.VarError", err, err)
	assert.Equal(t, name, ve.Var)
	assert.Contains(t, err.Error(), name)
}

func TestBuildDefaults(t *testing.T) {
	cfg, err := regiontls.Build(config.RegionTLS{}, nil)
	require.NoError(t, err)
	assert.Nil(t, cfg.RootCAs, "system roots")
	assert.Empty(t, cfg.Certificates)
	assert.False(t, cfg.InsecureSkipVerify)
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
}

func TestBuildWithCAVerifiesRegion(t *testing.T) {
	ca := issue(t, "test ca", nil, true, 0)
	server := issue(t, "region", ca, false, x509.ExtKeyUsageServerAuth)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			w.Header().Set("X-Client", r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srvCert, err := tls.X509KeyPair(server.certPEM, server.keyPEM)
	require.NoError(t, err)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}}
	srv.StartTLS()
	defer srv.Close()

	get := func(cfg *tls.Config) (*http.Response, error) {
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL)
		if err == nil {
			_ = resp.Body.Close()
		}
		return resp, err
	}

	// Without the CA the region's certificate is not trusted.
	plain, err := regiontls.Build(config.RegionTLS{}, nil)
	require.NoError(t, err)
	_, err = get(plain)
	require.Error(t, err)

	caFile := write(t, "ca.pem", ca.certPEM)
	withCA, err := regiontls.Build(config.RegionTLS{CAFile: caFile}, nil)
	require.NoError(t, err)
	require.NotNil(t, withCA.RootCAs)
	resp, err := get(withCA)
	require.NoError(t, err)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.False(t, withCA.InsecureSkipVerify)

	// A bundle with extra text and several certificates works too.
	other := issue(t, "other ca", nil, true, 0)
	bundle := bytes.Join([][]byte{[]byte("# comment\n"), other.certPEM, ca.certPEM}, nil)
	withBundle, err := regiontls.Build(config.RegionTLS{CAFile: write(t, "bundle.pem", bundle)}, nil)
	require.NoError(t, err)
	_, err = get(withBundle)
	require.NoError(t, err)

	// Skipping verification connects without the CA and is warned about.
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	insecure, err := regiontls.Build(config.RegionTLS{InsecureSkipVerify: true}, log)
	require.NoError(t, err)
	assert.True(t, insecure.InsecureSkipVerify)
	assert.Contains(t, logs.String(), "REGION_TLS_INSECURE_SKIP_VERIFY")
	assert.Contains(t, logs.String(), "WARN")
	_, err = get(insecure)
	require.NoError(t, err)

	// Insecure without a logger does not panic.
	insecure, err = regiontls.Build(config.RegionTLS{InsecureSkipVerify: true}, nil)
	require.NoError(t, err)
	assert.True(t, insecure.InsecureSkipVerify)
}

func TestBuildClientCertificate(t *testing.T) {
	ca := issue(t, "test ca", nil, true, 0)
	server := issue(t, "region", ca, false, x509.ExtKeyUsageServerAuth)
	client := issue(t, "lb-client", ca, false, x509.ExtKeyUsageClientAuth)

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srvCert, err := tls.X509KeyPair(server.certPEM, server.keyPEM)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	cfg, err := regiontls.Build(config.RegionTLS{
		CAFile:   write(t, "ca.pem", ca.certPEM),
		CertFile: write(t, "client.pem", client.certPEM),
		KeyFile:  write(t, "client.key", client.keyPEM),
	}, nil)
	require.NoError(t, err)
	require.Len(t, cfg.Certificates, 1)

	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(srv.URL)
	require.NoError(t, err)
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "lb-client", body.String(), "mTLS: the region saw the client certificate")
}

func TestBuildErrors(t *testing.T) {
	ca := issue(t, "test ca", nil, true, 0)
	client := issue(t, "client", ca, false, x509.ExtKeyUsageClientAuth)
	other := issue(t, "other", ca, false, x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	certFile := write(t, "c.pem", client.certPEM)
	keyFile := write(t, "c.key", client.keyPEM)

	tests := []struct {
		name string
		cfg  config.RegionTLS
		want string
	}{
		{"CA file missing", config.RegionTLS{CAFile: filepath.Join(dir, "nope.pem")}, "REGION_TLS_CA_FILE"},
		{"CA file without PEM", config.RegionTLS{CAFile: write(t, "junk.pem", []byte("not a certificate"))}, "REGION_TLS_CA_FILE"},
		{"CA file empty", config.RegionTLS{CAFile: write(t, "empty.pem", nil)}, "REGION_TLS_CA_FILE"},
		{"CA file is a key", config.RegionTLS{CAFile: write(t, "key.pem", client.keyPEM)}, "REGION_TLS_CA_FILE"},
		{"CA file is a directory", config.RegionTLS{CAFile: dir}, "REGION_TLS_CA_FILE"},
		{"cert missing", config.RegionTLS{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: keyFile}, "REGION_TLS_CERT_FILE"},
		{"key missing", config.RegionTLS{CertFile: certFile, KeyFile: filepath.Join(dir, "nope.key")}, "REGION_TLS_CERT_FILE"},
		{"key does not match", config.RegionTLS{CertFile: certFile, KeyFile: write(t, "o.key", other.keyPEM)}, "REGION_TLS_CERT_FILE"},
		{"cert is junk", config.RegionTLS{CertFile: write(t, "j.pem", []byte("junk")), KeyFile: keyFile}, "REGION_TLS_CERT_FILE"},
		{"cert without key", config.RegionTLS{CertFile: certFile}, "REGION_TLS_CERT_FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := regiontls.Build(tc.cfg, nil)
			assertVarError(t, err, tc.want)
			assert.Nil(t, cfg)
		})
	}
}
