#!/usr/bin/env bash
# Benchmarks the TODO API with wrk (keep-alive, 64 connections), on its embedded SQLite default
# or (--db mariadb) on a MariaDB primary and replica started by scripts/db/mariadb.sh:
#   GET   /todo?status=PROGRESS  with 100 rows in that column
#   POST  /todo
#   PATCH /todo/{id}  (one row each, ids 1..100 in turn)
# and the API's peak RSS. On MariaDB it also measures the database alone doing the same work at
# the same concurrency with sysbench (C client): the list query on the replica, the INSERT and a
# one-row UPDATE on the primary, each committed on its own; the table gives its queries/s, p50 and
# p99, and the API's req/s as a fraction of its queries/s. Prints a table and replaces its section of
# docs/benchmarks.md with it.
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
if [ "$db" = mariadb ] && ! command -v sysbench >/dev/null; then
  echo "sysbench is missing (it measures the database alone): apt-get install sysbench" >&2; exit 1
fi
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
read -r patch_rps patch_p50 patch_p99 patch_min patch_max < <(repeat -s bench/patch-todo.lua "$base")
rss_mb=$(peak_rss_mb "$api")

# The database alone: the same statements at the same concurrency for as long, with the API idle,
# through sysbench (C client) -> "queries/s p50 p99" of the run with the median queries/s. p50
# comes from sysbench's latency histogram, p99 from its percentile.
db_alone() { # URL QUERY
  local port=${1##*:}; port=${port%%/*}
  for _ in $(seq "$runs"); do
    SB_QUERY=$2 sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
      --mysql-user=gihyo --mysql-password=gihyo --mysql-db=tododb --threads="$connections" \
      --time="$duration" --percentile=99 --histogram=on bench/db-alone.lua run | awk '
        /^ *[0-9.]+ \|/ { value[++n] = $1; count[n] = $NF; total += $NF }
        /queries:/ && /per sec/ { gsub(/[()]/, "", $3); qps = int($3) }
        /99th percentile:/ { p99 = $3 }
        END {
          for (i = 1; i <= n; i++) { seen += count[i]; if (seen * 2 >= total) { p50 = value[i]; break } }
          printf "%d %.2fms %.2fms\n", qps, p50, p99
        }'
  done | sort -n | awk '{line[NR] = $0} END {print line[int((NR + 1) / 2)]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
if [ "$db" = mariadb ]; then
  columns="id, title, content, status, created, updated"
  read -r get_db get_db_p50 get_db_p99 < <(db_alone "${urls[1]}" "SELECT $columns FROM todo WHERE status = 'PROGRESS' ORDER BY updated DESC, id DESC LIMIT 101")
  read -r post_db post_db_p50 post_db_p99 < <(db_alone "${urls[0]}" "INSERT INTO todo (title, content, status, created, updated) VALUES ('benchmark item', 'written by sysbench', 'TODO', UTC_TIMESTAMP(), UTC_TIMESTAMP())")
  read -r patch_db patch_db_p50 patch_db_p99 < <(db_alone "${urls[0]}" "UPDATE todo SET status = 'PROGRESS', updated = UTC_TIMESTAMP() WHERE id = %d")
  get_db_col=" | $get_db | $get_db_p50 | $get_db_p99 | $(ratio "$get_rps" "$get_db")"
  post_db_col=" | $post_db | $post_db_p50 | $post_db_p99 | $(ratio "$post_rps" "$post_db")"
  patch_db_col=" | $patch_db | $patch_db_p50 | $patch_db_p99 | $(ratio "$patch_rps" "$patch_db")"
  db_head=" database alone, queries/s | its p50 | its p99 | API ÷ database |"
  db_rule="---:|---:|---:|---:|"
else
  get_db_col="" post_db_col="" patch_db_col="" db_head="" db_rule=""
fi

cpu=$(cpu_model)
table=$(cat <<EOF
| case | req/s (median of $runs) | range of $runs runs | p50 | p99 |$db_head
|---|---:|---:|---:|---:|$db_rule
| GET /todo?status=PROGRESS (100 rows) | $get_rps | $get_min–$get_max | $get_p50 | $get_p99$get_db_col |
| POST /todo | $post_rps | $post_min–$post_max | $post_p50 | $post_p99$post_db_col |
| PATCH /todo/{id} | $patch_rps | $patch_min–$patch_max | $patch_p50 | $patch_p99$patch_db_col |

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
