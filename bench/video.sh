#!/usr/bin/env bash
# The video pair next to nginx serving the same file from disk: throughput of whole-file GETs of
# a 200 MB video (4 connections), latency of a 64 KiB Range request in the middle of it (32
# connections), for video-streaming → video-storage (the viewer's path), video-storage alone and
# nginx; and the pair's peak RSS after 64 connections streamed the whole file. Replaces its
# section of docs/benchmarks.md.
#
#   bench/video.sh [--duration 10] [--runs 3] [--no-record]
#
# Needs wrk and nginx (apt-get install wrk nginx-light). Not a test: CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
duration=10
connections=4
runs=3
parse_options "$@"
[ ${#rest[@]} -eq 0 ] || { echo "unknown argument ${rest[0]}" >&2; exit 2; }
need_wrk_and_nginx

cargo build --release --quiet
bin=target/release/flotilla
work=$(mktemp -d)
trap stop_all EXIT

mkdir -p "$work/videos" "$work/nginx"
head -c $((200 * 1024 * 1024)) /dev/urandom >"$work/videos/film.mp4"
# nginx's workers run as nobody: they must be able to read the file (mktemp made the dir 0700).
chmod 755 "$work" "$work/videos"
chmod 644 "$work/videos/film.mp4"

nginx_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  types { video/mp4 mp4; }
  server {
    listen 127.0.0.1:$nginx_port;
    location /videos/ { alias $work/videos/; }
  }
}
CONF
"$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log" 2>"$work/nginx.stderr" &
storage_port=$(free_port)
LOG_LEVEL=warn VIDEO_STORE="$work/videos" "$bin" video-storage --bind "127.0.0.1:$storage_port" \
  >"$work/storage.log" 2>&1 &
storage_pid=$!
pids+=($storage_pid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$storage_port/ready" >/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$nginx_port/videos/film.mp4" && break; sleep 0.1; done

streaming_port=$(free_port)
LOG_LEVEL=warn VIDEO_STORAGE_URL="http://127.0.0.1:$storage_port" VIDEO_DB_URL="sqlite://$work/video.db" \
  "$bin" video-streaming --bind "127.0.0.1:$streaming_port" >"$work/streaming.log" 2>&1 &
streaming_pid=$!
pids+=($streaming_pid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$streaming_port/ready" >/dev/null && break; sleep 0.1; done
# The film goes in through video-streaming's API, as a user's upload would (a second copy in the
# store, under the video's id).
id=$(curl -sf -F title=Film -F "file=@$work/videos/film.mp4" "http://127.0.0.1:$streaming_port/api/videos" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
streaming_url="http://127.0.0.1:$streaming_port/video?id=$id"
storage_url="http://127.0.0.1:$storage_port/video?path=film.mp4"
nginx_url="http://127.0.0.1:$nginx_port/videos/film.mp4"
middle="Range: bytes=104857600-104923135"

# Whole-file throughput in MB/s: wrk's transfer rate.
throughput() {
  wrk -t2 -c"$connections" -d"${duration}s" "$1" | awk '/Transfer\/sec/ {
    v = $2; unit = substr(v, length(v) - 1); n = v + 0
    if (unit == "GB") n *= 1024; else if (unit == "KB") n /= 1024
    printf "%d\n", n }'
}

for run in $(seq "$runs"); do
  echo "round $run" >&2
  for target in streaming storage nginx; do
    case "$target" in
      streaming) url=$streaming_url ;;
      storage) url=$storage_url ;;
      nginx) url=$nginx_url ;;
    esac
    throughput "$url" >>"$work/$target-whole.txt"
    connections=32 measure -H "$middle" "$url" >>"$work/$target-range.txt"
  done
done
# Time to the first byte of one Range request in the middle, alone: the median of 50 in a row.
ttfb() {
  for _ in $(seq 50); do
    curl -s -o /dev/null -H "$middle" -w '%{time_starttransfer}\n' "$1"
  done | sort -n | awk '{v[NR]=$1} END {printf "%.2f ms\n", v[int((NR+1)/2)] * 1000}'
}
for target in streaming storage nginx; do
  case "$target" in
    streaming) ttfb "$streaming_url" >"$work/$target-ttfb.txt" ;;
    storage) ttfb "$storage_url" >"$work/$target-ttfb.txt" ;;
    nginx) ttfb "$nginx_url" >"$work/$target-ttfb.txt" ;;
  esac
done
# Peak memory while 64 connections stream the whole file through the pair.
wrk -t2 -c64 -d"${duration}s" "$streaming_url" >/dev/null
storage_rss=$(peak_rss_mb "$storage_pid")
streaming_rss=$(peak_rss_mb "$streaming_pid")

median_col() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
table=$(
  echo "$(cpu_model), $(nproc) cores; one 200 MB file on the local disk; wrk -t2; median of $runs rounds of ${duration}s."
  echo
  echo "| server | whole file, 4 connections | vs nginx | 64 KiB Range in the middle, 32 connections: req/s | p50 | p99 | one Range request alone: first byte |"
  echo "|---|---|---|---|---|---|---|"
  nginx_mbs=$(median_col "$work/nginx-whole.txt" 1)
  for target in streaming storage nginx; do
    case "$target" in
      streaming) label="video-streaming → video-storage (the viewer's path)" ;;
      storage) label="video-storage alone (local directory)" ;;
      nginx) label="nginx 1 worker, sendfile" ;;
    esac
    mbs=$(median_col "$work/$target-whole.txt" 1)
    read -r rps p50 p99 _ _ < <(median <"$work/$target-range.txt")
    echo "| $label | $mbs MB/s | $(python3 -c "print(f'{$mbs / max($nginx_mbs, 1):.2f}×')") | $rps | $p50 | $p99 | $(cat "$work/$target-ttfb.txt") |"
  done
  echo
  echo "Peak RSS after 64 connections streamed the whole file through the pair for ${duration}s: video-streaming $streaming_rss MB, video-storage $storage_rss MB."
  echo
  echo "Command: \`bench/video.sh --duration $duration --runs $runs\`"
)
echo "$table"
[ "$record" = 1 ] && echo "$table" | record_section video
exit 0
