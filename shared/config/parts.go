package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/mrlb/mrlb/shared/model"
)

// DefaultNATSURL is where services look for NATS when NATS_URL is not set.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// NATS says how to reach NATS and how JetStream state is replicated.
type NATS struct {
	// URL is a comma-separated list of servers; services preset
	// DefaultNATSURL, standalone leaves it empty to mean "embedded".
	URL string `envconfig:"NATS_URL"`
	// Replicas is the replica count of buckets and streams (3 on a
	// three-node cluster).
	Replicas int `envconfig:"NATS_REPLICAS" default:"1"`
	// RequestTimeout bounds every command request between services.
	RequestTimeout Duration `envconfig:"NATS_REQUEST_TIMEOUT" default:"5s"`
}

// Validate implements Validator.
func (c NATS) Validate() error {
	if c.URL != "" {
		for _, u := range strings.Split(c.URL, ",") {
			if err := validateNATSURL(strings.TrimSpace(u)); err != nil {
				return &VarError{Var: "NATS_URL", Err: err}
			}
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return &VarError{Var: "NATS_REPLICAS", Err: errors.New("must be from 1 to 5")}
	}
	return positive("NATS_REQUEST_TIMEOUT", c.RequestTimeout)
}

func validateNATSURL(raw string) error {
	if raw == "" {
		return errors.New("empty server URL")
	}
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL", raw)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", raw)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has a bad port", raw)
		}
	}
	return nil
}

// Ops is the operational listener and logging of every service.
type Ops struct {
	// MetricsAddr serves /healthz, /readyz and /metrics; each service presets
	// its own default, and "off" disables the listener.
	MetricsAddr string `envconfig:"METRICS_ADDR"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`
}

// Validate implements Validator.
func (c Ops) Validate() error {
	if c.MetricsAddr != "" && c.MetricsAddr != "off" {
		if err := ValidateAddr(c.MetricsAddr); err != nil {
			return &VarError{Var: "METRICS_ADDR", Err: err}
		}
	}
	if _, err := c.Level(); err != nil {
		return &VarError{Var: "LOG_LEVEL", Err: err}
	}
	return nil
}

// Level returns the slog level of LogLevel.
func (c Ops) Level() (slog.Level, error) {
	var l slog.Level
	if c.LogLevel == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("%q: use debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// ValidateReplicaID checks a replica name set in variable name: empty (the
// hostname-pid default) or a name shaped like a region's, since it becomes
// a KV key and a metric label.
func ValidateReplicaID(name, id string) error {
	if id != "" && model.ValidateRegionName(id) != nil {
		return &VarError{Var: name, Err: errors.New("must match ^[a-z0-9][a-z0-9-]{0,62}$")}
	}
	return nil
}

// ValidateAddr checks a host:port listen address.
func ValidateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q has a bad port", addr)
	}
	return nil
}

// Seed is what configmgr writes into empty buckets on start.
type Seed struct {
	// RegionalEndpoints is "name:url,name:url"; it seeds lb_regions when empty.
	RegionalEndpoints string `envconfig:"REGIONAL_ENDPOINTS"`
	// Strategy seeds lb_config when it is empty.
	Strategy string `envconfig:"LOAD_BALANCING_STRATEGY" default:"round_robin"`
	// AllowPlaintext allows http:// regions that are not on loopback.
	AllowPlaintext bool `envconfig:"REGION_ALLOW_PLAINTEXT" default:"false"`
}

// Validate implements Validator.
func (c Seed) Validate() error {
	if _, err := c.Endpoints(); err != nil {
		return &VarError{Var: "REGIONAL_ENDPOINTS", Err: err}
	}
	if _, err := model.NormalizeStrategy(c.Strategy, nil); err != nil {
		return &VarError{Var: "LOAD_BALANCING_STRATEGY", Err: err}
	}
	return nil
}

