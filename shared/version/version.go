// Package version carries the build's version, so every service, the micro
// endpoints and the API report the same one.
package version

// Version is a SemVer (the nats.go micro framework insists on one); the
// Makefile appends the commit as build metadata with -ldflags.
var Version = "0.1.0"
