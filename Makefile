# sidecache developer tasks. `make test` is what CI runs (see .ci/run).

GO ?= go
FUZZTIME ?= 15s

.PHONY: test deps vet unit fuzz chart run bench bench-passthrough bench-outage

# test installs what the tests need, then runs vet, the race-enabled tests
# (unit, integration and differential), a short run of each fuzz target,
# and the Helm chart's tests.
test: deps vet unit fuzz chart

# deps installs Debian's redis-server and redis-tools, which the integration
# and differential tests start, unless they are already on PATH.
deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		echo "installing redis-server and redis-tools"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-tools >/dev/null; \
	fi
	@redis-server --version

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzGate$$' -fuzztime $(FUZZTIME) ./proxy/

# chart lints and renders the Helm chart (Helm from the Go module proxy) and
# checks what it renders. It is a Go module of its own, so that Helm and the
# Kubernetes types stay out of sidecache's.
chart: deps
	cd charts/sidecache/tests && $(GO) test -count=1 -timeout 15m ./...

run:
	$(GO) run ./cmd/sidecache

bench:
	./bench/compare.sh

bench-passthrough:
	./bench/passthrough.sh

bench-outage:
	./bench/outage.sh
