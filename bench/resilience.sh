#!/usr/bin/env bash
# Benchmarks issue 22's two costs:
# 1. The protected client on the board's calls to the API: `GET /` of the board (three API calls
#    per page, 30 items each) with protection on (the default) and off
#    (FLOTILLA_CALL_TODO_API_PROTECTION=off: one attempt within the timeout, nothing else), two
#    board processes in front of one API, measured in turn in the same run.
# 2. The dashboard's CPU scraping 50 services x 4 replicas every second: 200 metrics endpoints
#    (one Python process, each answering a real board's /metrics body), CPU time of the
#    dashboard process over the measurement, from /proc.
#
#   bench/resilience.sh [--duration 15] [--connections 8] [--runs 3] [--no-record]
#
# Needs wrk and python3. Not a test: CI does not run it.
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
trap stop_all EXIT
api_port=$(free_port); on_port=$(free_port); off_port=$(free_port)
"$bin" todo-api --bind "127.0.0.1:$api_port" --primary-url "sqlite://$work/todo.db" >"$work/api.log" 2>&1 &
pids+=($!)
"$bin" todo-web --bind "127.0.0.1:$on_port" --api-url "http://127.0.0.1:$api_port" >"$work/on.log" 2>&1 &
pids+=($!); on_pid=$!
FLOTILLA_CALL_TODO_API_PROTECTION=off \
  "$bin" todo-web --bind "127.0.0.1:$off_port" --api-url "http://127.0.0.1:$api_port" >"$work/off.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api_port/ready" >/dev/null && break; sleep 0.1; done
for status in TODO PROGRESS DONE; do
  for i in $(seq 30); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      -d "{\"title\":\"$status item $i\",\"content\":\"what to do about item $i\",\"status\":\"$status\"}" \
      "http://127.0.0.1:$api_port/todo"
  done
done
for port in $on_port $off_port; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
  wrk -t2 -c"$connections" -d2s "http://127.0.0.1:$port/" >/dev/null   # warm-up
done

# In turn, so both see the same machine.
: >"$work/on.txt"; : >"$work/off.txt"
for _ in $(seq "$runs"); do
  measure "http://127.0.0.1:$on_port/" >>"$work/on.txt"
  measure "http://127.0.0.1:$off_port/" >>"$work/off.txt"
done
read -r on_rps on_p50 on_p99 on_min on_max < <(median <"$work/on.txt")
read -r off_rps off_p50 off_p99 off_min off_max < <(median <"$work/off.txt")
ratio=$(python3 -c "print(f'{$on_rps / $off_rps:.3f}')")
curl -sf "http://127.0.0.1:$on_port/metrics" >"$work/metrics.txt"
calls=$(awk '/^flotilla_calls_total\{target="todo-api",outcome="success"\}/ {print $2}' "$work/metrics.txt")
lines=$(wc -l <"$work/metrics.txt")
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

# The dashboard: 50 services x 4 replicas, each answering that board's /metrics body.
python3 - "$work/metrics.txt" "$work/ports.txt" <<'PY' &
import asyncio, sys
body = open(sys.argv[1], "rb").read()
head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: %d\r\n\r\n" % len(body)
async def serve(reader, writer):
    try:
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
    except Exception:
        writer.close()
async def main():
    servers = [await asyncio.start_server(serve, "127.0.0.1", 0) for _ in range(200)]
    with open(sys.argv[2], "w") as f:
        for s in servers:
            f.write(f"{s.sockets[0].getsockname()[1]}\n")
    await asyncio.sleep(3600)
asyncio.run(main())
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$work/ports.txt" ] && [ "$(wc -l <"$work/ports.txt")" = 200 ] && break; sleep 0.1; done
targets=$(awk '{printf "%sservice-%d=http://127.0.0.1:%s", (NR>1?",":""), int((NR-1)/4), $1}' "$work/ports.txt")
dash_port=$(free_port)
DASHBOARD_TARGETS="$targets" "$bin" dashboard --bind "127.0.0.1:$dash_port" >"$work/dash.log" 2>&1 &
pids+=($!); dash_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$dash_port/ready" >/dev/null && break; sleep 0.1; done
sleep 5   # every instance seen twice: rates exist
tiles=$(curl -sf "http://127.0.0.1:$dash_port/api/tiles" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v["services"]), sum(s["hosts"] for s in v["services"]), len(v["tiles"]))')
ticks() { awk '{print $14 + $15}' "/proc/$dash_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks); start=$(date +%s.%N)
sleep "$duration"
after=$(ticks); end=$(date +%s.%N)
cpu=$(python3 -c "print(f'{($after - $before) / $hz / ($end - $start) * 100:.1f}')")
dash_rss=$(peak_rss_mb "$dash_pid")

model=$(cpu_model)
table=$(cat <<EOF
| case | req/s (median of $runs) | range of $runs runs | p50 | p99 |
|---|---:|---:|---:|---:|
| board GET / (3 API calls), protection on | $on_rps | $on_min–$on_max | $on_p50 | $on_p99 |
| board GET / (3 API calls), protection off | $off_rps | $off_min–$off_max | $off_p50 | $off_p99 |

Protected ÷ unprotected: **$ratio** (goal ≥ 0.97); $calls protected calls made in the on runs.

Dashboard scraping 200 instances (50 services × 4, each a real board's /metrics: $lines lines)
every second: services, hosts and tiles seen: $tiles; **$cpu % of a core** over ${duration} s
(goal < 5 %); peak RSS $dash_rss MB.
EOF
)
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo "\`bench/resilience.sh --duration $duration --connections $connections --runs $runs\` on $(nproc) cores ($model):"
    echo "wrk -t2 -c$connections -d${duration}s, the two boards in turn; the API (SQLite) on the same machine."
    echo
    echo "$table"
  } | record_section resilience
fi