// Endpoints parses RegionalEndpoints.
func (c Seed) Endpoints() ([]model.Endpoint, error) {
	return model.ParseEndpoints(c.RegionalEndpoints, c.AllowPlaintext)
}

// Health is the health checker's schedule and thresholds.
type Health struct {
	Interval          Duration `envconfig:"HEALTH_CHECK_INTERVAL" default:"30"`
	Timeout           Duration `envconfig:"HEALTH_CHECK_TIMEOUT" default:"5s"`
	Path              string   `envconfig:"HEALTH_CHECK_PATH" default:"/health"`
	FailureThreshold  int      `envconfig:"HEALTH_FAILURE_THRESHOLD" default:"3"`
	RecoveryThreshold int      `envconfig:"HEALTH_RECOVERY_THRESHOLD" default:"2"`
	// HistoryMaxAge and HistoryPerRegion bound the LB_HEALTH stream.
	HistoryMaxAge    Duration `envconfig:"HEALTH_HISTORY_MAX_AGE" default:"24h"`
	HistoryPerRegion int64    `envconfig:"HEALTH_HISTORY_PER_REGION" default:"1000"`
}

// Validate implements Validator.
func (c Health) Validate() error {
	if err := positive("HEALTH_CHECK_INTERVAL", c.Interval); err != nil {
		return err
	}
	if err := positive("HEALTH_CHECK_TIMEOUT", c.Timeout); err != nil {
		return err
	}
	if err := model.ValidateHealthPath(c.Path); err != nil || c.Path == "" {
		return &VarError{Var: "HEALTH_CHECK_PATH", Err: errors.New("must be an absolute path such as /health")}
	}
	if c.FailureThreshold < 1 || c.FailureThreshold > 100 {
		return &VarError{Var: "HEALTH_FAILURE_THRESHOLD", Err: errors.New("must be from 1 to 100")}
	}
	if c.RecoveryThreshold < 1 || c.RecoveryThreshold > 100 {
		return &VarError{Var: "HEALTH_RECOVERY_THRESHOLD", Err: errors.New("must be from 1 to 100")}
	}
	if err := positive("HEALTH_HISTORY_MAX_AGE", c.HistoryMaxAge); err != nil {
		return err
	}
	if c.HistoryPerRegion < 1 {
		return &VarError{Var: "HEALTH_HISTORY_PER_REGION", Err: errors.New("must be at least 1")}
	}
	return nil
}

// Failover is the failover manager's policy.
type Failover struct {
	Enabled       bool     `envconfig:"FAILOVER_ENABLED" default:"true"`
	Threshold     float64  `envconfig:"FAILOVER_THRESHOLD" default:"0.5"`
	FailbackDelay Duration `envconfig:"FAILBACK_DELAY" default:"60s"`
	// LeaseTTL is how long a leader's lease lasts without renewal.
	LeaseTTL Duration `envconfig:"FAILOVER_LEASE_TTL" default:"5s"`
}

// Validate implements Validator.
func (c Failover) Validate() error {
	if math.IsNaN(c.Threshold) || c.Threshold <= 0 || c.Threshold > 1 {
		return &VarError{Var: "FAILOVER_THRESHOLD", Err: errors.New("must be in (0, 1]")}
	}
	if c.FailbackDelay < 0 {
		return &VarError{Var: "FAILBACK_DELAY", Err: errors.New("must not be negative")}
	}
	return positive("FAILOVER_LEASE_TTL", c.LeaseTTL)
}

// RegionTLS is how services speak TLS to regions.
type RegionTLS struct {
	CAFile             string `envconfig:"REGION_TLS_CA_FILE"`
	CertFile           string `envconfig:"REGION_TLS_CERT_FILE"`
	KeyFile            string `envconfig:"REGION_TLS_KEY_FILE"`
	InsecureSkipVerify bool   `envconfig:"REGION_TLS_INSECURE_SKIP_VERIFY" default:"false"`
}

