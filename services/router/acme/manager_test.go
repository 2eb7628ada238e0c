package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mrlb/mrlb/shared/model"
)

// certmagic's events become ours: an issue (new or renewal) and a failure
// with its reason; the rest are not events.
func TestOnEvent(t *testing.T) {
	var got []model.Event
	changed := 0
	m := New(Options{Domains: []string{"Shop.Example.com."}, ID: "r1", Log: slog.New(slog.DiscardHandler),
		OnEvent: func(e model.Event) { got = append(got, e) }, OnChange: func() { changed++ }})
	ctx := context.Background()
	_ = m.onEvent(ctx, "cert_obtained", map[string]any{"identifier": "shop.example.com", "renewal": false})
	_ = m.onEvent(ctx, "cert_obtained", map[string]any{"identifier": "shop.example.com", "renewal": true})
	_ = m.onEvent(ctx, "cert_failed", map[string]any{"identifier": "shop.example.com", "error": errors.New("rate limited")})
	_ = m.onEvent(ctx, "cert_obtaining", map[string]any{"identifier": "shop.example.com"})
	_ = m.onEvent(ctx, "cached_managed_cert", map[string]any{"sans": []string{"shop.example.com"}})
	want := []struct{ typ, reason string }{
		{model.EventTLSCertificateIssued, "new"},
		{model.EventTLSCertificateIssued, "renewal"},
		{model.EventTLSCertificateFailed, "rate limited"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if e.Type != w.typ || e.Reason != w.reason || e.RouterID != "r1" || len(e.Names) != 1 || e.Names[0] != "shop.example.com" || e.At.IsZero() {
			t.Errorf("event %d: %+v, want %s %q", i, e, w.typ, w.reason)
		}
	}
	if changed != 1 {
		t.Errorf("OnChange ran %d times, want once (cached_managed_cert)", changed)
	}
}

// Before Run (NATS not there yet) nothing is served from ACME: the caller
// falls back to its files, and HTTP-01 paths are proxied.
func TestManagerBeforeRun(t *testing.T) {
	m := New(Options{Domains: []string{"shop.example.com"}})
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "shop.example.com"})
	if c != nil || err != nil {
		t.Fatalf("GetCertificate before Run: %v %v, want nil nil", c, err)
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/.well-known/acme-challenge/tok")
	ctx.Request.Header.SetHost("shop.example.com")
	if m.ServeHTTPChallenge(&ctx) {
		t.Fatal("a challenge answered before Run")
	}
	if m.Certificates() != nil {
		t.Fatal("certificates before Run")
	}
	if !isChallengeHello(&tls.ClientHelloInfo{SupportedProtos: []string{"acme-tls/1"}}) ||
		isChallengeHello(&tls.ClientHelloInfo{SupportedProtos: []string{"h2", "acme-tls/1"}}) {
		t.Fatal("isChallengeHello: acme-tls/1 alone, per RFC 8737")
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{"a.example": "a.example", "a.example:80": "a.example", "[::1]:80": "[::1]", "[::1]": "[::1]"} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// certmagic's zap lines come out as our JSON lines, fields and levels kept.
func TestZapLoggerToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := zapLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Debug("hidden")
	log.Named("obtain").With(zap.String("identifier", "shop.example.com")).Warn("will retry", zap.Int("attempt", 2))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("lines %q: want the warning only", lines)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["level"] != "WARN" || rec["msg"] != "will retry" || rec["identifier"] != "shop.example.com" || rec["attempt"] != float64(2) || rec["logger"] != "obtain" {
		t.Fatalf("record %v", rec)
	}
}
