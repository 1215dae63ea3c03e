# The two commands a new machine needs:
#   make up     start the local stack (anvil, IPFS, NATS JetStream, ingest worker, Celery worker, API; uploads
#               queued as in production), deploy, run the demo, keep the API up (INGEST_WORKERS=N: N ingest workers)
#   make test   lint, type checks, Slither, contract tests with gas report, backend integration tests (SQLite and PostgreSQL)
# Both install what they need first (scripts/bootstrap.sh; idempotent).

SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv/bin
export PATH := $(ROOT)/.toolchain/bin:$(ROOT)/node_modules/.bin:$(VENV):$(PATH)
export SOLCX_BINARY_PATH := $(ROOT)/.toolchain/solcx
# brownie keeps its data folder (~/.brownie) under HOME: keep it inside the project.
BROWNIE := HOME=$(ROOT)/.toolchain/brownie-home $(VENV)/brownie
TEST_DATABASE_URLS ?= sqlite postgresql://postgres@127.0.0.1:5432/test

.PHONY: up test bootstrap compile lint typecheck slither test-contracts test-backend fuzz-long lock

up: bootstrap compile
	$(VENV)/edgeledger up $(if $(INGEST_WORKERS),--ingest-workers $(INGEST_WORKERS))

test: bootstrap compile lint typecheck slither test-contracts test-backend

bootstrap:
	@bash scripts/bootstrap.sh

compile: bootstrap
	@$(BROWNIE) compile >/dev/null && echo "[compile] contracts compiled to build/contracts"
	@$(VENV)/python scripts/export_abis.py && echo "[compile] ABIs packaged in backend/edgeledger/ledger/abi"

lint: bootstrap
	$(VENV)/ruff check backend tests scripts benchmarks migrations
	$(VENV)/ruff format --check backend tests scripts benchmarks migrations

# Strict type checking of the ledger core, the chain-only verifiers and the server's chain client (mypy
# from its own virtualenv, resolving imports in the project's .venv).
typecheck: bootstrap
	cd backend && $(ROOT)/.toolchain/mypy/bin/mypy --strict --python-executable $(VENV)/python \
	  -p edgeledger.ledger -p edgeledger.verify -m edgeledger.chain.client -m edgeledger.chain.brownie_receipts \
	  -m edgeledger.devtools.rpc_proxy

# Static analysis: any high or medium Slither finding not explained in contracts/slither-triage.json fails.
slither: bootstrap
	$(VENV)/python scripts/slither_check.py

test-contracts: compile
	mkdir -p reports
	$(BROWNIE) test tests/contracts --gas 2>&1 | tee reports/contract-tests.txt; exit $${PIPESTATUS[0]}

test-backend: compile
	TEST_DATABASE_URLS="$(TEST_DATABASE_URLS)" $(VENV)/pytest tests/backend

# Coverage-guided fuzzing (atheris) of the log parsers, the billing CSV importer and SIWE parsing, FUZZ_SECONDS
# per target; the corpus grows in reports/fuzz-corpus across runs, findings land in reports/fuzz-findings.
# make test runs a few seconds of each (tests/backend/test_input_fuzz.py). docs/testing.md has the figures.
FUZZ_SECONDS ?= 600
fuzz-long: bootstrap
	$(VENV)/python -m scripts.fuzz --seconds $(FUZZ_SECONDS) --corpus reports/fuzz-corpus \
	  --artifacts reports/fuzz-findings

lock:
	rm -rf .lockenv && python3 -m venv .lockenv && .lockenv/bin/pip install -q . && \
	{ echo "# Exact, single-step resolution of pyproject.toml's dependencies (pip install of all of them in one call,"; \
	  echo "# then pip freeze). Regenerate with: make lock"; .lockenv/bin/pip freeze --exclude edgeledger; } > requirements.lock; \
	rm -rf .lockenv
