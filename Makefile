# hubmesh — `make run` starts one node on :5000 with data in ./data;
# `make test` runs everything the project checks (.ci/run calls it).
# On its first start the node creates the administrator "admin": with
# `make run ADMIN_PASSWORD_FILE=path` the password is read from that file,
# otherwise a random one is printed once in the log.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := $(CURDIR)/bin/hubmesh
TOOLS_BIN := $(CURDIR)/.tools/bin
IMAGE     ?= hubmesh:dev

export CGO_ENABLED := 0
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: all build run test unit e2e vet tools image fuzz bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hubmesh

ADMIN_PASSWORD_FILE ?=

run: build
	$(BIN) serve --data-dir ./data --http-addr :5000 $(if $(ADMIN_PASSWORD_FILE),--admin-password-file $(ADMIN_PASSWORD_FILE))

tools:
	bash scripts/install-tools.sh

vet:
	$(GO) vet ./...

# Everything: vet, unit and package tests with -race, then the real binary
# against real clients, the OCI conformance suite and crash tests.
test: tools build vet
	CGO_ENABLED=1 HUBMESH_BIN=$(BIN) $(GO) test -race -count=1 -timeout 25m ./...

# Short coverage-guided runs of every fuzz target (the seed corpora run in `make test`).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

image: build
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# Side by side with CNCF distribution v3.1.2 (docs/benchmarks.md), then a
# cluster: cross-node pulls, Raft manifest pushes and fan-out over links shaped
# in network namespaces (docs/benchmarks-mesh.md; the fan-out needs root).
# Then the search index with 100,000 repositories (docs/benchmarks-search.md).
# The files are rewritten; run on a quiet machine. More flags:
# make bench BENCHFLAGS='-rounds 9' MESHBENCHFLAGS='-pull-rounds 9' (or '-run pull,raft' without root).
bench: build
	bash bench/install-distribution.sh
	$(GO) run ./bench/registrybench -hubmesh $(BIN) -distribution $(TOOLS_BIN)/registry -out docs/benchmarks.md $(BENCHFLAGS)
	bash bench/install-iproute2.sh
	$(GO) run ./bench/meshbench -hubmesh $(BIN) -out docs/benchmarks-mesh.md $(MESHBENCHFLAGS)
	$(GO) run ./bench/searchbench -out docs/benchmarks-search.md

clean:
	rm -rf bin
