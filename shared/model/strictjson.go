package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// DecodeStrict decodes one JSON value into v the way every API body and
// command is read: unknown fields, trailing data, a key given twice and a key
// whose case differs from the documented name ("Region" for "region") are
// errors. Go's decoder alone accepts the last two silently, so a typo in case
// would be applied as if it were right.
func DecodeStrict(data []byte, v any) error {
	if err := checkKeys(data, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err // the decoder's message is the answer
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// checkKeys rejects, in a top-level JSON object decoded into a struct, keys
// named twice or not exactly as the struct's json names. Other shapes are
// left to the decoder.
func checkKeys(data []byte, v any) error {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil // not a plain struct: its own decoding rules apply
	}
	names := jsonNames(t)
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // not an object: the decoder reports it
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil // malformed: the decoder reports it
		}
		key, _ := tok.(string)
		if seen[key] {
			return fmt.Errorf("field %q is given twice", key)
		}
		seen[key] = true
		if !names[key] {
			for n := range names {
				if strings.EqualFold(n, key) {
					return fmt.Errorf("unknown field %q (did you mean %q?)", key, n)
				}
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil // malformed: the decoder reports it
		}
	}
	return nil
}

var namesCache sync.Map // reflect.Type -> map[string]bool

// jsonNames are the keys encoding/json maps to t's fields.
func jsonNames(t reflect.Type) map[string]bool {
	if m, ok := namesCache.Load(t); ok {
		return m.(map[string]bool)
	}
	m := map[string]bool{}
	addJSONNames(t, m, map[reflect.Type]bool{})
	namesCache.Store(t, m)
	return m
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func addJSONNames(t reflect.Type, m map[string]bool, seen map[reflect.Type]bool) {
	if seen[t] {
		return
	}
	seen[t] = true
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addJSONNames(ft, m, seen)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = true
	}
}
