#!/usr/bin/env bash
# Benchmarks the TODO API with wrk (keep-alive, 64 connections), on its embedded SQLite default
# or (--db mariadb) on a MariaDB primary and replica started by scripts/db/mariadb.sh:
#   GET  /todo?status=PROGRESS  with 100 rows in that column
#   POST /todo
# and the API's peak RSS. Prints a table and replaces its section of docs/benchmarks.md with it.
#
#   bench/todo-api.sh [--db sqlite|mariadb] [--duration 20] [--connections 64] [--runs 3] [--no-record]
#
# Each case runs --runs times; the table shows the run with the median req/s, and the range of
# req/s over all runs (this machine is shared, and single runs vary by tens of percent).
# The API logs as it does by default (one text line per request), to a file. wrk runs on the same
# machine, so it shares the CPU with the API: the numbers are for the pair.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
db=sqlite
duration=20
connections=64
runs=3
parse_options "$@"
set -- "${rest[@]}"
while [ $# -gt 0 ]; do
  case "$1" in
    --db) db=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/flotilla

work=$(mktemp -d)
port=$(free_port)
base="http://127.0.0.1:$port"
case "$db" in
  sqlite)
    db_args=(--primary-url "sqlite://$work/todo.db")
    db_label="SQLite"
    ;;
  mariadb)
    mapfile -t urls < <(scripts/db/mariadb.sh up --replicas 1 --dir "$work/mariadb")
    db_args=(--primary-url "${urls[0]}" --replica-urls "${urls[1]}")
    db_label="MariaDB $(mariadbd --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*' | head -1), primary + 1 replica (reads from the replica)"
    ;;
  *) echo "--db must be sqlite or mariadb" >&2; exit 2 ;;
esac
"$bin" todo-api --bind "127.0.0.1:$port" "${db_args[@]}" >"$work/api.log" 2>&1 &
api=$!
cleanup() {
  kill $api 2>/dev/null; wait $api 2>/dev/null
  [ "$db" = mariadb ] && scripts/db/mariadb.sh down --dir "$work/mariadb" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done
# 100 items in PROGRESS (the measured page), and some in the other columns.
for i in $(seq 100); do
  curl -sf -o /dev/null -H 'content-type: application/json' \
    -d "{\"title\":\"item $i\",\"content\":\"benchmark content for item $i\",\"status\":\"PROGRESS\"}" "$base/todo"
done
for status in TODO DONE; do
  for i in $(seq 20); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      -d "{\"title\":\"$status $i\",\"content\":\"other column\",\"status\":\"$status\"}" "$base/todo"
  done
done
[ "$(curl -sf "$base/todo?status=PROGRESS" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 100 ]

# Runs a case $runs times -> "median_rps p50 p99 min_rps max_rps".
repeat() {
  for _ in $(seq "$runs"); do measure "$@"; done | median
}

wrk -t2 -c"$connections" -d2s "$base/todo?status=PROGRESS" >/dev/null   # warm-up
read -r get_rps get_p50 get_p99 get_min get_max < <(repeat "$base/todo?status=PROGRESS")
read -r post_rps post_p50 post_p99 post_min post_max < <(repeat -s bench/post-todo.lua "$base/todo")
rss_mb=$(peak_rss_mb "$api")

cpu=$(cpu_model)
table=$(cat <<EOF
| case | req/s (median of $runs) | range of $runs runs | p50 | p99 |
|---|---:|---:|---:|---:|
| GET /todo?status=PROGRESS (100 rows) | $get_rps | $get_min–$get_max | $get_p50 | $get_p99 |
| POST /todo | $post_rps | $post_min–$post_max | $post_p50 | $post_p99 |

Peak RSS of the API: $rss_mb MB (VmHWM).
EOF
)
echo "$table"

if [ "$record" = 1 ]; then
  {
    echo "\`bench/todo-api.sh --db $db --duration $duration --connections $connections --runs $runs\` on $(nproc) cores ($cpu),"
    echo "$db_label; wrk -t2 -c$connections -d${duration}s on the same machine, API logging every request to a file."
    echo
    echo "$table"
  } | record_section "todo-api-$db"
fi
