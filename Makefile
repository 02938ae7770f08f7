# flowpin. `make help` lists the targets.
GO      ?= go
BIN     := bin/flowpin
PKGS    := ./...
# staticcheck release `make lint` installs when missing (2026.2.2 = v0.8.2).
STATICCHECK_VERSION := v0.8.2
# Not $$HOME/go/bin: CI's GOPATH may be elsewhere and not on PATH.
STATICCHECK = $(shell $(GO) env GOPATH)/bin/staticcheck
# Debian tools the integration tests, the demo and the benchmarks use.
DEBS    := nftables conntrack

# Build identity, stamped into the binary (flowpin --version). Overridable
# for builds outside git: make build VERSION=1.2.3 COMMIT=abc...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X flowpin/lb/version.Version=$(VERSION) -X flowpin/lb/version.Commit=$(COMMIT)

.PHONY: help build deps test unit integration demo bench lint clean fuzz

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/flowpin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/flowpin

deps: ## install the Debian tools the tests and the demo need (root)
	@missing=""; for t in nft:nftables conntrack:conntrack; do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

lint: ## gofmt, go vet and staticcheck (installed if missing)
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet $(PKGS)
	@[ -x "$(STATICCHECK)" ] && "$(STATICCHECK)" -version | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	"$(STATICCHECK)" $(PKGS)

unit: ## unit tests only: unprivileged, no namespaces, race detector on
	$(GO) test -short -race $(PKGS)

test: deps lint ## the whole suite: unit and real-kernel integration tests (root), and a short fuzz of each target
	$(GO) test -count=1 -timeout 45m $(PKGS)
	$(call run_fuzz,$(FUZZTIME_TEST))

# Fuzz targets as package:Target. `go test -fuzz` takes one package and one
# target at a time, so they run one after another. A crash is written to
# the package's testdata/fuzz and from then on runs as a plain test.
FUZZ_TARGETS  := lb/config:FuzzParse nft/ct:FuzzDecodeFlow nft/ct:FuzzDecodeBatch
FUZZTIME      ?= 60s
FUZZTIME_TEST ?= 10s
define run_fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(1)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(1) -fuzzminimizetime 5s ./$${t%%:*}; \
	done
endef

fuzz: ## run each fuzz target for FUZZTIME (60s)
	$(call run_fuzz,$(FUZZTIME))

demo: deps build ## dual-WAN sandbox in network namespaces, flowpin working there
	bash scripts/demo.sh $(BIN)

bench: deps build ## benchmarks, printed as tables (apply time vs a shell script, ...)
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m ./integration/

clean: ## remove build output
	rm -rf bin