// Validate implements Validator.
func (c RegionTLS) Validate() error {
	if err := readable("REGION_TLS_CA_FILE", c.CAFile); err != nil {
		return err
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return &VarError{Var: "REGION_TLS_CERT_FILE", Err: errors.New("REGION_TLS_CERT_FILE and REGION_TLS_KEY_FILE go together")}
	}
	if err := readable("REGION_TLS_CERT_FILE", c.CertFile); err != nil {
		return err
	}
	return readable("REGION_TLS_KEY_FILE", c.KeyFile)
}

func readable(name, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return &VarError{Var: name, Err: err}
	}
	defer func() { _ = f.Close() }()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return &VarError{Var: name, Err: fmt.Errorf("%s is a directory, not a file", path)}
	}
	return nil
}

// API is apigw's listener, security and limits.
type API struct {
	Addr                 string   `envconfig:"API_ADDR" default:":8080"`
	Keys                 []string `envconfig:"API_KEYS"`
	AllowUnauthenticated bool     `envconfig:"API_ALLOW_UNAUTHENTICATED" default:"false"`
	RateLimit            float64  `envconfig:"API_RATE_LIMIT" default:"50"`
	RateBurst            int      `envconfig:"API_RATE_BURST" default:"100"`
	TLSCertFile          string   `envconfig:"API_TLS_CERT_FILE"`
	TLSKeyFile           string   `envconfig:"API_TLS_KEY_FILE"`
}

// Validate implements Validator.
func (c API) Validate() error {
	if err := ValidateAddr(c.Addr); err != nil {
		return &VarError{Var: "API_ADDR", Err: err}
	}
	for _, k := range c.Keys {
		if strings.TrimSpace(k) == "" {
			return &VarError{Var: "API_KEYS", Err: errors.New("empty key in list")}
		}
		if strings.TrimSpace(k) != k {
			return &VarError{Var: "API_KEYS", Err: errors.New("keys must not start or end with white space (write key1,key2 without spaces)")}
		}
		if len(k) < 8 {
			return &VarError{Var: "API_KEYS", Err: errors.New("keys must be at least 8 characters")}
		}
	}
	if math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) || c.RateLimit <= 0 {
		return &VarError{Var: "API_RATE_LIMIT", Err: errors.New("must be a positive number of requests per second")}
	}
	if c.RateBurst < 1 {
		return &VarError{Var: "API_RATE_BURST", Err: errors.New("must be at least 1")}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return &VarError{Var: "API_TLS_CERT_FILE", Err: errors.New("API_TLS_CERT_FILE and API_TLS_KEY_FILE go together")}
	}
	if err := readable("API_TLS_CERT_FILE", c.TLSCertFile); err != nil {
		return err
	}
	if err := readable("API_TLS_KEY_FILE", c.TLSKeyFile); err != nil {
		return err
	}
	if c.Protected() && !IsLoopbackAddr(c.ListenAddr()) {
		return &VarError{Var: "API_ADDR", Err: fmt.Errorf("%q is not a loopback address and API_KEYS is empty: set API_KEYS, bind 127.0.0.1, or set API_ALLOW_UNAUTHENTICATED=true", c.Addr)}
	}
	return nil
}

// Protected reports whether the API runs in protected mode: no keys and
// unauthenticated access not allowed, so it may only be reached from loopback.
func (c API) Protected() bool { return len(c.Keys) == 0 && !c.AllowUnauthenticated }

// ListenAddr is the address the API binds. In protected mode an address
// without a host (the default ":8080") binds loopback only, the way Redis'
// protected mode does; an explicit non-loopback host is refused by Validate.
func (c API) ListenAddr() string {
	host, port, err := net.SplitHostPort(c.Addr)
	if err == nil && host == "" && c.Protected() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return c.Addr
}

// IsLoopbackAddr reports whether a listen address binds loopback only (an
// empty host binds every interface, so it is not).
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return model.IsLoopbackHost(host)
}

