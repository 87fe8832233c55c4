# xlb — see README.md. Every target says what it does; `make help` lists them.
GO        ?= go
BIN       ?= bin/xlb
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# Privileged tests run when root; CI also sets XLB_REQUIRE_PRIVILEGED=1.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: help deps build deb generate check-generated lint test bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

deps: ## install missing Debian packages (clang, llvm, libbpf-dev, iproute2, ...)
	@scripts/deps.sh build

build: ## build bin/xlb (needs no clang: the BPF objects are committed)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/xlb

deb: ## build the Debian package bin/xlb_VERSION_ARCH.deb (nfpm, pinned in go.mod): /usr/bin/xlb, systemd units, /etc/xlb
	@scripts/deb.sh

generate: deps ## rebuild the BPF objects and Go bindings in loader/ with clang
	$(GO) generate ./loader/...

check-generated: deps ## fail if the committed BPF objects differ from a fresh build
	@scripts/check-generated.sh

lint: ## gofmt, go vet (also for arm64, which has its own Maglev code path) and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v _bpfel.go) 2>&1); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...
	$(GO) tool staticcheck ./...

test: deps lint check-generated ## the one test command: lint, generated-code check, all tests (privileged ones as root)
	$(GO) test -race $(TESTFLAGS) ./...

bench: deps ## benchmarks: Maglev, XDP ns/packet, packet rate, health checks, L7 proxy
	@scripts/bench.sh

demo: deps build ## bring up the lab, show traffic spreading, drain and fail a backend, tear down
	@scripts/demo.sh

clean: ## remove build output and anything a crashed test or lab left behind
	rm -rf bin
	@scripts/clean.sh
