#!/usr/bin/env bash
# Counts the gateway's user-space instructions (and the misses of callgrind's cache model) per
# proxied request with callgrind: measures that do not depend on the machine's load, for comparing
# two builds of the request path when wall-clock benchmarks on a shared machine are too noisy to
# tell a few percent apart. Kernel
# work (the sockets) is not counted, so the figure is not a share of the total cost.
#   flotilla echo backend; flotilla gateway (env mode, JSON access log to a file) under valgrind;
#   wrk -t1 -c8 for 3 s to warm up, counters zeroed, wrk for 8 s, counters dumped.
#
#   bench/gateway-instructions.sh [path/to/flotilla]   (default: a fresh release build)
#
# Needs valgrind and wrk (apt-get install valgrind wrk). Prints; records nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install valgrind wrk" >&2; exit 1; }
done
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/flotilla
fi
work=$(mktemp -d)
trap stop_all EXIT
echo_port=$(free_port); gw_port=$(free_port)
"$bin" echo --bind "127.0.0.1:$echo_port" --hostname bench >"$work/echo.log" 2>&1 &
pids+=($!)
BACKEND_HOST="127.0.0.1:$echo_port" WORKER_PROCESSES=2 GATEWAY_ADMIN_BIND=off LOG_STDOUT=1 \
  valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$work/callgrind.out" \
  "$bin" gateway --bind "127.0.0.1:$gw_port" >"$work/gateway.log" 2>"$work/valgrind.log" &
gateway=$!
pids+=($gateway)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$gw_port/" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$gw_port/" | grep -q '^bench, current time' || { echo "the gateway does not answer" >&2; exit 1; }
wrk -t1 -c8 -d3s "http://127.0.0.1:$gw_port/" >/dev/null
callgrind_control -z "$gateway" >/dev/null 2>&1
out=$(wrk -t1 -c8 -d8s "http://127.0.0.1:$gw_port/")
callgrind_control -d "$gateway" >/dev/null 2>&1
requests=$(echo "$out" | awk '/requests in/ {print $1}')
if echo "$out" | grep -q 'Non-2xx'; then echo "some answers were not 2xx" >&2; exit 1; fi
# Totals of every event (instructions, reads, writes, and the cache model's misses) over the dumps.
totals=$(for dump in "$work"/callgrind.out.*; do
  callgrind_annotate "$dump" 2>/dev/null | awk '/^Events shown:/ {sub(/^Events shown: */, ""); print "events " $0}
    /PROGRAM TOTALS/ {line = $0; gsub(/\([^)]*\)/, "", line); gsub(",", "", line); print "totals " line}'
done | awk '/^events/ {n = split($0, names); next}
  /^totals/ {for (i = 2; i <= NF - 2; i++) sum[i] += $i}
  END {for (i = 2; i <= n; i++) printf "%s %d\n", names[i], sum[i]}')
echo "requests $requests; per request (I1mr, D1mr, D1mw: misses in callgrind's cache model):"
echo "$totals" | awk -v n="$requests" '{printf "  %-5s %8.0f\n", $1, $2 / n}'
# FLOTILLA_CALLGRIND_KEEP=DIR keeps the dumps there, for callgrind_annotate.
if [ -n "${FLOTILLA_CALLGRIND_KEEP:-}" ]; then
  mkdir -p "$FLOTILLA_CALLGRIND_KEEP" && cp "$work"/callgrind.out.* "$FLOTILLA_CALLGRIND_KEEP"/
fi
