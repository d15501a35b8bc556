#!/usr/bin/env bash
# What tracing costs: req/s of the TODO API (GET of one item, on SQLite) and of the gateway (in
# front of `flotilla echo`) with tracing off, at 100 % sampling and at 1 % sampling, each
# exporting to a `flotilla traces` collector running on the same machine. The three variants run
# in turn, round after round, so each round compares them under the same load of the machine;
# the table gives the median over rounds and the ratio to "off". Replaces its section of
# docs/benchmarks.md.
#
#   bench/tracing-cost.sh [--duration 10] [--connections 32] [--runs 3] [--no-record]
#
# Needs wrk. Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=10
connections=32
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT

wait_ready() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

traces_port=$(free_port)
TRACES_DATA="$work/traces.db" "$bin" traces --bind "127.0.0.1:$traces_port" >"$work/traces.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$traces_port/ready"
echo_port=$(free_port)
"$bin" echo --bind "127.0.0.1:$echo_port" >/dev/null 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$echo_port/hc"
db="sqlite://$work/todo.db"

# The environment of each variant.
variant_env() {
  case "$1" in
    off) echo "" ;;
    all) echo "FLOTILLA_TRACES_URL=http://127.0.0.1:$traces_port" ;;
    one) echo "FLOTILLA_TRACES_URL=http://127.0.0.1:$traces_port OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01" ;;
  esac
}

# Runs `target` with `variant` and measures it: "rps p50 p99".
measure_one() {
  local target=$1 variant=$2 port pid url
  port=$(free_port)
  case "$target" in
    api)
      env $(variant_env "$variant") LOG_LEVEL=warn "$bin" todo-api --bind "127.0.0.1:$port" \
        --primary-url "$db" --seed >/dev/null 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/ready"
      url="http://127.0.0.1:$port/todo/1"
      ;;
    gateway)
      env $(variant_env "$variant") SERVER_PORT="$port" BACKEND_HOST="127.0.0.1:$echo_port" \
        GATEWAY_ADMIN_BIND=off GATEWAY_ACCESS_LOG="$work/access.log" LOG_LEVEL=warn "$bin" gateway \
        >/dev/null 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/"
      url="http://127.0.0.1:$port/"
      ;;
  esac
  measure "$url"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for run in $(seq "$runs"); do
  for target in api gateway; do
    for variant in off all one; do
      echo "round $run: $target, tracing $variant" >&2
      measure_one "$target" "$variant" | tee -a "$work/$target-$variant.txt" >&2
    done
  done
done

table=$(
  echo "$(cpu_model), $(nproc) cores; wrk, the service, the collector and (for the gateway) echo on the same machine; $connections connections, median of $runs rounds of ${duration}s, variants interleaved."
  echo
  echo "| target | tracing | req/s (runs) | p50 | p99 | vs off |"
  echo "|---|---|---|---|---|---|"
  for target in api gateway; do
    read -r off_rps _ < <(median <"$work/$target-off.txt")
    for variant in off all one; do
      read -r rps p50 p99 min_rps max_rps < <(median <"$work/$target-$variant.txt")
      label=$([ "$target" = api ] && echo "todo-api, GET /todo/1" || echo "gateway → echo")
      case "$variant" in off) what="off" ;; all) what="100 % sampled, exported" ;; one) what="1 % sampled" ;; esac
      echo "| $label | $what | $rps ($min_rps–$max_rps) | $p50 | $p99 | $(python3 -c "print(f'{$rps / $off_rps * 100:.1f} %')") |"
    done
  done
  echo
  echo "Command: \`bench/tracing-cost.sh --duration $duration --connections $connections --runs $runs\`"
)
echo "$table"
[ "$record" = 1 ] && echo "$table" | record_section tracing-cost
exit 0
