#!/usr/bin/env bash
# Installs everything the project needs, idempotently: the Python virtualenv (.venv) from
# requirements.lock, the npm toolchain (solc, OpenZeppelin, anvil, js-ipfs; Swagger UI and ReDoc for the
# API docs pages) from package-lock.json, the solc adapter registered with py-solc-x, and brownie's
# project-local data folder.
# A second run with unchanged lock files installs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SOLC_VERSION="$(node -p "require('./package.json').dependencies.solc")"
TOOLCHAIN="$ROOT/.toolchain"
BIN="$TOOLCHAIN/bin"
mkdir -p "$BIN" "$TOOLCHAIN/solcx" "$TOOLCHAIN/brownie-home"

say() { printf '[bootstrap] %s\n' "$*"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- npm toolchain -----------------------------------------------------------------------------
npm_digest="$(digest package.json package-lock.json)"
if [[ "$(cat node_modules/.edgeledger-stamp 2>/dev/null)" != "$npm_digest" ]]; then
  say "installing npm toolchain (solc $SOLC_VERSION, OpenZeppelin, anvil, js-ipfs, Swagger UI, ReDoc); first run takes a few minutes"
  npm install --no-audit --no-fund --loglevel=error
  echo "$npm_digest" > node_modules/.edgeledger-stamp
fi

# --- Debian packages the tests drive: Chromium (portal browser test), wrk (API load test), NATS -----
# Playwright drives Debian's /usr/bin/chromium and downloads no browser of its own.
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
# NATS JetStream for the queued-ingestion tests (they start their own server on a free port)
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
# A CJK font, so the web app's Simplified Chinese pages render (and are screenshotted) as text, not boxes.
[[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] || missing+=(fonts-wqy-microhei)
if (( ${#missing[@]} )); then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    say "installing ${missing[*]} (Debian packages) for the browser and load tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    say "warning: ${missing[*]} missing and not installable here (apt-get as root); those tests will fail"
  fi
fi

# --- Python virtualenv -------------------------------------------------------------------------
py_digest="$(digest requirements.lock pyproject.toml)"
if [[ "$(cat .venv/.edgeledger-stamp 2>/dev/null)" != "$py_digest" ]]; then
  say "creating .venv from requirements.lock"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock -e . 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  echo "$py_digest" > .venv/.edgeledger-stamp
fi

# --- API fuzzer (Schemathesis) in its own virtualenv: it needs a newer hypothesis than eth-brownie ---
fuzz_digest="$(digest requirements-fuzz.lock)"
if [[ "$(cat "$TOOLCHAIN/fuzz/.edgeledger-stamp" 2>/dev/null)" != "$fuzz_digest" ]]; then
  say "creating .toolchain/fuzz (Schemathesis) from requirements-fuzz.lock"
  [[ -x "$TOOLCHAIN/fuzz/bin/python" ]] || python3 -m venv "$TOOLCHAIN/fuzz"
  "$TOOLCHAIN/fuzz/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-fuzz.lock 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  echo "$fuzz_digest" > "$TOOLCHAIN/fuzz/.edgeledger-stamp"
fi

# --- atheris (coverage-guided fuzzing of the parsers, scripts/fuzz.py): one wheel, no dependencies, into ---
# .toolchain/atheris; the fuzz workers run on .venv's python with it on sys.path
atheris_digest="$(digest requirements-atheris.lock)"
if [[ "$(cat "$TOOLCHAIN/atheris/.edgeledger-stamp" 2>/dev/null)" != "$atheris_digest" ]]; then
  say "installing atheris into .toolchain/atheris from requirements-atheris.lock"
  rm -rf "$TOOLCHAIN/atheris"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --target "$TOOLCHAIN/atheris" -r requirements-atheris.lock 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  echo "$atheris_digest" > "$TOOLCHAIN/atheris/.edgeledger-stamp"
fi

# --- mypy in its own virtualenv: strict type checks of the ledger core and the verifiers ------------
mypy_digest="$(digest requirements-mypy.lock)"
if [[ "$(cat "$TOOLCHAIN/mypy/.edgeledger-stamp" 2>/dev/null)" != "$mypy_digest" ]]; then
  say "creating .toolchain/mypy from requirements-mypy.lock"
  [[ -x "$TOOLCHAIN/mypy/bin/python" ]] || python3 -m venv "$TOOLCHAIN/mypy"
  "$TOOLCHAIN/mypy/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-mypy.lock 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  echo "$mypy_digest" > "$TOOLCHAIN/mypy/.edgeledger-stamp"
fi

# --- Slither in its own virtualenv (its dependencies clash with eth-brownie's pins) ---------------
slither_digest="$(digest requirements-slither.lock)"
if [[ "$(cat "$TOOLCHAIN/slither/.edgeledger-stamp" 2>/dev/null)" != "$slither_digest" ]]; then
  say "creating .toolchain/slither from requirements-slither.lock"
  [[ -x "$TOOLCHAIN/slither/bin/python" ]] || python3 -m venv "$TOOLCHAIN/slither"
  "$TOOLCHAIN/slither/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-slither.lock 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
  echo "$slither_digest" > "$TOOLCHAIN/slither/.edgeledger-stamp"
fi

# --- Solidity compiler -------------------------------------------------------------------------
# A native solc of the pinned version wins when one is on PATH; otherwise the WebAssembly compiler from
# npm answers through scripts/solc-adapter.js. Either is registered with py-solc-x as solc-v$SOLC_VERSION.
solc_target="$TOOLCHAIN/solcx/solc-v$SOLC_VERSION"
if [[ ! -x "$solc_target" ]]; then
  native="$(PATH="${PATH//$BIN:/}" command -v solc || true)"
  if [[ -n "$native" ]] && "$native" --version | grep -q "Version: $SOLC_VERSION+"; then
    say "using native solc $SOLC_VERSION at $native"
    ln -sf "$native" "$BIN/solc"
  else
    say "using solc $SOLC_VERSION (WebAssembly) through scripts/solc-adapter.js"
    printf '#!/bin/sh\nexec node "%s/scripts/solc-adapter.js" "$@"\n' "$ROOT" > "$BIN/solc"
    chmod +x "$BIN/solc"
  fi
  PATH="$BIN:$PATH" SOLCX_BINARY_PATH="$TOOLCHAIN/solcx" .venv/bin/python -c \
    "import solcx; print('[bootstrap] registered with py-solc-x:', solcx.import_installed_solc())"
fi

# --- brownie's data folder (networks), kept inside the project ---------------------------------
if [[ ! -f "$TOOLCHAIN/brownie-home/.brownie/network-config.yaml" ]] \
   || ! grep -q "edgeledger-rpc" "$TOOLCHAIN/brownie-home/.brownie/network-config.yaml"; then
  say "registering brownie network edgeledger-rpc (any JSON-RPC at \$ETH_RPC_URL)"
  HOME="$TOOLCHAIN/brownie-home" .venv/bin/brownie networks add Ethereum edgeledger-rpc \
    host='$ETH_RPC_URL' chainid=31337 name="EdgeLedger RPC (ETH_RPC_URL)" >/dev/null
fi
# Brownie's test chain must never be the dev stack's anvil (8545): brownie would attach to it. Its block
# gas limit is anvil's own default, 30,000,000 (brownie's 12,000,000 is below one 100-asset catalogue).
BROWNIE_TEST_PORT=8645
BROWNIE_TEST_GAS_LIMIT=30000000
if ! .venv/bin/python - "$TOOLCHAIN/brownie-home/.brownie/network-config.yaml" "$BROWNIE_TEST_PORT" \
    "$BROWNIE_TEST_GAS_LIMIT" <<'PY'
import sys, yaml
dev = next(n for n in yaml.safe_load(open(sys.argv[1]))["development"] if n["id"] == "development")
settings = dev["cmd_settings"]
sys.exit(0 if (settings.get("port"), settings.get("gas_limit")) == (int(sys.argv[2]), int(sys.argv[3])) else 1)
PY
then
  say "brownie's development (test) network: anvil on port $BROWNIE_TEST_PORT, block gas limit $BROWNIE_TEST_GAS_LIMIT"
  HOME="$TOOLCHAIN/brownie-home" .venv/bin/brownie networks modify development port=$BROWNIE_TEST_PORT \
    gas_limit=$BROWNIE_TEST_GAS_LIMIT >/dev/null
fi
