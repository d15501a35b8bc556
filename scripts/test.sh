#!/usr/bin/env bash
# The whole test suite, as README.md gives it: formatting, unused dependencies, lints, import
# cycles and file sizes, every test of the workspace, then the Swarm end-to-end test when a Docker
# engine in Swarm mode is available.
# Tests start real servers on 127.0.0.1 ports they pick themselves; nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The MariaDB tests share one primary/replica cluster, started on first use; stop it at the end.
shared_mariadb=target/tmp/flotilla-test-mariadb
trap 'scripts/db/mariadb.sh down --dir "$shared_mariadb" >/dev/null 2>&1 || true' EXIT

# What the tests need (MariaDB, Chromium and chromedriver, rustfmt, clippy): installed only if
# missing, so on a prepared machine this is a few quick checks.
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== module structure (no import cycle, no file over 600 lines)"
scripts/structure.py
echo "== unused dependencies (cargo machete)"
cargo machete
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# The Swarm end-to-end test needs a Docker engine in Swarm mode; without one, say so and skip it.
echo "== swarm end-to-end test"
if [ "${FLOTILLA_SWARM_E2E:-on}" = off ]; then
  echo "skipped: FLOTILLA_SWARM_E2E=off"
elif [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
  # It takes about 10 minutes with its release build; the whole CI run must stay under 45. On a
  # machine slow enough to have used 30 already (FLOTILLA_CI_STARTED: when CI began), skip it and
  # say so.
  elapsed=$(( $(date +%s) - ${FLOTILLA_CI_STARTED:-$(date +%s)} ))
  if [ "$elapsed" -gt 1800 ]; then
    echo "skipped: the run has taken $((elapsed / 60)) minutes; the end-to-end test would not fit CI's 45"
  else
    scripts/swarm-e2e.sh
  fi
else
  echo "skipped: no Docker engine in Swarm mode here (docs/deploy.md says how to run it)"
fi
