# overlayd: the two commands a newcomer needs are `make demo` and `make test`.
GO       ?= go
BIN      := bin
PKGS     := ./...
# The integration tests build emulated hosts in network namespaces: they need
# root, and skip with a reason without it.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: all build demo bench bench-quick test test-unit vet lint fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/overlayd ./cmd/overlayd
	$(GO) build -o $(BIN)/overlayd-lab ./cmd/overlayd-lab

# Emulated hosts in network namespaces, an embedded etcd, overlayd on each
# host, container-to-container ping and a TCP transfer, a short report.
demo: build
	$(BIN)/overlayd-lab demo --overlayd $(BIN)/overlayd

# overlayd against the kernel (host-gw, kernel VXLAN) on the same emulated
# hosts: throughput with iperf3 (installed if missing), latency with
# overlayd-lab rr (TCP_RR, UDP_RR) and ping, the TCP-window and message-size
# sweeps; tables of medians and ratios, and JSON, PNG charts and a markdown
# report in perf/results/. Needs root; about 22 minutes on 2 cores. E.g.
#   make bench BENCHFLAGS="--flanneld /path/to/flanneld --mtu 9000 --rate 10gbit"
bench: build
	$(BIN)/overlayd-lab bench --overlayd $(BIN)/overlayd $(BENCHFLAGS)

# A first try of the bench: one round, short tests, fewer sweep points
# (about 2.5 minutes).
bench-quick: build
	$(BIN)/overlayd-lab bench --overlayd $(BIN)/overlayd --quick $(BENCHFLAGS)

# Everything: vet, unit tests, fuzz seed corpora, integration tests (root).
test: vet
	$(GO) test $(TESTFLAGS) $(PKGS)

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
