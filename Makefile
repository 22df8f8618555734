# postgate — `make check` is the one command that runs every test (CI runs it
# through .ci/run). `make run` starts the daemon with the embedded defaults.

SHELL     := /bin/bash
GO        ?= go
PKGS      := ./...
# The patched libraries under third_party/ (go.mod replaces them) are tested
# and vetted with the rest: their own tests plus the ones for the patches.
FORKED    := github.com/emersion/go-milter github.com/emersion/go-msgauth/dkim github.com/emersion/go-msgauth/authres
# Counted, not timed: Go 1.26 reports a spurious "context deadline exceeded"
# when a timed -fuzztime ends while a worker is busy (golang/go#75804).
FUZZTIME  ?= 20000x
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X postgate/internal/version.Version=$(VERSION)
# RSA signing (DKIM) is ~2x faster with BoringCrypto than with Go's own
# constant-time RSA (docs/performance.md); it ships with Go and needs cgo.
# Everything -- daemon, tests, benchmarks -- uses the same crypto.
# `make GOEXPERIMENT= ...` builds with pure Go crypto.
GOEXPERIMENT ?= boringcrypto
export GOEXPERIMENT
export CGO_ENABLED := 1

.PHONY: all build run check deps fmt-check vet test fuzz e2e bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/postgate ./cmd/postgate
	$(GO) build -o bin/policyload ./cmd/policyload

# Runs on a fresh machine with no config file and no root: loopback listeners,
# state under ./postgate-state, DNS servers from /etc/resolv.conf.
run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/postgate serve

check: deps fmt-check vet test fuzz e2e
	@echo "make check: all steps passed"

# The Debian packages the tests use (as root; otherwise it lists what is missing).
deps:
	@bash tests/install-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS) $(FORKED)

test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS) $(FORKED)

# Every fuzz target runs for FUZZTIME (go test allows one -fuzz target per run).
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir=$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz $$dir $$t ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$dir > /tmp/postgate-fuzz.log 2>&1 || { cat /tmp/postgate-fuzz.log; exit 1; }; \
		done; \
	done

# End-to-end tests against a private Postfix instance, real DNS and DKIM tools.
e2e: deps
	@if [ -d tests/e2e ]; then $(GO) test -count=1 -timeout 10m -v ./tests/e2e/ 2>&1 | tee /tmp/postgate-e2e.log | grep -E '^(PASS|FAIL|SKIP|ok|---|[0-9]+ passed)' ; test $${PIPESTATUS[0]} -eq 0; else echo "e2e: no tests/e2e yet"; fi

bench:
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

clean:
	rm -rf bin postgate-state
