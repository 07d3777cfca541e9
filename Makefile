# overlayd: the two commands a newcomer needs are `make demo` and `make test`.
GO       ?= go
BIN      := bin
PKGS     := ./...
# The integration tests build emulated hosts in network namespaces: they need
# root, and skip with a reason without it.
TESTFLAGS ?= -count=1 -timeout 20m
# `overlayd version` says what git says of the tree it was built from.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)

# make install [PREFIX=/usr/local] [DESTDIR=]: overlayd on the PATH, its
# systemd unit, a docker.service drop-in that feeds dockerd the overlay's
# options, and /etc/default/overlayd for the flags (kept if present).
# overlayd-lab is a test and benchmark harness: not installed.
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
UNITDIR  ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
DROPINDIR ?= $(SYSCONFDIR)/systemd/system/docker.service.d
# The dockerd the drop-in runs: this host's, else docker-ce's path.
DOCKERD  ?= $(shell command -v dockerd 2>/dev/null || echo /usr/bin/dockerd)
SYSTEMD  := cmd/overlayd/systemd

.PHONY: all build demo bench bench-quick test test-unit vet lint fuzz clean install uninstall

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/overlayd ./cmd/overlayd
	$(GO) build -o $(BIN)/overlayd-lab ./cmd/overlayd-lab

install:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/overlayd ./cmd/overlayd
	install -D -m 0755 $(BIN)/overlayd $(DESTDIR)$(BINDIR)/overlayd
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DROPINDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' $(SYSTEMD)/overlayd.service.in >$(DESTDIR)$(UNITDIR)/overlayd.service
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCKERD@|$(DOCKERD)|g' $(SYSTEMD)/docker-overlayd.conf.in >$(DESTDIR)$(DROPINDIR)/overlayd.conf
	chmod 0644 $(DESTDIR)$(UNITDIR)/overlayd.service $(DESTDIR)$(DROPINDIR)/overlayd.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/default/overlayd || install -D -m 0644 $(SYSTEMD)/overlayd.default $(DESTDIR)$(SYSCONFDIR)/default/overlayd
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	  echo "next: edit /etc/default/overlayd, then systemctl enable --now overlayd && systemctl restart docker"; fi

# Leaves /etc/default/overlayd, which holds the operator's settings.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/overlayd $(DESTDIR)$(UNITDIR)/overlayd.service $(DESTDIR)$(DROPINDIR)/overlayd.conf

# Emulated hosts in network namespaces, an embedded etcd, overlayd on each
# host, container-to-container ping and a TCP transfer, a short report.
demo: build
	$(BIN)/overlayd-lab demo --overlayd $(BIN)/overlayd

# overlayd against the kernel (host-gw, kernel VXLAN) on the same emulated
# hosts: throughput with iperf3 (installed if missing), latency with
# overlayd-lab rr (TCP_RR, UDP_RR) and ping, the TCP-window and message-size
# sweeps; tables of medians and ratios, and JSON, PNG charts and a markdown
# report in perf/results/. Needs root; about 31 minutes on 2 cores. E.g.
#   make bench BENCHFLAGS="--flanneld /path/to/flanneld --mtu 9000 --rate 10gbit"
bench: build
	$(BIN)/overlayd-lab bench --overlayd $(BIN)/overlayd $(BENCHFLAGS)

# A first try of the bench: one round, short tests, fewer sweep points
# (about 2.5 minutes).
bench-quick: build
	$(BIN)/overlayd-lab bench --overlayd $(BIN)/overlayd --quick $(BENCHFLAGS)

# Everything: vet, unit tests, fuzz seed corpora, integration tests (root).
# go test alone hides skipped tests; gotestsum (fetched through the module
# proxy like the modules, pinned here) prints a line per package and ends
# with every skipped and failed test and its reason. Without root every
# integration test skips: one line says so instead of the list.
# GOTESTSUM= runs plain go test.
ROOT      := $(filter 0,$(shell id -u))
GOTESTSUM ?= $(GO) run gotest.tools/gotestsum@v1.13.0 --format pkgname-and-test-fails $(if $(ROOT),,--hide-summary=skipped) --
SKIPNOTE = $(GO) test -count=1 -v -run '^TestUDPOverlay$$' ./perf/e2e/ 2>/dev/null | grep -B1 -e '--- SKIP' | head -n 1 | sed 's/^ *//'
test: vet
	$(if $(strip $(GOTESTSUM)),$(GOTESTSUM),$(GO) test) $(TESTFLAGS) $(PKGS)
	@[ "$$(id -u)" = 0 ] || echo "NOTE: not root, so the integration tests were skipped, e.g. $$($(SKIPNOTE)). Run as root (sudo make test) to include them; go test -v shows every skipped test's reason."

# Unit tests only: no root needed.
test-unit:
	$(GO) test -count=1 -short $(PKGS)

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

# A short run of every fuzz target (the committed corpora also run in `make test`).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)
