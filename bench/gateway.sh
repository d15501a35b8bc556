#!/usr/bin/env bash
# Benchmarks `flotilla gateway` against Debian's nginx, both in front of the same `flotilla echo`
# backend, and the backend alone, with wrk (keep-alive, 64 connections) in one run:
#   direct    wrk -> echo
#   gateway   wrk -> flotilla gateway (2 worker threads) -> echo
#   nginx     wrk -> nginx (2 worker processes)           -> echo
#   combined  the same nginx on a second port, logging nginx's default (shorter) line instead
# Both proxies keep idle upstream connections (nginx: keepalive 64, HTTP/1.1), have compression on
# (todonginx's `gzip on`, the gateway's GZIP default) and log every request to a file in the seeds'
# JSON format: todonginx's `log_format json`, whose fields the gateway's access log writes too
# (plus three). Runs are interleaved (direct, gateway, nginx, combined,
# direct, ...) so machine noise hits all alike; the table shows the median run of each, and a line
# under it compares the gateway with nginx run by run (req/s ratio, p99s, their medians). Replaces
# its section of docs/benchmarks.md with both.
#
#   bench/gateway.sh [--duration 20] [--connections 64] [--runs 3] [--no-record]
#
# Needs wrk and nginx (apt-get install wrk nginx-light). Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=20
connections=64
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
need_wrk_and_nginx

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
echo_port=$(free_port); gw_port=$(free_port); nginx_port=$(free_port); combined_port=$(free_port)
trap stop_all EXIT

"$bin" echo --bind "127.0.0.1:$echo_port" --hostname bench >"$work/echo.log" 2>&1 &
pids+=($!)
BACKEND_HOST="127.0.0.1:$echo_port" WORKER_PROCESSES=2 GATEWAY_ADMIN_BIND=off LOG_STDOUT=1 \
  "$bin" gateway --bind "127.0.0.1:$gw_port" >"$work/gateway.log" 2>&1 &
gateway=$!
pids+=($gateway)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  log_format json '{'
    '"time":"\$time_iso8601",'
    '"remote_addr":"\$remote_addr",'
    '"request":"\$request",'
    '"request_method":"\$request_method",'
    '"request_length":"\$request_length",'
    '"request_uri":"\$request_uri",'
    '"uri":"\$uri",'
    '"query_string":"\$query_string",'
    '"status":"\$status",'
    '"bytes_sent":"\$bytes_sent",'
    '"body_bytes_sent":"\$body_bytes_sent",'
    '"referer":"\$http_referer",'
    '"useragent":"\$http_user_agent",'
    '"forwardedfor":"\$http_x_forwarded_for",'
    '"request_time":"\$request_time",'
    '"upstream_response_time":"\$upstream_response_time"'
    '}';
  access_log $work/nginx/access.log json;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  # todonginx's default (GZIP=on), as the gateway's env mode defaults to compressing too. Neither
  # compresses here (wrk asks for no encoding); both check on every answer.
  gzip on;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  # Inherited by both servers' locations.
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Real-IP \$remote_addr;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  upstream backend {
    server 127.0.0.1:$echo_port max_fails=3 fail_timeout=10s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://backend; }
  }
  server {
    listen 127.0.0.1:$combined_port;
    access_log $work/nginx/combined.log;
    location / { proxy_pass http://backend; }
  }
}
CONF
"$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" 2>"$work/nginx.stderr" &
pids+=($!)

for port in "$echo_port" "$gw_port" "$nginx_port" "$combined_port"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/" | grep -q '^bench, current time' || { echo "port $port does not answer" >&2; exit 1; }
done

declare -A url=([direct]="http://127.0.0.1:$echo_port/" [gateway]="http://127.0.0.1:$gw_port/"
  [nginx]="http://127.0.0.1:$nginx_port/" [combined]="http://127.0.0.1:$combined_port/")
