#!/usr/bin/env bash
# Benchmarks the registry with 10,000 registered instances (100 apps of 100, registered by a
# keep-alive client): heartbeats per second (wrk, PUT with status=UP over every instance), the
# latency of a full fetch in JSON and in XML (cached, as clients see it between changes, and
# right after a change, when the document is rendered again), of a delta, and the registry's
# peak RSS. Prints a table and replaces its section of docs/benchmarks.md with it.
#
#   bench/registry.sh [--duration 10] [--connections 64] [--runs 3] [--no-record]
#
# Needs wrk. Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=10
connections=64
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
port=$(free_port)
base="http://127.0.0.1:$port"
# Leases long enough that nothing expires during the run.
"$bin" registry --bind "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
pids+=($!)
registry=$!
trap stop_all EXIT
for _ in $(seq 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

# Registers the instances, then times fetches: "kind format p50_ms p99_ms" lines.
python3 - "$port" >"$work/fetch.txt" <<'PY'
import http.client, json, sys, time
port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port)
def request(method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    assert response.status < 300, (method, path, response.status, data[:200])
    return data
for n in range(10000):
    app = f"BENCH-{n // 100}"
    doc = {"instance": {"instanceId": f"i-{n}", "hostName": f"10.0.{n // 250}.{n % 250}",
        "app": app, "ipAddr": f"10.0.{n // 250}.{n % 250}", "status": "UP",
        "port": {"$": 8080, "@enabled": "true"}, "vipAddress": app.lower(),
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 3600},
        "metadata": {"zone": "a"}}}
    request("POST", f"/eureka/apps/{app}", json.dumps(doc), {"content-type": "application/json"})
def percentiles(samples):
    samples.sort()
    return samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99) - 1] * 1000
accept = {"json": {"accept": "application/json"}, "xml": {"accept": "application/xml"}}
for fmt, headers in accept.items():
    size = len(request("GET", "/eureka/apps", headers=headers))
    cached, fresh = [], []
    for i in range(50):
        start = time.perf_counter(); request("GET", "/eureka/apps", headers=headers); cached.append(time.perf_counter() - start)
        # A change (a status override and back), then the first fetch renders again.
        request("PUT", f"/eureka/apps/BENCH-0/i-{i}/status?value=OUT_OF_SERVICE")
        start = time.perf_counter(); request("GET", "/eureka/apps", headers=headers); fresh.append(time.perf_counter() - start)
        request("DELETE", f"/eureka/apps/BENCH-0/i-{i}/status?value=UP")
    print("full-cached", fmt, size, *percentiles(cached))
    print("full-after-change", fmt, size, *percentiles(fresh))
    delta = []
    for _ in range(50):
        start = time.perf_counter(); body = request("GET", "/eureka/apps/delta", headers=headers); delta.append(time.perf_counter() - start)
    print("delta", fmt, len(body), *percentiles(delta))
PY

for run in $(seq "$runs"); do
  measure -s bench/registry-heartbeat.lua "$base/" | tee -a "$work/heartbeats.txt" >&2
done
read -r rps p50 p99 min_rps max_rps < <(median <"$work/heartbeats.txt")
rss=$(peak_rss_mb "$registry")

table=$(
  echo "10,000 instances (100 apps × 100), $(cpu_model), $(nproc) cores; registry and load on the same machine."
  echo
  echo "| measure | result |"
  echo "|---|---|"
  echo "| heartbeats/s (wrk, $connections connections, median of $runs × ${duration}s) | $rps (runs $min_rps–$max_rps); p50 $p50, p99 $p99 |"
  while read -r kind format size p50 p99; do
    printf '| %s fetch, %s (%s KB) | p50 %.1f ms, p99 %.1f ms |\n' "$kind" "$format" "$((size / 1024))" "$p50" "$p99"
  done <"$work/fetch.txt"
  echo "| peak RSS of the registry | $rss MB |"
  echo
  echo "The delta holds all 10,000 instances: every one was registered within its 3-minute window"
  echo "(the delta's worst case)."
  echo
  echo "Command: \`bench/registry.sh --duration $duration --connections $connections --runs $runs\`"
)
echo "$table"
[ "$record" = 1 ] && echo "$table" | record_section registry
exit 0
