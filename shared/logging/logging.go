// Package logging sets up the JSON slog logger every service writes with.
package logging

import (
	"io"
	"log/slog"
	"os"
)

// New returns a JSON logger at level tagged with the service name, and makes
// it the process default so library code that logs through slog agrees.
func New(service string, level slog.Level) *slog.Logger {
	return NewTo(os.Stderr, service, level)
}

// NewTo is New writing to w.
func NewTo(w io.Writer, service string, level slog.Level) *slog.Logger {
	l := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("service", service)
	slog.SetDefault(l)
	return l
}

// Discard is a logger that writes nothing, for tests that do not read logs.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
