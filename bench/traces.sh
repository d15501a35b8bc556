#!/usr/bin/env bash
# Benchmarks the trace collector: spans ingested per second (wrk posting batches of 100 spans,
# every trace id new, into an SQLite file), then, with what that stored (over a million spans),
# the latency of fetching one trace and of a search, and the disk used per million spans.
# Prints a table and replaces its section of docs/benchmarks.md with it.
#
#   bench/traces.sh [--duration 15] [--connections 8] [--runs 3] [--no-record]
#
# Needs wrk. Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=15
connections=8
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
port=$(free_port)
base="http://127.0.0.1:$port"
TRACES_DATA="$work/traces.db" TRACES_MAX_SPANS=1000000000 \
  "$bin" traces --bind "127.0.0.1:$port" >"$work/traces.log" 2>&1 &
pids+=($!)
collector=$!
trap stop_all EXIT
for _ in $(seq 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

for run in $(seq "$runs"); do
  measure -s bench/traces-ingest.lua "$base/" | tee -a "$work/ingest.txt" >&2
done
read -r rps p50 p99 min_rps max_rps < <(median <"$work/ingest.txt")
rss=$(peak_rss_mb "$collector")

# One trace and a search, timed over the store the runs filled: "kind spans p50_ms p99_ms".
python3 - "$port" >"$work/query.txt" <<'PY'
import http.client, json, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
def get(path):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (path, response.status, body[:200])
    return body
def timed(path, n=200):
    samples = []
    for _ in range(n):
        start = time.perf_counter(); get(path); samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99) - 1] * 1000
traces = json.loads(get("/api/v2/traces?serviceName=svc-3&limit=10"))
trace_id = traces[0][0]["traceId"]
print("trace", len(json.loads(get(f"/api/v2/trace/{trace_id}"))), *timed(f"/api/v2/trace/{trace_id}"))
print("search", 10, *timed("/api/v2/traces?serviceName=svc-3&spanName=get%20/api/3&limit=10", 50))
PY
spans=$(python3 -c "
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM spans').fetchone()[0])" "$work/traces.db")
bytes=$(du -cb "$work"/traces.db* | tail -1 | cut -f1)

table=$(
  echo "Batches of 100 spans (10 traces × 10 spans, tags), every trace new; SQLite file; $(cpu_model), $(nproc) cores; collector and load on the same machine."
  echo
  echo "| measure | result |"
  echo "|---|---|"
  echo "| spans/s ingested (wrk, $connections connections, median of $runs × ${duration}s) | $((rps * 100)) ($((min_rps * 100))–$((max_rps * 100))); $rps batches/s, p50 $p50, p99 $p99 |"
  while read -r kind count p50 p99; do
    printf '| %s (%s spans stored) | p50 %.2f ms, p99 %.2f ms |\n' \
      "$([ "$kind" = trace ] && echo "one trace by id ($count spans)" || echo "a search by service and span name, $count traces")" \
      "$spans" "$p50" "$p99"
  done <"$work/query.txt"
  echo "| disk per million spans (database and WAL) | $(python3 -c "print(round($bytes / $spans * 1e6 / 2**20))") MB |"
  echo "| peak RSS of the collector | $rss MB |"
  echo
  echo "Command: \`bench/traces.sh --duration $duration --connections $connections --runs $runs\`"
)
echo "$table"
[ "$record" = 1 ] && echo "$table" | record_section traces
exit 0
