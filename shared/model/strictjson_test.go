package model

import (
	"encoding/json"
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
	var own ownDecoding // its own UnmarshalJSON decides which keys it takes
	if err := DecodeStrict([]byte(`{"VALUE":"x"}`), &own); err != nil || own.Value != "x" {
		t.Fatalf("own UnmarshalJSON: %+v %v", own, err)
	}
	var rec recursive // embeds a pointer to itself
	if err := DecodeStrict([]byte(`{"name":"a"}`), &rec); err != nil || rec.Name != "a" {
		t.Fatalf("recursive: %+v %v", rec, err)
	}
	var m map[string]any // not a struct: only the decoder's own checks
	if err := DecodeStrict([]byte(`{"A":1,"a":2}`), &m); err != nil {
		t.Fatalf("map: %v", err)
	}
}

type ownDecoding struct {
	Value string `json:"value"`
}

func (o *ownDecoding) UnmarshalJSON(b []byte) error {
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	o.Value = raw["VALUE"]
	return nil
}

type recursive struct {
	*recursive        //nolint:unused // the self-embedding is what is tested
	Name       string `json:"name"`
}
