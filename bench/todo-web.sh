#!/usr/bin/env bash
# Benchmarks the TODO board: `GET /` with 30 items in each column, so every page is three API
# calls (concurrent) and a render of 90 cards. The API runs on the same machine on its embedded
# SQLite default. wrk, keep-alive, 8 connections (a handful of browsers loading the board at
# once); prints a table and replaces its section of docs/benchmarks.md with it.
#
#   bench/todo-web.sh [--duration 20] [--connections 8] [--runs 3] [--no-record]
#
# Needs wrk. Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=20
connections=8
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
api_port=$(free_port); web_port=$(free_port)
"$bin" todo-api --bind "127.0.0.1:$api_port" --primary-url "sqlite://$work/todo.db" >"$work/api.log" 2>&1 &
api=$!
"$bin" todo-web --bind "127.0.0.1:$web_port" --api-url "http://127.0.0.1:$api_port" >"$work/web.log" 2>&1 &
web=$!
trap 'kill $api $web 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api_port/ready" >/dev/null && break; sleep 0.1; done
for status in TODO PROGRESS DONE; do
  for i in $(seq 30); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      -d "{\"title\":\"$status item $i\",\"content\":\"what to do about item $i, in a sentence or two\",\"status\":\"$status\"}" \
      "http://127.0.0.1:$api_port/todo"
  done
done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$web_port/ready" >/dev/null && break; sleep 0.1; done
cards=$(curl -sf "http://127.0.0.1:$web_port/" | grep -c 'class="card"')
[ "$cards" = 90 ] || { echo "the board shows $cards cards, not 90" >&2; exit 1; }

wrk -t2 -c"$connections" -d2s "http://127.0.0.1:$web_port/" >/dev/null   # warm-up
read -r rps p50 p99 min max < <(for _ in $(seq "$runs"); do measure "http://127.0.0.1:$web_port/"; done | median)
web_rss=$(peak_rss_mb "$web")
bytes=$(curl -sf "http://127.0.0.1:$web_port/" | wc -c)

cpu=$(cpu_model)
table=$(cat <<EOF
| case | req/s (median of $runs) | range of $runs runs | p50 | p99 |
|---|---:|---:|---:|---:|
| GET / (90 cards, $bytes bytes, 3 API calls) | $rps | $min–$max | $p50 | $p99 |

Peak RSS of the board: $web_rss MB (VmHWM).
EOF
)
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo "\`bench/todo-web.sh --duration $duration --connections $connections --runs $runs\` on $(nproc) cores ($cpu):"
    echo "wrk -t2 -c$connections -d${duration}s; the API (SQLite) on the same machine; both log every request."
    echo
    echo "$table"
  } | record_section todo-web
fi
