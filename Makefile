# flowpin. `make help` lists the targets.
GO      ?= go
BIN     := bin/flowpin
PKGS    := ./...
# staticcheck release `make lint` installs when missing (2026.2.2 = v0.8.2).
STATICCHECK_VERSION := v0.8.2
# Not $$HOME/go/bin: CI's GOPATH may be elsewhere and not on PATH.
STATICCHECK = $(shell $(GO) env GOPATH)/bin/staticcheck
# Debian tools the integration tests, the demo and the benchmarks use.
DEBS    := nftables conntrack socat procps netsniff-ng dnsmasq-base keepalived conntrackd

# Build identity, stamped into the binary (flowpin --version). Overridable
# for builds outside git: make build VERSION=1.2.3 COMMIT=abc...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X flowpin/lb/version.Version=$(VERSION) -X flowpin/lb/version.Commit=$(COMMIT)

.PHONY: help build deps deb-deps browser-deps test unit integration demo bench lint clean fuzz deb

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/flowpin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/flowpin

# Debian's keepalived and conntrackd packages start host services when
# installed; the tests and the demo run their own, in namespaces. So while
# apt-get runs, a policy-rc.d (invoke-rc.d's hook, see policy-rc.d(8))
# says no to every service start, unless the host has its own.
deps: ## install the Debian tools the tests and the demo need (root)
	@missing=""; for t in nft:nftables conntrack:conntrack socat:socat sysctl:procps trafgen:netsniff-ng dnsmasq:dnsmasq-base keepalived:keepalived conntrackd:conntrackd; do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		norc=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && norc=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
		if [ -n "$$norc" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
		exit $$rc; \
	fi
	$(GO) mod download

# The Debian package (make deb). nfpm is goreleaser's packager, pinned.
DIST         ?= dist
DEB_ARCHES   ?= amd64 arm64
NFPM_VERSION := v2.45.0
NFPM          = $(shell $(GO) env GOPATH)/bin/nfpm
# The package version, from git describe (see the script).
DEB_VERSION  ?= $(shell sh scripts/deb-version.sh '$(VERSION)')
# Dates in the package (file times, man pages, changelog): the commit's, so
# a rebuild of the same commit is the same package.
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

deb-deps: ## install what make deb and its test need: lintian, systemd-analyze, nfpm (root)
	@missing=""; for t in lintian:lintian dpkg-deb:dpkg systemd-analyze:systemd gzip:gzip; do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@[ -x "$(NFPM)" ] && $(GO) version -m "$(NFPM)" | grep -Eq '^\s+mod\s+github.com/goreleaser/nfpm/v2\s+$(NFPM_VERSION)\s' || \
		$(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

browser-deps: ## install headless Chromium for the status page's browser test (root)
	@command -v chromium >/dev/null 2>&1 || { echo "installing: chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

deb: deb-deps build ## build $(DIST)/flowpin_VERSION_ARCH.deb for amd64 and arm64
	rm -rf $(DIST)/.stage && mkdir -p $(DIST)/.stage/common/examples
	$(BIN) gen-docs $(DIST)/.stage/common
	gzip -9n $(DIST)/.stage/common/man8/*.8
	cp examples/*.yaml examples/*.txt examples/grafana-dashboard.json $(DIST)/.stage/common/examples/
	cp -p packaging/nfpm.yaml packaging/copyright packaging/postinst packaging/prerm packaging/lintian-overrides $(DIST)/.stage/common/
	@# The example unit runs /usr/local/sbin/flowpin; the package's is in
	@# /usr/sbin and waits for a config before it starts.
	sed -e 's|/usr/local/sbin/flowpin|/usr/sbin/flowpin|g' \
		-e 's|^# /etc/systemd/system/flowpin.service|# /usr/lib/systemd/system/flowpin.service (flowpin package)|' \
		-e '/^\[Unit\]/a ConditionPathExists=/etc/flowpin/flowpin.yaml' \
		examples/flowpin.service > $(DIST)/.stage/common/flowpin.service
	printf 'flowpin (%s) unstable; urgency=medium\n\n  * Built from %s (commit %s).\n\n -- flowpin maintainers <flowpin@example.invalid>  %s\n' \
		'$(DEB_VERSION)' '$(VERSION)' '$(COMMIT)' "$$(date -u -R -d @$$SOURCE_DATE_EPOCH)" | gzip -9n > $(DIST)/.stage/common/changelog.gz
	@set -e; for arch in $(DEB_ARCHES); do \
		stage=$(DIST)/.stage/$$arch; cp -r $(DIST)/.stage/common $$stage; \
		echo "build linux/$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$stage/flowpin ./cmd/flowpin; \
		(cd $$stage && GOARCH=$$arch DEB_VERSION='$(DEB_VERSION)' \
			"$(NFPM)" package -f nfpm.yaml -p deb -t $(abspath $(DIST))/flowpin_$(DEB_VERSION)_$$arch.deb); \
	done
	rm -rf $(DIST)/.stage

lint: ## gofmt, go vet and staticcheck (installed if missing)
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet $(PKGS)
	@[ -x "$(STATICCHECK)" ] && "$(STATICCHECK)" -version | grep -q '($(STATICCHECK_VERSION:v%=%))' || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	"$(STATICCHECK)" $(PKGS)

unit: ## unit tests only: unprivileged, no namespaces, race detector on
	$(GO) test -short -race $(PKGS)

test: deps deb-deps browser-deps lint ## the whole suite: unit and real-kernel integration tests (root), and a short fuzz of each target
	$(GO) test -count=1 -timeout 45m $(PKGS)
	$(call run_fuzz,$(FUZZTIME_TEST))

# Fuzz targets as package:Target. `go test -fuzz` takes one package and one
# target at a time, so they run one after another. A crash is written to
# the package's testdata/fuzz and from then on runs as a plain test.
FUZZ_TARGETS  := lb/config:FuzzParse lb/config:FuzzAssign lb/config:FuzzParseSetFile nft:FuzzDecodeRecords nft/ct:FuzzDecodeFlow nft/ct:FuzzDecodeBatch \
                 nft/ct:FuzzAppendEvents rules:FuzzParseAnswer
# Budgets are counts of executions, not durations: with a duration, Go's
# fuzz coordinator (go1.26) can report "context deadline exceeded" as a
# failure at the deadline with no crasher (https://go.dev/issue/75804).
# 40000x is about 10 s for the slowest target (FuzzParse) on 2 cores.
FUZZTIME      ?= 250000x
FUZZTIME_TEST ?= 40000x
define run_fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(1)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(1) -fuzzminimizetime 5s ./$${t%%:*}; \
	done
endef

fuzz: ## run each fuzz target for FUZZTIME executions (250000x)
	$(call run_fuzz,$(FUZZTIME))

demo: deps build ## dual-WAN sandbox in network namespaces, flowpin working there
	bash scripts/demo.sh $(BIN)

bench: deps build ## benchmarks, printed as tables (apply time vs a shell script, forwarded packet rate vs a bare NAT router, ...)
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m ./integration/

clean: ## remove build output
	rm -rf bin $(DIST)
