# The two commands of the README: `make run` and `make test`. Both install
# what they need (Chromium from Debian's packages when it is missing).

GO ?= go
# A count, not a duration: duration-based -fuzztime can fail spuriously with
# "context deadline exceeded" in Go 1.26 (golang/go#75804).
FUZZTIME ?= 10000x
# The version `prism version` prints, set at build time.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

.PHONY: run test build check fuzz-smoke bench

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o prism .
	$(GO) build -o bin/demo ./demo

# run: PRISM on prism.example.toml in front of the bundled demo site
# (http://127.0.0.1:3000). Try: curl -A Googlebot localhost:4000/
run: build
	./scripts/ensure-chromium.sh
	./scripts/run-demo.sh

# test: formatting, vet, go.mod tidy; every test as on a machine without a
# browser (PRISM_TEST_CHROME=none: the browser tests skip, the rest must
# pass); then every test with the race detector (unit and e2e, with real
# Chromium and, for the cluster tests, a real redis-server), then each fuzz
# target briefly.
test: check
	PRISM_TEST_CHROME=none $(GO) test -count=1 -timeout 10m ./...
	./scripts/ensure-chromium.sh
	./scripts/ensure-redis.sh
	# prerender-node and rendertron-middleware for the service e2e test
	./scripts/ensure-node-deps.sh >/dev/null || echo "npm packages unavailable: the service e2e test will skip"
	./scripts/ensure-packaging-tools.sh
	$(GO) test -race -count=1 -timeout 20m ./...
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz-smoke.sh

check:
	@out=$$(gofmt -l . | grep -v '^vendor/'); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
