#!/usr/bin/env bash
# A long run of the gateway's differential grammar test (crates/gateway/tests/gateway/grammar.rs):
# generated request streams and responses go to the gateway's HTTP/1 reader and to hyper, and
# must read the same (scripts/test.sh runs a short one: 400 cases each).
#
#   scripts/fuzz-grammar.sh [cases]        # default 200000 per test
#
# A failure prints the input, shrunk; add it to crates/gateway/tests/corpus/ (requests/ or
# responses/, one file per input) once fixed, so every run checks it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-200000}
PROPTEST_CASES=$cases cargo nextest run --release -p gateway --test gateway grammar:: \
  --no-capture --test-threads 2