// Router is the data plane's listener, timeouts and local state.
type Router struct {
	Addr string `envconfig:"ROUTER_ADDR" default:":8000"`
	// ID names this replica in events and presence; default hostname-pid.
	ID string `envconfig:"ROUTER_ID"`
	// StateFile keeps the last routing snapshot; empty means a file under
	// the user's cache dir.
	StateFile             string   `envconfig:"ROUTER_STATE_FILE"`
	DialTimeout           Duration `envconfig:"ROUTER_DIAL_TIMEOUT" default:"5s"`
	TLSHandshakeTimeout   Duration `envconfig:"ROUTER_TLS_HANDSHAKE_TIMEOUT" default:"5s"`
	ResponseHeaderTimeout Duration `envconfig:"ROUTER_RESPONSE_HEADER_TIMEOUT" default:"30s"`
	IdleConnTimeout       Duration `envconfig:"ROUTER_IDLE_CONN_TIMEOUT" default:"90s"`
	MaxIdleConnsPerRegion int      `envconfig:"ROUTER_MAX_IDLE_CONNS_PER_REGION" default:"512"`
	// The client-side timeouts bound what a slow or silent client can hold:
	// the whole request head, the wait between body reads, a stalled write
	// to a client that does not read, and a keep-alive connection's idle
	// time (ROUTER_IDLE_CONN_TIMEOUT is the regions' side).
	ClientHeaderTimeout Duration `envconfig:"ROUTER_CLIENT_HEADER_TIMEOUT" default:"10s"`
	ClientBodyTimeout   Duration `envconfig:"ROUTER_CLIENT_BODY_TIMEOUT" default:"60s"`
	ClientWriteTimeout  Duration `envconfig:"ROUTER_CLIENT_WRITE_TIMEOUT" default:"60s"`
	ClientIdleTimeout   Duration `envconfig:"ROUTER_CLIENT_IDLE_TIMEOUT" default:"90s"`
}

// Validate implements Validator.
func (c Router) Validate() error {
	if err := ValidateAddr(c.Addr); err != nil {
		return &VarError{Var: "ROUTER_ADDR", Err: err}
	}
	if err := ValidateReplicaID("ROUTER_ID", c.ID); err != nil {
		return err
	}
	for name, d := range map[string]Duration{
		"ROUTER_DIAL_TIMEOUT":            c.DialTimeout,
		"ROUTER_TLS_HANDSHAKE_TIMEOUT":   c.TLSHandshakeTimeout,
		"ROUTER_RESPONSE_HEADER_TIMEOUT": c.ResponseHeaderTimeout,
		"ROUTER_IDLE_CONN_TIMEOUT":       c.IdleConnTimeout,
		"ROUTER_CLIENT_HEADER_TIMEOUT":   c.ClientHeaderTimeout,
		"ROUTER_CLIENT_BODY_TIMEOUT":     c.ClientBodyTimeout,
		"ROUTER_CLIENT_WRITE_TIMEOUT":    c.ClientWriteTimeout,
		"ROUTER_CLIENT_IDLE_TIMEOUT":     c.ClientIdleTimeout,
	} {
		if err := positive(name, d); err != nil {
			return err
		}
	}
	if c.MaxIdleConnsPerRegion < 1 {
		return &VarError{Var: "ROUTER_MAX_IDLE_CONNS_PER_REGION", Err: errors.New("must be at least 1")}
	}
	return nil
}

