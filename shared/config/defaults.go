package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// decoder is envconfig's Decoder, for the custom types of this package.
type decoder interface {
	Decode(value string) error
}

// Defaults fills every field of *spec that has a `default` tag with that
// default, the same values Load would use when the environment is empty.
// Services call it in DefaultConfig so a config built in code (tests,
// standalone) starts valid. It panics on a tag that does not parse, which is
// a programming error caught by any test.
func Defaults(spec any) {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("config.Defaults: spec must be a pointer to a struct")
	}
	setDefaults(v.Elem())
}

func setDefaults(s reflect.Value) {
	t := s.Type()
	for i := range t.NumField() {
		f, sf := s.Field(i), t.Field(i)
		if !sf.IsExported() {
			continue
		}
		def, ok := sf.Tag.Lookup("default")
		if !ok {
			if f.Kind() == reflect.Struct {
				setDefaults(f)
			}
			continue
		}
		if err := setValue(f, def); err != nil {
			panic(fmt.Sprintf("config.Defaults: field %s default %q: %v", sf.Name, def, err))
		}
	}
}

func setValue(f reflect.Value, s string) error {
	if d, ok := f.Addr().Interface().(decoder); ok {
		return d.Decode(s)
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Float64, reflect.Float32:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		f.SetFloat(x)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported slice type %s", f.Type())
		}
		f.Set(reflect.ValueOf(strings.Split(s, ",")))
	default:
		return fmt.Errorf("unsupported kind %s", f.Kind())
	}
	return nil
}