targets="direct gateway nginx combined"
for target in $targets; do wrk -t2 -c"$connections" -d2s "${url[$target]}" >/dev/null; done  # warm-up
for run in $(seq "$runs"); do
  for target in $targets; do
    measure "${url[$target]}" >>"$work/$target.runs"
    echo "run $run $target: $(tail -1 "$work/$target.runs")" >&2
  done
done
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb/1024}'; }
gateway_rss=$(mb "$(hwm_kb "$gateway")")
nginx_kb=0
for pid in $(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")"); do
  nginx_kb=$((nginx_kb + $(hwm_kb "$pid")))
done
nginx_rss=$(mb "$nginx_kb")
echo_rss=$(mb "$(hwm_kb "${pids[0]}")")

read -r d_rps d_p50 d_p99 d_min d_max < <(median <"$work/direct.runs")
read -r g_rps g_p50 g_p99 g_min g_max < <(median <"$work/gateway.runs")
read -r n_rps n_p50 n_p99 n_min n_max < <(median <"$work/nginx.runs")
read -r c_rps c_p50 c_p99 c_min c_max < <(median <"$work/combined.runs")
cpu=$(cpu_model)
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')
table=$(cat <<EOF
| path | req/s (median of $runs) | range of $runs runs | p50 | p99 | peak RSS |
|---|---:|---:|---:|---:|---:|
| wrk -> echo (direct) | $d_rps | $d_min–$d_max | $d_p50 | $d_p99 | $echo_rss MB |
| wrk -> flotilla gateway -> echo | $g_rps | $g_min–$g_max | $g_p50 | $g_p99 | $gateway_rss MB |
| wrk -> nginx $nginx_version -> echo | $n_rps | $n_min–$n_max | $n_p50 | $n_p99 | $nginx_rss MB (master + 2 workers) |
| same nginx, default \`combined\` log line | $c_rps | $c_min–$c_max | $c_p50 | $c_p99 | (same processes) |
EOF
)
# Each run's gateway/nginx pair side by side, measured within seconds of each other: the ratio of
# their req/s and their p99s, and the median of each over the runs (the table's p99 is only the
# median run's).
by_run=$(paste "$work/gateway.runs" "$work/nginx.runs" | awk '
  function ms(t) { return t ~ /us$/ ? t / 1000 : t ~ /ms$/ ? t + 0 : t * 1000 }
  function med(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  { ratio[NR] = 100 * $1 / $4; gp[NR] = ms($3); np[NR] = ms($6)
    ratios = ratios (NR > 1 ? ", " : "") sprintf("%.0f%%", ratio[NR])
    p99s = p99s (NR > 1 ? ", " : "") sprintf("%.2f/%.2f", gp[NR], np[NR])
    lower += gp[NR] <= np[NR] }
  END {
    printf "Gateway vs nginx by run: req/s %s (median %.0f%%); p99 ms %s; ", ratios, med(ratio, NR), p99s
    printf "median p99 %.2f vs %.2f ms; gateway p99 no higher in %d of %d runs.\n", med(gp, NR), med(np, NR), lower, NR }')
echo "$table"
echo
echo "$by_run"

if [ "$record" = 1 ]; then
  {
    echo "\`bench/gateway.sh --duration $duration --connections $connections --runs $runs\` on $(nproc) cores ($cpu):"
    echo "wrk -t2 -c$connections -d${duration}s, \`GET /\` of \`flotilla echo\`; gateway with 2 worker threads, nginx with"
    echo "2 worker processes and \`keepalive 64\` upstream connections; both have compression on (todonginx's"
    echo "\`gzip on\`, the gateway's GZIP default; wrk asks for none) and log every request to a file in the"
    echo "seeds' JSON format (todonginx's \`log_format json\`)."
    echo "Everything (wrk, proxy, backend) shares the same 2 cores."
    echo
    echo "$table"
    echo
    echo "$by_run"
  } | record_section gateway
fi
