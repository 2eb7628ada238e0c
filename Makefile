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
# Fuzz targets of the router's parser (services/router/proxy/head_fuzz_test.go)
# and how long make test runs each.
FUZZ_TARGETS := FuzzParseRequest FuzzParseResponse FuzzChunkScanner
FUZZ_TIME    ?= 15s

.PHONY: all build pebble run test test-short lint fmt vet check-mods tidy-mods bench clean images test-e2e e2e-clean compose-up compose-down

# Small tools in deploy/standalone/cmd: a demo region server, the container
# healthcheck probe, and an event subscriber (all go into the images too).
TOOLS    := demoregion healthprobe natssub
# Docker images: `make images` packs the static binaries of `make build` into
# FROM scratch images (deploy/docker/Dockerfile.offline), offline.
IMAGE_PREFIX ?= mrlb
IMAGE_TAG    ?= latest
IMAGES       := nats-server $(SERVICES) standalone demoregion natssub
CA_BUNDLE    ?= /etc/ssl/certs/ca-certificates.crt
DOCKER       ?= docker
# The e2e test's docker client must not ask for a newer API than the engine's.
DOCKER_API_VERSION ?= $(shell $(DOCKER) version --format '{{.Server.APIVersion}}' 2>/dev/null)

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
	@for t in $(TOOLS); do \
		echo "build bin/$$t"; \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$t ./deploy/standalone/cmd/$$t || exit 1; \
	done

## run: build and start the whole system in one process (embedded NATS, demo regions)
run: build
	$(BIN)/standalone

## pebble: Let's Encrypt's ACME test server for the ACME tests, built from
## deploy/tools (its own module, outside the workspace: its dependencies never
## touch the versions the services build with)
pebble:
	@mkdir -p $(BIN)
	@echo "build bin/pebble (test tool)"; cd deploy/tools && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/pebble github.com/letsencrypt/pebble/v2/cmd/pebble

## test: every test of every module, with the race detector
test: build pebble
	LB_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 15m $(PKGS)
	# Allocation tests need sync.Pool as it is without the race detector, and
	# so do the 10,000-connection burst and slow-client tests (too slow with it).
	$(GO) test -count=1 -run 'AllocatesNothing|Hostile(Burst|SlowClients)10000' ./services/router/...
	# Differential fuzzing of the router's own HTTP/1.1 parser, a short bounded
	# run each (the checked-in corpus runs in every go test above).
	@for f in $(FUZZ_TARGETS); do \
		echo "fuzz $$f ($(FUZZ_TIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) ./services/router/proxy/ || exit 1; \
	done
	# The proxy suite again with the event loop off: the fasthttp path alone
	# (what ROUTER_EVENT_LOOP=false and non-Linux hosts run).
	ROUTER_TEST_EVENT_LOOP=false $(GO) test -race -count=1 ./services/router/proxy/

## test-short: the same without the race detector, for a quick loop
test-short: build
	LB_BIN_DIR=$(BIN) $(GO) test -count=1 -short $(PKGS)

## fmt / vet / lint: formatting, vet and golangci-lint over every module
fmt:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
vet:
	$(GO) vet $(PKGS)
lint: fmt vet
	@lint=$$(command -v golangci-lint || echo "$(GO) run $(GOLANGCI)"); fail=; \
	for m in $(MODULES); do echo "golangci-lint $$m"; (cd $$m && $$lint run ./...) || fail="$$fail $$m"; done; \
	if [ -n "$$fail" ]; then echo "lint: golangci-lint found problems in:$$fail"; exit 1; fi

