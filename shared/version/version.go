// Package version carries the build's version, set by the Makefile with
// -ldflags, so every service and the API report the same one.
package version

// Version is the build's version ("dev" for go run and tests).
var Version = "dev"