// FrontDoor is the router's HTTPS listener: on when a certificate source
// is set, so that plain HTTP needs no set-up.
type FrontDoor struct {
	TLSAddr     string `envconfig:"ROUTER_TLS_ADDR" default:":8443"`
	TLSCertFile string `envconfig:"ROUTER_TLS_CERT_FILE"`
	TLSKeyFile  string `envconfig:"ROUTER_TLS_KEY_FILE"`
	// CertDir holds NAME.crt + NAME.key (or NAME.pem), picked by SNI.
	TLSCertDir string `envconfig:"ROUTER_TLS_CERT_DIR"`
	MinVersion string `envconfig:"ROUTER_TLS_MIN_VERSION" default:"1.2"`
	// HTTPSRedirect answers plain requests with 308 to https://.
	HTTPSRedirect bool `envconfig:"ROUTER_HTTPS_REDIRECT" default:"false"`
	// HSTS is the Strict-Transport-Security value of HTTPS answers.
	HSTS  string `envconfig:"ROUTER_HSTS"`
	HTTP2 bool   `envconfig:"ROUTER_HTTP2" default:"true"`

	// ACMEDomains turns automatic certificates on for these names (and with
	// them the HTTPS listener).
	ACMEDomains []string `envconfig:"ACME_DOMAINS"`
	ACMEEmail   string   `envconfig:"ACME_EMAIL"`
	// ACMECA is the CA's directory URL.
	ACMECA string `envconfig:"ACME_CA" default:"https://acme-v02.api.letsencrypt.org/directory"`
	// ACMECARoots is a PEM file, or the PEM itself, of the roots that sign
	// the CA's own HTTPS certificate (a private or test CA); empty: the
	// system's.
	ACMECARoots string `envconfig:"ACME_CA_ROOTS"`
	// ACMERenewCheck is how often the certificates are checked for renewal
	// (a renewal starts once a third of the lifetime is left).
	ACMERenewCheck Duration `envconfig:"ACME_RENEW_CHECK_INTERVAL" default:"10m"`
}

// LetsEncrypt is ACME_CA's default: Let's Encrypt's production directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// On reports whether the HTTPS listener runs.
func (c FrontDoor) On() bool {
	return c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSCertDir != "" || c.ACME()
}

// ACME reports whether certificates are obtained automatically.
func (c FrontDoor) ACME() bool { return len(c.ACMEDomains) > 0 }

// ACMERoots is the pool ACME_CA_ROOTS names: nil (the system's) when unset.
func (c FrontDoor) ACMERoots() (*x509.CertPool, error) {
	if c.ACMECARoots == "" {
		return nil, nil
	}
	data := []byte(c.ACMECARoots)
	if !strings.HasPrefix(strings.TrimSpace(c.ACMECARoots), "-----BEGIN") {
		if err := readable("ACME_CA_ROOTS", c.ACMECARoots); err != nil {
			return nil, err
		}
		var err error
		if data, err = os.ReadFile(c.ACMECARoots); err != nil {
			return nil, &VarError{Var: "ACME_CA_ROOTS", Err: err}
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, &VarError{Var: "ACME_CA_ROOTS", Err: errors.New("no PEM certificate in it")}
	}
	return pool, nil
}

// validateACME checks the ACME_* variables when ACME is on.
func (c FrontDoor) validateACME() error {
	if !c.ACME() {
		return nil
	}
	seen := map[string]bool{}
	for _, d := range c.ACMEDomains {
		if err := acmeName(d); err != nil {
			return &VarError{Var: "ACME_DOMAINS", Err: fmt.Errorf("%q: %w", d, err)}
		}
		if seen[strings.ToLower(d)] {
			return &VarError{Var: "ACME_DOMAINS", Err: fmt.Errorf("%q: listed twice", d)}
		}
		seen[strings.ToLower(d)] = true
	}
	if c.ACMEEmail != "" {
		if at := strings.IndexByte(c.ACMEEmail, '@'); at < 1 || at == len(c.ACMEEmail)-1 || strings.ContainsAny(c.ACMEEmail, " \t\r\n<>,") {
			return &VarError{Var: "ACME_EMAIL", Err: fmt.Errorf("%q: not an e-mail address", c.ACMEEmail)}
		}
	}
	u, err := url.Parse(c.ACMECA)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return &VarError{Var: "ACME_CA", Err: fmt.Errorf("%q: must be the https:// URL of an ACME directory", c.ACMECA)}
	}
	if _, err := c.ACMERoots(); err != nil {
		return err
	}
	return positive("ACME_RENEW_CHECK_INTERVAL", c.ACMERenewCheck)
}

