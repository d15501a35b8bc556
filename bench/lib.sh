# Shared by the benchmark scripts: options, free ports, one wrk run, the median of several.
# Source it after setting the defaults of duration, connections and runs; `parse_options "$@"`
# then reads --duration, --connections, --runs and --no-record (and leaves the rest in `rest`).

record=1
rest=()
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --duration) duration=$2; shift 2 ;;
      --connections) connections=$2; shift 2 ;;
      --runs) runs=$2; shift 2 ;;
      --no-record) record=0; shift ;;
      *) rest+=("$1"); shift ;;
    esac
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One wrk run -> "req/s p50 p99"; fails on any non-2xx answer or socket error. `wrk_pin` (such
# as "taskset -c 0") and `wrk_threads` (default 2) change how wrk runs.
measure() {
  ${wrk_pin:-} wrk -t"${wrk_threads:-2}" -c"$connections" -d"${duration}s" --latency "$@" | awk '
    /Requests\/sec/ {rps=$2}
    $1=="50%" {p50=$2}
    $1=="99%" {p99=$2}
    /Non-2xx/ {bad=$NF}
    /Socket errors/ {errors=$0}
    END {if (bad || errors) {print "errors: " bad " " errors > "/dev/stderr"; exit 1}; printf "%d %s %s\n", rps, p50, p99}'
}

# Lines of "req/s p50 p99" on stdin -> "median_rps p50 p99 min_rps max_rps" (latencies of the
# median run).
median() {
  sort -n | awk '{rps[NR]=$1; p50[NR]=$2; p99[NR]=$3}
    END {m=int((NR+1)/2); printf "%d %s %s %d %d\n", rps[m], p50[m], p99[m], rps[1], rps[NR]}'
}

cpu_model() { awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo; }

# Peak RSS of a process in MB.
peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# wrk and nginx, or a message saying how to get them; sets nginx_bin.
need_wrk_and_nginx() {
  for tool in wrk nginx; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
      || { echo "needs $tool: apt-get install wrk nginx-light" >&2; exit 1; }
  done
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
}

# On exit: stop every process in `pids` and the nginx whose pid file is in $work, remove $work.
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Replaces the section `name` of docs/benchmarks.md (between `<!-- bench:name -->` and
# `<!-- /bench:name -->`) with standard input, stamped with today's date: the page keeps one
# current table per benchmark (git keeps the earlier ones).
record_section() {
  python3 -c '
import sys, datetime
name = sys.argv[1]
body = sys.stdin.read().strip()
path = "docs/benchmarks.md"
text = open(path).read()
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
if start not in text or end not in text:
    sys.exit(f"docs/benchmarks.md has no section {name}")
today = datetime.date.today().isoformat()
section = f"{start}\nMeasured {today}.\n\n{body}\n{end}"
text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
open(path, "w").write(text)
print(f"recorded in docs/benchmarks.md ({name})")
' "$1"
}