## check-mods: fail if `go work sync` or `go mod tidy` would change a module's
## go.mod/go.sum, or if a module on its own (GOWORK=off) would select other
## dependency versions than the workspace the tests and `make build` use.
## Changes nothing (go work sync runs on a copy); `make tidy-mods` fixes.
check-mods:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; fail=; \
	cp go.work go.work.sum $$tmp/ || exit 1; \
	for m in $(MODULES); do mkdir -p $$tmp/$$m && cp -R $$m/. $$tmp/$$m/ || exit 1; done; \
	(cd $$tmp && $(GO) work sync) || { echo "check-mods: go work sync failed"; exit 1; }; \
	for m in $(MODULES); do \
		for f in go.mod go.sum; do \
			diff -u --label "$$m/$$f" --label "$$m/$$f (after go work sync)" $$m/$$f $$tmp/$$m/$$f || \
				{ echo "check-mods: $$m/$$f is out of step with the workspace: go work sync changes it (diff above)"; fail="$$fail $$m"; }; \
		done; \
		(cd $$m && $(GO) mod tidy -diff) || \
			{ echo "check-mods: $$m: go mod tidy would change go.mod/go.sum (diff above)"; fail="$$fail $$m"; }; \
		tmpl='{{with .Module}}{{if not (or .Main (and .Replace (not .Replace.Version)))}}{{.Path}} {{.Version}}{{end}}{{end}}'; \
		ws=$$(cd $$m && $(GO) list -e -deps -test -f "$$tmpl" ./... | sort -u); \
		off=$$(cd $$m && GOWORK=off $(GO) list -e -deps -test -f "$$tmpl" ./... | sort -u); \
		[ "$$ws" = "$$off" ] || { diff -u --label "$$m (workspace)" --label "$$m (GOWORK=off)" <(echo "$$ws") <(echo "$$off"); \
			echo "check-mods: $$m: GOWORK=off selects other dependency versions than the workspace (diff above)"; fail="$$fail $$m"; }; \
	done; \
	if [ -n "$$fail" ]; then echo "check-mods: out of step:$$(printf ' %s\n' $$fail | sort -u | tr '\n' ' ')-- run make tidy-mods and commit the result"; exit 1; fi; \
	echo "check-mods: every go.mod/go.sum is tidy and in step with go.work"

## tidy-mods: go work sync, then go mod tidy in every module (what check-mods wants)
tidy-mods:
	$(GO) work sync
	@for m in $(MODULES); do echo "go mod tidy in $$m"; (cd $$m && $(GO) mod tidy) || exit 1; done

## bench: Go micro-benchmarks and the side-by-side load benchmarks
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	@for b in $(wildcard services/*/bench/run.sh); do echo "== $$b"; bash $$b || exit 1; done

## images: offline FROM scratch images of every binary (mrlb/<name>:latest), nothing pulled
images: build
	@test -r $(CA_BUNDLE) || { echo "no CA bundle at $(CA_BUNDLE) (set CA_BUNDLE=...)"; exit 1; }
	@for i in $(IMAGES); do \
		ctx=$(BIN)/.images/$$i; rm -rf $$ctx; mkdir -p $$ctx/data $$ctx/tmp $$ctx/nats || exit 1; \
		cp $(BIN)/$$i $$ctx/$$i && cp $(BIN)/healthprobe $$ctx/healthprobe && \
		cp $(CA_BUNDLE) $$ctx/ca-certificates.crt && cp deploy/nats/*.conf $$ctx/nats/ && \
		chmod 1777 $$ctx/tmp || exit 1; \
		for b in $$i healthprobe; do \
			$(GO) version -m $$ctx/$$b | grep -q 'CGO_ENABLED=0' || { \
				echo "bin/$$b is not a static CGO_ENABLED=0 build and cannot run FROM scratch (rebuilt outside make build?): run make build"; exit 1; }; \
		done; \
		echo "image $(IMAGE_PREFIX)/$$i:$(IMAGE_TAG)"; \
		$(DOCKER) build -q -f deploy/docker/Dockerfile.offline --build-arg BIN=$$i \
			--label org.opencontainers.image.version=$(VERSION) \
			-t $(IMAGE_PREFIX)/$$i:$(IMAGE_TAG) $$ctx >/dev/null || exit 1; \
	done
	@rm -rf $(BIN)/.images

## test-e2e: the testcontainers-go test of the images (needs `make images` and a Docker engine)
test-e2e: images
	cd deploy/e2e && TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 DOCKER_API_VERSION=$(DOCKER_API_VERSION) \
		MRLB_IMAGE_PREFIX=$(IMAGE_PREFIX) MRLB_IMAGE_TAG=$(IMAGE_TAG) \
		$(GO) test -tags e2e -count=1 -timeout 20m -v -run 'TestCompose' .

## e2e-clean: remove containers and networks an interrupted e2e run left behind
e2e-clean:
	-$(DOCKER) ps -aq --filter label=mrlb.e2e=true | xargs -r $(DOCKER) rm -f
	-$(DOCKER) network ls -q --filter label=mrlb.e2e=true | xargs -r $(DOCKER) network rm

## compose-up / compose-down: the compose.yaml stack from the offline images
compose-up: images
	docker-compose up -d
compose-down:
	docker-compose down -v

clean:
	rm -rf $(BIN)