// acmeName accepts a DNS name that HTTP-01 and TLS-ALPN-01 can prove: no
// wildcard (those need DNS-01), no IP address, no port.
func acmeName(d string) error {
	switch {
	case d == "":
		return errors.New("empty name in list (write a.example.com,b.example.com without spaces)")
	case strings.HasPrefix(d, "*."):
		return errors.New("wildcards need the DNS-01 challenge, which the router does not do")
	case net.ParseIP(d) != nil:
		return errors.New("an IP address, not a DNS name")
	case len(d) > 253:
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q is not a DNS label", label)
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			letter := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
			if !letter && (ch < '0' || ch > '9') && ch != '-' {
				return fmt.Errorf("label %q: only letters, digits and '-' (use the A-label, xn--, of an IDN)", label)
			}
		}
	}
	if !strings.Contains(strings.TrimSuffix(d, "."), ".") {
		return errors.New("not a fully qualified name (a public CA signs none without a dot)")
	}
	return nil
}

// Validate implements Validator. The files themselves are read (and judged)
// when the router starts.
func (c FrontDoor) Validate() error {
	if err := ValidateAddr(c.TLSAddr); err != nil {
		return &VarError{Var: "ROUTER_TLS_ADDR", Err: err}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		if c.TLSCertFile == "" {
			return &VarError{Var: "ROUTER_TLS_CERT_FILE", Err: errors.New("must be set with ROUTER_TLS_KEY_FILE")}
		}
		return &VarError{Var: "ROUTER_TLS_KEY_FILE", Err: errors.New("must be set with ROUTER_TLS_CERT_FILE")}
	}
	if c.MinVersion != "1.2" && c.MinVersion != "1.3" {
		return &VarError{Var: "ROUTER_TLS_MIN_VERSION", Err: fmt.Errorf("%q: must be 1.2 or 1.3", c.MinVersion)}
	}
	if c.HTTPSRedirect && !c.On() {
		return &VarError{Var: "ROUTER_HTTPS_REDIRECT", Err: errors.New("needs the HTTPS listener (ROUTER_TLS_CERT_FILE, ROUTER_TLS_CERT_DIR or ACME_DOMAINS)")}
	}
	if err := c.validateACME(); err != nil {
		return err
	}
	for _, r := range c.HSTS {
		if r < 0x20 || r > 0x7e {
			return &VarError{Var: "ROUTER_HSTS", Err: errors.New("must be printable ASCII (a header value)")}
		}
	}
	return nil
}

// TLSMinVersion is MinVersion as crypto/tls numbers it.
func (c FrontDoor) TLSMinVersion() uint16 {
	if c.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// Standalone is what only the single-process build reads.
type Standalone struct {
	// DataDir holds the embedded JetStream store; empty means a folder under
	// the user's cache dir.
	DataDir string `envconfig:"STANDALONE_DATA_DIR"`
	// NATSListen also exposes the embedded server on this TCP address.
	NATSListen string `envconfig:"NATS_LISTEN"`
	// DemoPort is the first of the three loopback ports of the demo regions
	// (us-east, eu-west, ap-south), started when REGIONAL_ENDPOINTS is empty.
	DemoPort int `envconfig:"STANDALONE_DEMO_PORT" default:"9001"`
}

// Validate implements Validator.
func (c Standalone) Validate() error {
	if c.NATSListen != "" {
		if err := ValidateAddr(c.NATSListen); err != nil {
			return &VarError{Var: "NATS_LISTEN", Err: err}
		}
	}
	if c.DemoPort < 1 || c.DemoPort > 65533 {
		return &VarError{Var: "STANDALONE_DEMO_PORT", Err: errors.New("must be from 1 to 65533")}
	}
	return nil
}
