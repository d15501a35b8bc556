#!/usr/bin/env bash
# Benchmarks the gateway's edge features against Debian's nginx doing the same, with wrk
# (keep-alive, 64 connections), interleaved runs, median of each:
#   static 1 KiB    GET of a 1 KiB file      (gateway `root` route; nginx `alias`, sendfile on)
#   static 1 MiB    GET of a 1 MiB file
#   gzip            GET of a 64 KiB text file compressed on the fly, Accept-Encoding: gzip
#                   (gateway `compress = true`, level 4; nginx `gzip on`, gzip_comp_level 4)
#   access log      GET / proxied to `flotilla echo`, gateway with its JSON access log to a file
#                   vs the same gateway with `access_log = "off"`: the cost of logging
# Both servers use 2 workers and log every request to a file (except the "off" gateway).
# Replaces its section of docs/benchmarks.md with the table.
#
#   bench/gateway-edge.sh [--duration 10] [--connections 64] [--runs 3] [--no-record]
#
# Needs wrk and nginx (apt-get install wrk nginx-light). Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=10
connections=64
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
need_wrk_and_nginx

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
echo_port=$(free_port); gw_port=$(free_port); quiet_port=$(free_port); nginx_port=$(free_port)
trap stop_all EXIT

mkdir -p "$work/site" "$work/nginx"
chmod 755 "$work"   # nginx's workers (user nobody when started as root) must read the files
head -c 1024 /dev/urandom >"$work/site/1k.bin"
head -c 1048576 /dev/urandom >"$work/site/1m.bin"
python3 - "$work/site/text.txt" <<'PY'
import sys
lines = "".join("flotilla gateway benchmark line %05d of compressible text\n" % i for i in range(1200))
open(sys.argv[1], "w").write(lines[:65536])
PY

chmod -R a+rX "$work/site"
"$bin" echo --bind "127.0.0.1:$echo_port" --hostname bench >"$work/echo.log" 2>&1 &
pids+=($!)
gateway_config() {  # $1: port, $2: access_log
  cat <<TOML
access_log = "$2"
[admin]
bind = "off"
[[listener]]
bind = "127.0.0.1:$1"
[[route]]
path = "/static/"
root = "$work/site"
[[route]]
path = "/gz/"
root = "$work/site"
compress = true
[[route]]
path = "/"
upstream = "echo"
[upstream.echo]
server = [{ address = "127.0.0.1:$echo_port" }]
TOML
}
gateway_config "$gw_port" "$work/gateway-access.log" >"$work/gateway.toml"
gateway_config "$quiet_port" off >"$work/quiet.toml"
WORKER_PROCESSES=2 "$bin" gateway --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gateway=$!
pids+=($gateway)
WORKER_PROCESSES=2 "$bin" gateway --config "$work/quiet.toml" >"$work/quiet.log" 2>&1 &
pids+=($!)

cat >"$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log $work/nginx/access.log;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  types { text/plain txt; application/octet-stream bin; }
  client_body_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$nginx_port;
    location /static/ { alias $work/site/; }
    location /gz/ {
      alias $work/site/;
      gzip on;
      gzip_types text/plain;
      gzip_min_length 256;
      gzip_comp_level 4;
    }
  }
}
CONF
"$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" 2>"$work/nginx.stderr" &
pids+=($!)

for port in "$gw_port" "$quiet_port" "$nginx_port"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/static/1k.bin" >/dev/null && break; sleep 0.1; done
  cmp -s <(curl -sf "http://127.0.0.1:$port/static/1m.bin") "$work/site/1m.bin" \
    || { echo "port $port does not serve the files" >&2; exit 1; }
  curl -sf -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/gz/text.txt" | gunzip | cmp -s - "$work/site/text.txt" \
    || { echo "port $port does not gzip" >&2; exit 1; }
done

gz=(-H 'Accept-Encoding: gzip')
declare -A url=(
  [gw_1k]="http://127.0.0.1:$gw_port/static/1k.bin" [nginx_1k]="http://127.0.0.1:$nginx_port/static/1k.bin"
  [gw_1m]="http://127.0.0.1:$gw_port/static/1m.bin" [nginx_1m]="http://127.0.0.1:$nginx_port/static/1m.bin"
  [gw_gz]="http://127.0.0.1:$gw_port/gz/text.txt" [nginx_gz]="http://127.0.0.1:$nginx_port/gz/text.txt"
  [gw_log]="http://127.0.0.1:$gw_port/" [gw_nolog]="http://127.0.0.1:$quiet_port/"
)
cases=(gw_1k nginx_1k gw_1m nginx_1m gw_gz nginx_gz gw_log gw_nolog)
run_case() {
  case "$1" in
    *_gz) measure "${gz[@]}" "${url[$1]}" ;;
    *) measure "${url[$1]}" ;;
  esac
}
for c in "${cases[@]}"; do wrk -t2 -c"$connections" -d2s "${url[$c]}" >/dev/null; done  # warm-up
for run in $(seq "$runs"); do
  for c in "${cases[@]}"; do
    run_case "$c" >>"$work/$c.runs"
    echo "run $run $c: $(tail -1 "$work/$c.runs")" >&2
  done
done
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
gateway_rss=$(hwm_mb "$gateway")

row() {  # label, case
  read -r rps p50 p99 lo hi < <(median <"$work/$2.runs")
  echo "| $1 | $rps | $lo–$hi | $p50 | $p99 |"
}
read -r log_rps _ < <(median <"$work/gw_log.runs")
read -r nolog_rps _ < <(median <"$work/gw_nolog.runs")
log_cost=$(awk -v a="$log_rps" -v b="$nolog_rps" 'BEGIN {printf "%.1f", (1 - a / b) * 100}')
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')
table=$(cat <<TABLE
| case | req/s (median of $runs) | range | p50 | p99 |
|---|---:|---:|---:|---:|
$(row "static 1 KiB, flotilla gateway" gw_1k)
$(row "static 1 KiB, nginx $nginx_version" nginx_1k)
$(row "static 1 MiB, flotilla gateway" gw_1m)
$(row "static 1 MiB, nginx $nginx_version" nginx_1m)
$(row "gzip 64 KiB text, flotilla gateway" gw_gz)
$(row "gzip 64 KiB text, nginx $nginx_version" nginx_gz)
$(row "proxy to echo, gateway with JSON access log to a file" gw_log)
$(row "proxy to echo, gateway with access_log = \"off\"" gw_nolog)
TABLE
)
echo "$table"
echo "access log cost: $log_cost% of throughput; gateway peak RSS $gateway_rss MB"

if [ "$record" = 1 ]; then
  {
    echo "\`bench/gateway-edge.sh --duration $duration --connections $connections --runs $runs\` on $(nproc) cores ($(cpu_model)):"
    echo "wrk -t2 -c$connections -d${duration}s; gateway and nginx with 2 workers each, both logging every request"
    echo "to a file (nginx with \`sendfile on\`). Everything shares the same 2 cores."
    echo
    echo "$table"
    echo
    echo "JSON access log cost: $log_cost% of throughput. Gateway peak RSS: $gateway_rss MB."
  } | record_section gateway-edge
fi
