# Multi-region load balancer. `make run` starts everything in one process;
# `make test` runs every test with the race detector.

SHELL    := /bin/bash
GO       ?= go
BIN      := $(CURDIR)/bin
VERSION  ?= 0.1.0+$(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/mrlb/mrlb/shared/version.Version=$(VERSION)
# Every module of the workspace (go.work), as paths relative to the root.
MODULES  := $(shell $(GO) list -m -f '{{.Dir}}' | sed 's|^$(CURDIR)/||')
PKGS     := $(addsuffix /...,$(addprefix ./,$(MODULES)))
# Each service binary lives in services/<name>/cmd/<name>.
SERVICES := $(notdir $(wildcard services/*/cmd/*))
GOLANGCI := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
NATS_SERVER := github.com/nats-io/nats-server/v2

.PHONY: all build run test test-short lint fmt vet bench clean

all: build

## build: static binaries for every service, standalone and nats-server in bin/
build:
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do \
		echo "build bin/$$s"; \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$s ./services/$$s/cmd/$$s || exit 1; \
	done
	@echo "build bin/standalone"; CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/standalone ./deploy/standalone
	@echo "build bin/nats-server"; cd shared && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/nats-server $(NATS_SERVER)

## run: build and start the whole system in one process (embedded NATS, demo regions)
run: build
	$(BIN)/standalone

## test: every test of every module, with the race detector
test: build
	LB_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 15m $(PKGS)

## test-short: the same without the race detector, for a quick loop
test-short: build
	LB_BIN_DIR=$(BIN) $(GO) test -count=1 -short $(PKGS)

## fmt / vet / lint: formatting, vet and golangci-lint over every module
fmt:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
vet:
	$(GO) vet $(PKGS)
lint: fmt vet
	@for m in $(MODULES); do echo "golangci-lint $$m"; (cd $$m && $(GO) run $(GOLANGCI) run ./...) || exit 1; done

## bench: Go micro-benchmarks and the side-by-side load benchmarks
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	@for b in $(wildcard services/*/bench/run.sh); do echo "== $$b"; bash $$b || exit 1; done

clean:
	rm -rf $(BIN)
