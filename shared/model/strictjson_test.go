package model

import (
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	type inner struct {
		Zone string `json:"zone"`
	}
	type body struct {
		inner
		Region string  `json:"region"`
		Weight *int    `json:"weight,omitempty"`
		Note   string  `json:"-"`
		Plain  float64 // no tag: the Go name is the key
	}
	cases := []struct {
		in      string
		wantErr string
	}{
		{`{"region":"eu","weight":3,"zone":"a","Plain":1}`, ""},
		{`{}`, ""},
		{`{"Region":"eu"}`, `unknown field "Region" (did you mean "region"?)`},
		{`{"region":"eu","WEIGHT":1}`, `unknown field "WEIGHT"`},
		{`{"plain":1}`, `unknown field "plain"`},
		{`{"region":"eu","region":"us"}`, `field "region" is given twice`},
		{`{"region":"eu","other":1}`, `unknown field "other"`},
		{`{"Note":"x"}`, `unknown field "Note"`},
		{`{"region":"eu"} {}`, "unexpected data after the JSON value"},
		{`{"region":"eu"`, "unexpected EOF"},
		{`[1]`, "cannot unmarshal array"},
		{`{"region":5}`, "cannot unmarshal number"},
	}
	for _, c := range cases {
		var b body
		err := DecodeStrict([]byte(c.in), &b)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.in, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", c.in, err, c.wantErr)
		}
	}
	var b body
	if err := DecodeStrict([]byte(`{"region":"eu","weight":3,"zone":"a"}`), &b); err != nil || b.Region != "eu" || *b.Weight != 3 || b.Zone != "a" {
		t.Fatalf("decoded %+v, %v", b, err)
	}
	var m map[string]any // not a struct: only the decoder's own checks
	if err := DecodeStrict([]byte(`{"A":1,"a":2}`), &m); err != nil {
		t.Fatalf("map: %v", err)
	}
}
