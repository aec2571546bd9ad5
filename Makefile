# The front door. `make run` and `make test` install everything they need on a fresh machine
# (Python venv, Go tools, npm packages, buf) and are all the set-up there is.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GOBIN := $(CURDIR)/.tools/bin
PIP_VERSION := 25.3

VENV_STAMP := $(VENV)/.installed
GO_TOOLS_STAMP := .tools/.installed
BUF_STAMP := tools/node_modules/.installed
TS_STAMP := clients/ts/node_modules/.installed
BENCH_BIN := $(CURDIR)/.tools/bench
BENCH_STAMP := $(BENCH_BIN)/.installed
LITELLM_VENV := $(CURDIR)/.tools/litellm-venv

.PHONY: help run deps postgres prometheus redis chromium generate check-generated lint test test-python test-python-client test-go test-ts bench bench-quick bench-ab bench-cost lock clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

# Builds the Go tools too: the README's grpcurl session runs .tools/bin/grpcurl against this gateway.
run: $(VENV_STAMP) $(GO_TOOLS_STAMP) ## Start the gateway on its embedded defaults (CONFIG=path.toml to add a config file)
	$(BIN)/llm-gateway serve $(if $(CONFIG),--config $(CONFIG))

test: deps check-generated lint test-python test-python-client test-go test-ts ## Run every check and test, in all three languages
	@echo "make test: all checks passed"

deps: $(VENV_STAMP) $(GO_TOOLS_STAMP) $(BUF_STAMP) $(TS_STAMP) ## Install everything the project needs

generate: deps ## Regenerate the Python, Go and TypeScript stubs from protos/
	scripts/generate.sh

check-generated: deps ## Fail when committed stubs differ from what the protos generate
	scripts/check-generated.sh

lint: deps ## buf lint and breaking checks, ruff, mypy, go vet, gofmt, tsc
	tools/node_modules/.bin/buf lint
	scripts/check-breaking.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd clients/go && go vet ./... && test -z "$$(gofmt -l .)"
	cd bench && go vet ./... && test -z "$$(gofmt -l .)"
	cd clients/ts && npm run --silent typecheck

test-python: $(VENV_STAMP) $(GO_TOOLS_STAMP) $(BUF_STAMP) postgres prometheus redis chromium ## The service's tests (in-process gateway, fake upstreams, grpcurl, ledger on SQLite and PostgreSQL, a real Prometheus and Redis)
	$(BIN)/pytest

# The ledger tests start a throwaway PostgreSQL cluster of their own; this only installs the server.
postgres: ## Install the PostgreSQL server where it is missing (Debian's package; needs root)
	@scripts/install-postgres.sh

# The metrics tests start a Prometheus server of their own; this only installs it (and promtool).
prometheus: ## Install Prometheus and promtool where they are missing (Debian's package; needs root)
	@scripts/install-prometheus.sh

# The console tests drive Debian's Chromium headless through Playwright; this only installs it.
chromium: ## Install Chromium where it is missing (Debian's package; needs root)
	@scripts/install-chromium.sh

# The fleet tests start Redis servers of their own; this only installs redis-server.
redis: ## Install redis-server where it is missing (Debian's package; needs root)
	@scripts/install-redis.sh

test-python-client: $(VENV_STAMP) ## The Python client against a live gateway
	scripts/with-gateway.sh $(BIN)/pytest -q clients/python/tests

test-go: $(VENV_STAMP) ## The Go client against a live gateway, and the benchmark tools' unit tests
	scripts/with-gateway.sh bash -c 'cd clients/go && go test -count=1 ./...'
	cd bench && go test -count=1 ./...

test-ts: $(VENV_STAMP) $(TS_STAMP) ## The TypeScript client against a live gateway
	scripts/with-gateway.sh bash -c 'cd clients/ts && npm test --silent'

bench: $(VENV_STAMP) $(BUF_STAMP) $(BENCH_STAMP) ## Benchmark against direct, no-op gRPC and LiteLLM; rewrites bench/RESULTS.md
	$(BIN)/python bench/run.py --litellm "$$(bench/litellm/setup.sh $(LITELLM_VENV))"

bench-quick: $(VENV_STAMP) $(BUF_STAMP) $(BENCH_STAMP) redis ## One short repetition of both doors and a fleet replica (Redis), without LiteLLM, written to .tools/bench-quick/
	mkdir -p .tools/bench-quick
	$(BIN)/python bench/run.py --systems direct,noop,noop-upstream,gateway,http,gateway-fleet --repeat 1 --duration 3 --open-streams 1000 --out .tools/bench-quick

# AB="--b-variant gateway-nometrics" (or --b LLM_GATEWAY__...=..., or --a-tree ../before): see bench/ab.py
bench-ab: $(VENV_STAMP) $(BUF_STAMP) $(BENCH_STAMP) ## Two gateways measured at the same time under the same load (AB="...")
	$(BIN)/python bench/ab.py $(AB)

bench-cost: $(VENV_STAMP) ## Time cost computation and prompt counting; rewrites bench/COST.md
	$(BIN)/python bench/cost.py --write

lock: ## Re-pin every Python dependency (requirements.lock and requirements-dev.lock)
	scripts/lock.sh

clean: ## Remove everything the targets installed or built
	rm -rf $(VENV) .tools tools/node_modules clients/ts/node_modules clients/ts/dist .mypy_cache .ruff_cache .pytest_cache

# Each install says what it is doing: the first run is otherwise silent for a while. pip's --quiet
# still prints errors, and go and npm print their own warnings and errors.
$(VENV_STAMP): requirements-dev.lock service/pyproject.toml clients/python/pyproject.toml
	@echo "==> Installing the pinned Python packages into $(VENV)/ (once, up to a minute; again when the locks change)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	@$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e clients/python -e service
	@touch $@
	@echo "==> Python packages installed"

$(GO_TOOLS_STAMP): tools/go.mod tools/go.sum
	@echo "==> Building grpcurl and the protoc plugins into .tools/bin/ (once; again when tools/go.mod changes)"
	@cd tools && GOBIN=$(GOBIN) go install tool
	@touch $@
	@echo "==> Go tools built"

# npm install, not npm ci: registries without buf's binaries for other platforms fail npm ci's lock
# check; the exact version in package.json and the lock still pin buf.
$(BUF_STAMP): tools/package.json tools/package-lock.json
	@echo "==> Installing buf and axe-core into tools/node_modules/ (once; again when tools/package.json changes)"
	@cd tools && npm install --no-save --no-audit --no-fund
	@touch $@

$(BENCH_STAMP): bench/go.mod bench/go.sum $(wildcard bench/cmd/*/*.go bench/internal/*/*.go)
	cd bench && GOBIN=$(BENCH_BIN) go install tool && go build -o $(BENCH_BIN)/ ./cmd/...
	touch $@

$(TS_STAMP): clients/ts/package.json clients/ts/package-lock.json
	@echo "==> Installing the TypeScript packages into clients/ts/node_modules/ (once; again when its lock changes)"
	@cd clients/ts && npm ci --no-audit --no-fund
	@touch $@
