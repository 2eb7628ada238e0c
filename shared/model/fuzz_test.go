package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mrlb/mrlb/shared/model"
)

// FuzzParseEndpoints checks that ParseEndpoints never panics, that every
// error is a typed 400, and that whatever it accepts satisfies the
// validation rules and parses again to the same result.
func FuzzParseEndpoints(f *testing.F) {
	for _, s := range []string{
		"",
		" ",
		",",
		"us-east:http://127.0.0.1:9001",
		"us-east:http://127.0.0.1:9001,eu-west:http://127.0.0.1:9002,ap-south:http://127.0.0.1:9003",
		" a : https://example.com/prefix , b:https://[2001:db8::1]:8443 ",
		"a:http://localhost:8080,a:http://localhost:8081",
		"a:http://10.0.0.1",
		"a:https://u:p@h",
		"a:https://h/?q=1#f",
		"US:http://127.0.0.1",
		"a",
		":",
		"a:",
		":http://127.0.0.1",
		"a:b:c:d",
		"a:http://[::1]:9000/x:y",
		"a:http://127.0.0.1:99999",
		"a:ftp://127.0.0.1",
		"a:\x00http://127.0.0.1",
		"é:http://127.0.0.1",
		strings.Repeat("a", 63) + ":https://h",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowPlaintext bool) {
		eps, err := model.ParseEndpoints(s, allowPlaintext)
		if err != nil {
			var e *model.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Code == "" {
				t.Fatalf("ParseEndpoints(%q) error %v is not a typed 400", s, err)
			}
			if eps != nil {
				t.Fatalf("ParseEndpoints(%q) returned %v with an error", s, eps)
			}
			return
		}
		if strings.TrimSpace(s) == "" && eps != nil {
			t.Fatalf("blank input gave %v", eps)
		}
		if len(eps) > strings.Count(s, ",")+1 {
			t.Fatalf("more endpoints (%d) than entries in %q", len(eps), s)
		}
		seen := map[string]bool{}
		parts := make([]string, 0, len(eps))
		for _, ep := range eps {
			if err := model.ValidateRegionName(ep.Region); err != nil {
				t.Fatalf("accepted bad region %q from %q: %v", ep.Region, s, err)
			}
			if err := model.ValidateEndpoint(ep.Endpoint, allowPlaintext); err != nil {
				t.Fatalf("accepted bad endpoint %q from %q: %v", ep.Endpoint, s, err)
			}
			if !allowPlaintext {
				if err := model.ValidateEndpoint(ep.Endpoint, true); err != nil {
					t.Fatalf("endpoint %q valid without plaintext but not with it: %v", ep.Endpoint, err)
				}
			}
			if ep.Endpoint != strings.TrimSpace(ep.Endpoint) || strings.Contains(ep.Endpoint, ",") {
				t.Fatalf("endpoint %q not trimmed or contains a comma", ep.Endpoint)
			}
			if !strings.HasPrefix(ep.Endpoint, "http://") && !strings.HasPrefix(ep.Endpoint, "https://") &&
				!strings.HasPrefix(strings.ToLower(ep.Endpoint), "http") {
				t.Fatalf("endpoint %q is not http(s)", ep.Endpoint)
			}
			if seen[ep.Region] {
				t.Fatalf("duplicate region %q accepted from %q", ep.Region, s)
			}
			seen[ep.Region] = true
			if !strings.Contains(s, ep.Region) || !strings.Contains(s, ep.Endpoint) {
				t.Fatalf("%v is not taken from %q", ep, s)
			}
			parts = append(parts, ep.Region+":"+ep.Endpoint)
		}
		// The canonical form parses to the same result.
		again, err := model.ParseEndpoints(strings.Join(parts, ","), allowPlaintext)
		if err != nil {
			t.Fatalf("canonical form of %q does not parse: %v", s, err)
		}
		if len(again) != len(eps) {
			t.Fatalf("round trip of %q: %v != %v", s, again, eps)
		}
		for i := range eps {
			if again[i] != eps[i] {
				t.Fatalf("round trip of %q: %v != %v", s, again, eps)
			}
		}
	})
}
