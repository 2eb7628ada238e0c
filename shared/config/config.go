// Package config is the one loader of the contract's environment variables:
// it reads .env, decodes with envconfig, validates, and reports a bad value
// with the variable's name so that main can exit with status 2.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
	"github.com/kelseyhightower/envconfig"
)

// ExitCode is the status a process exits with on a bad configuration.
const ExitCode = 2

// VarError names the environment variable whose value is wrong.
type VarError struct {
	Var string
	Err error
}

func (e *VarError) Error() string { return fmt.Sprintf("invalid %s: %v", e.Var, e.Err) }

func (e *VarError) Unwrap() error { return e.Err }

// Validator is implemented by every config part; Load calls it after decoding.
type Validator interface {
	Validate() error
}

// Load reads .env from the working directory (real environment variables win),
// decodes the environment into cfg (a pointer to a struct that embeds the parts
// of this package) and validates it. Fields without a default tag keep the
// value they had, so callers preset per-service defaults.
func Load(cfg Validator) error {
	if err := loadDotEnv(".env"); err != nil {
		return err
	}
	if err := envconfig.Process("", cfg); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return &VarError{Var: pe.KeyName, Err: fmt.Errorf("%q: %w", pe.Value, unwrapParse(pe.Err))}
		}
		return fmt.Errorf("config: %w", err)
	}
	return cfg.Validate()
}

// MustLoad is Load for main: on error it prints the reason to stderr and
// exits with ExitCode.
func MustLoad(cfg Validator) {
	if err := Load(cfg); err != nil {
		Exit(os.Stderr, err)
	}
}

// Exit prints a configuration error and ends the process with ExitCode.
func Exit(w io.Writer, err error) {
	_, _ = fmt.Fprintf(w, "configuration error: %v\n", err)
	os.Exit(ExitCode)
}

func unwrapParse(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

func loadDotEnv(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := godotenv.Load(path); err != nil {
		return &VarError{Var: ".env", Err: err}
	}
	return nil
}

// Duration accepts a bare number of seconds ("30", "0.5") or a Go duration
// ("500ms", "1m30s"), as the contract's interval variables do.
type Duration time.Duration

// Decode implements envconfig.Decoder.
func (d *Duration) Decode(value string) error {
	v, err := ParseDuration(value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration parses a bare number of seconds or a Go duration.
func ParseDuration(value string) (time.Duration, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, errors.New("empty duration")
	}
	if f, err := strconv.ParseFloat(value, 64); err == nil {
		if f != f || f > float64(1<<62)/float64(time.Second) || f < -float64(1<<62)/float64(time.Second) {
			return 0, errors.New("duration out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(value)
	if err != nil {
		return 0, errors.New("neither a number of seconds nor a Go duration like 500ms")
	}
	return d, nil
}

func positive(name string, d Duration) error {
	if d <= 0 {
		return &VarError{Var: name, Err: errors.New("must be greater than zero")}
	}
	return nil
}

// All validates each part in order and returns the first error; service
// configs use it in their Validate.
func All(parts ...Validator) error {
	for _, p := range parts {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return nil
}
