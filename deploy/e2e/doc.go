// Package e2e holds the whole-system tests: a multi-process test of the real
// bin/* binaries and bin/nats-server (part of make test), and, behind the e2e
// build tag, a testcontainers-go test of the Docker images (make test-e2e).
package e2e
