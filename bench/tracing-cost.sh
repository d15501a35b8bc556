#!/usr/bin/env bash
# What tracing costs a service: req/s and CPU time per request of the TODO API (GET of one item,
# on SQLite) and of the gateway (in front of `flotilla echo`) with tracing off, at 100 %
# sampling and at 1 % sampling.
#
# The service under test runs alone on the last core (taskset); wrk, the span receiver and echo
# run on the others, so what the service spends shows as its own req/s rather than as load on
# a shared core. Spans go to a receiver that discards them (nginx answering 202), which stands
# for a collector on another machine: the figure is the service's cost, not the collector's.
# One more variant sends them to `flotilla traces` on the load core, for what tracing costs the
# whole machine when the collector shares it. The variants run in turn, round after round, so
# each round compares them under the same load of the machine; the table gives the median over
# rounds and the ratio to "off". Replaces its section of docs/benchmarks.md.
#
#   bench/tracing-cost.sh [--duration 10] [--connections 32] [--runs 3] [--no-record]
#
# Needs wrk, nginx and taskset (apt-get install wrk nginx-light util-linux), and 2 cores or
# more. Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=10
connections=32
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
need_wrk_and_nginx
command -v taskset >/dev/null || { echo "needs taskset: apt-get install util-linux" >&2; exit 1; }
cores=$(nproc)
[ "$cores" -ge 2 ] || { echo "needs 2 cores or more (has $cores)" >&2; exit 1; }
service_cpu=$((cores - 1))
load_cpus="0-$((cores - 2))"
wrk_pin="taskset -c $load_cpus"
wrk_threads=$((cores - 1))

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
trap stop_all EXIT

wait_ready() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

# The receiver that discards spans: nginx answering 202 to every POST.
sink_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  client_max_body_size 16m;
  server {
    listen 127.0.0.1:$sink_port;
    location / { return 202; }
  }
}
CONF
taskset -c "$load_cpus" "$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" \
  2>"$work/nginx.stderr" &
traces_port=$(free_port)
TRACES_DATA="$work/traces.db" taskset -c "$load_cpus" "$bin" traces --bind "127.0.0.1:$traces_port" \
  >"$work/traces.log" 2>&1 &
pids+=($!)
echo_port=$(free_port)
taskset -c "$load_cpus" "$bin" echo --bind "127.0.0.1:$echo_port" >/dev/null 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$traces_port/ready"
wait_ready "http://127.0.0.1:$echo_port/hc"
for _ in $(seq 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '[]' "http://127.0.0.1:$sink_port/api/v2/spans")" = 202 ] && break
  sleep 0.1
done
db="sqlite://$work/todo.db"

variants=(off all one collector)
# The environment of each variant.
variant_env() {
  case "$1" in
    off) echo "" ;;
    all) echo "FLOTILLA_TRACES_URL=http://127.0.0.1:$sink_port" ;;
    one) echo "FLOTILLA_TRACES_URL=http://127.0.0.1:$sink_port OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01" ;;
    collector) echo "FLOTILLA_TRACES_URL=http://127.0.0.1:$traces_port" ;;
  esac
}
variant_label() {
  case "$1" in
    off) echo "off" ;;
    all) echo "100 % sampled" ;;
    one) echo "1 % sampled" ;;
    collector) echo "100 % sampled, to \`flotilla traces\` on the load core" ;;
  esac
}

# CPU time (user + system) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs `target` with `variant` and measures it: "rps p50 p99 cpu_us_per_request".
measure_one() {
  local target=$1 variant=$2 port pid url before after result requests
  port=$(free_port)
  case "$target" in
    api)
      env $(variant_env "$variant") LOG_LEVEL=warn taskset -c "$service_cpu" "$bin" todo-api \
        --bind "127.0.0.1:$port" --primary-url "$db" --seed >/dev/null 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/ready"
      url="http://127.0.0.1:$port/todo/1"
      ;;
    gateway)
      env $(variant_env "$variant") SERVER_PORT="$port" BACKEND_HOST="127.0.0.1:$echo_port" \
        GATEWAY_ADMIN_BIND=off GATEWAY_ACCESS_LOG="$work/access.log" LOG_LEVEL=warn \
        taskset -c "$service_cpu" "$bin" gateway >/dev/null 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/"
      url="http://127.0.0.1:$port/"
      ;;
  esac
  before=$(cpu_ticks "$pid")
  result=$(measure "$url")
  after=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  read -r rps _ _ <<<"$result"
  requests=$((rps * duration))
  echo "$result $(python3 -c "print(f'{($after - $before) / $(getconf CLK_TCK) * 1e6 / max($requests, 1):.1f}')")"
}

for run in $(seq "$runs"); do
  for target in api gateway; do
    for variant in "${variants[@]}"; do
      echo "round $run: $target, tracing $variant" >&2
      measure_one "$target" "$variant" | tee -a "$work/$target-$variant.txt" >&2
    done
  done
done

# The median of column 4 (CPU per request) of a variant's runs.
median_cpu() { awk '{print $4}' "$1" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

table=$(
  echo "$(cpu_model), $cores cores; the service alone on core $service_cpu, wrk (-t$wrk_threads), the span receivers and echo on cores $load_cpus; $connections connections, median of $runs rounds of ${duration}s, variants interleaved. CPU: the service's user + system time per request."
  echo
  echo "| target | tracing | req/s (runs) | p50 | p99 | CPU/request | req/s vs off |"
  echo "|---|---|---|---|---|---|---|"
  for target in api gateway; do
    read -r off_rps _ < <(median <"$work/$target-off.txt")
    for variant in "${variants[@]}"; do
      read -r rps p50 p99 min_rps max_rps < <(median <"$work/$target-$variant.txt")
      label=$([ "$target" = api ] && echo "todo-api, GET /todo/1" || echo "gateway → echo")
      echo "| $label | $(variant_label "$variant") | $rps ($min_rps–$max_rps) | $p50 | $p99 | $(median_cpu "$work/$target-$variant.txt") µs | $(python3 -c "print(f'{$rps / $off_rps * 100:.1f} %')") |"
    done
  done
  echo
  echo "Command: \`bench/tracing-cost.sh --duration $duration --connections $connections --runs $runs\`"
)
echo "$table"
[ "$record" = 1 ] && echo "$table" | record_section tracing-cost
exit 0
