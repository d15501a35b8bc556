#!/usr/bin/env bash
# A local MariaDB primary with replicas, for the TODO API: separate mariadbd processes on their
# own ports and data directories (no systemd), binary logs, distinct server ids, a replication
# user and GTID replication, each node run by deploy/mariadb/node.sh (the same script the
# container image uses, driven by the original tododb environment variables).
#
#   scripts/db/mariadb.sh up [--replicas N] [--dir DIR] [--base-port PORT]
#       Starts the cluster (or the nodes of it that are stopped) and prints one connection URL per
#       line, primary first: mysql://gihyo:gihyo@127.0.0.1:PORT/tododb. Idempotent.
#   scripts/db/mariadb.sh down [--dir DIR]         stops every node and removes the data
#   scripts/db/mariadb.sh status [--dir DIR]       each node: running or not, replication state
#   scripts/db/mariadb.sh urls [--dir DIR]         the URLs again
#   scripts/db/mariadb.sh stop NODE [--dir DIR]    stops one node (primary, replica1, ...), keeps its data
#   scripts/db/mariadb.sh start NODE [--dir DIR]   starts it again
#
# DIR defaults to .data/mariadb in the repository; ports default to free ones, chosen at the
# first `up` and kept in DIR/cluster.env. Installs Debian's mariadb-server if it is missing.
# Credentials are the seeds': root/gihyo, database tododb, user gihyo/gihyo, replication repl/gihyo.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
node_script=$repo/deploy/mariadb/node.sh

command=${1:-}
[ -n "$command" ] && shift
node_arg=""
case "$command" in stop|start) node_arg=${1:-}; [ -n "$node_arg" ] && shift ;; esac
replicas=1
dir=$repo/.data/mariadb
base_port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --base-port) base_port=$2; shift 2 ;;
    *) echo "mariadb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$replicas" in ''|*[!0-9]*) echo "mariadb.sh: --replicas needs a number" >&2; exit 2 ;; esac

log() { echo "mariadb.sh: $*" >&2; }

ensure_installed() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] && return 0
  log "installing mariadb-server (Debian package)"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  # The package may start its own server; the cluster does not use it.
  "${sudo[@]}" service mariadb stop >/dev/null 2>&1 || true
}
export PATH=$PATH:/usr/sbin

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

node_names() {
  echo primary
  for i in $(seq 1 "$REPLICAS"); do echo "replica$i"; done
}

node_port() {
  case "$1" in
    primary) echo "$PRIMARY_PORT" ;;
    replica*) local i=${1#replica}; echo $((FIRST_REPLICA_PORT + i - 1)) ;;
  esac
}

node_pid() {
  local pidfile=$dir/$1/node.pid
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"
}

load_cluster() {
  [ -f "$dir/cluster.env" ] || { log "no cluster in $dir (run: mariadb.sh up)"; exit 1; }
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
}

url() { echo "mysql://gihyo:gihyo@127.0.0.1:$(node_port "$1")/tododb"; }

start_node() {
  local name=$1 port
  port=$(node_port "$name")
  if node_pid "$name" >/dev/null; then return 0; fi
  mkdir -p "$dir/$name"
  local role_env=(MYSQL_MASTER=true)
  local server_id=1
  if [ "$name" != primary ]; then
    role_env=(MYSQL_MASTER= MYSQL_MASTER_HOST=127.0.0.1 MYSQL_MASTER_PORT="$PRIMARY_PORT"
      MYSQL_REPL_USER=repl MYSQL_REPL_PASSWORD=gihyo)
    server_id=$((1 + ${name#replica}))
  fi
  env MYSQL_ROOT_PASSWORD=gihyo MYSQL_DATABASE=tododb MYSQL_USER=gihyo MYSQL_PASSWORD=gihyo \
    "${role_env[@]}" MARIADB_DATADIR="$dir/$name/data" MARIADB_RUNDIR="$dir/$name/run" \
    MARIADB_PORT="$port" MARIADB_BIND=127.0.0.1 MARIADB_SERVER_ID="$server_id" \
    setsid "$node_script" >>"$dir/$name/node.log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/$name/node.pid"
}

# The lines of a node's log that say why it failed (the errors come first, before the long
# generic advice mariadb-install-db prints), then its last lines.
show_failure() {
  grep -E 'ERROR|\[Warning\]|mariadb-node:' "$1" | head -n 20 >&2 || true
  echo "... last lines:" >&2
  tail -n 5 "$1" >&2
}

# Waits until a node answers on its port and has finished initialising.
wait_node() {
  local name=$1 port
  port=$(node_port "$name")
  for _ in $(seq 600); do
    if [ -e "$dir/$name/data/.flotilla-initialized" ] \
        && mariadb -h127.0.0.1 -P"$port" -ugihyo -pgihyo -e "SELECT 1" tododb >/dev/null 2>&1; then
      return 0
    fi
    node_pid "$name" >/dev/null || { log "$name exited; see $dir/$name/node.log"; show_failure "$dir/$name/node.log"; exit 1; }
    sleep 0.2
  done
  log "$name did not become ready; see $dir/$name/node.log"
  exit 1
}

stop_node() {
  local name=$1 pid
  pid=$(node_pid "$name") || return 0
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || { rm -f "$dir/$name/node.pid"; return 0; }; sleep 0.1; done
  log "$name did not stop within 30 s; killing it"
  kill -KILL -- -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/$name/node.pid"
}

case "$command" in
  up)
    ensure_installed
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9
    if [ ! -f "$dir/cluster.env" ]; then
      if [ -n "$base_port" ]; then
        primary_port=$base_port; first=$((base_port + 1))
      else
        primary_port=$(free_port); first=$(free_port)
        # Replica ports are consecutive from the first one; check each is free.
        while :; do
          ok=1
          for i in $(seq 0 $((replicas - 1))); do
            python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $((first + i))))" 2>/dev/null || ok=0
          done
          [ $((first + replicas - 1)) -lt 65536 ] && [ "$ok" = 1 ] && [ "$first" != "$primary_port" ] && break
          first=$(free_port)
        done
      fi
      printf 'REPLICAS=%s\nPRIMARY_PORT=%s\nFIRST_REPLICA_PORT=%s\n' "$replicas" "$primary_port" "$first" >"$dir/cluster.env"
    fi
    load_cluster
    start_node primary
    wait_node primary
    for name in $(node_names | tail -n +2); do start_node "$name"; done
    for name in $(node_names | tail -n +2); do wait_node "$name"; done
    for name in $(node_names); do url "$name"; done
    ;;
  down)
    if [ -f "$dir/cluster.env" ]; then
      load_cluster
      for name in $(node_names | tac); do stop_node "$name"; done
    fi
    rm -rf "$dir"
    ;;
  status)
    load_cluster
    for name in $(node_names); do
      port=$(node_port "$name")
      if pid=$(node_pid "$name"); then state="running (pid $pid)"; else state="stopped"; fi
      line="$name 127.0.0.1:$port $state"
      if [ "$name" != primary ] && [ "$state" != stopped ]; then
        repl=$(mariadb -h127.0.0.1 -P"$port" -uroot -pgihyo -e "SHOW SLAVE STATUS\G" 2>/dev/null \
          | awk -F': ' '/Slave_IO_Running:|Slave_SQL_Running:|Seconds_Behind_Master:|Gtid_IO_Pos:/ {gsub(/ /,"",$1); printf "%s=%s ", $1, $2}')
        line="$line $repl"
      fi
      echo "$line"
    done
    ;;
  urls)
    load_cluster
    for name in $(node_names); do url "$name"; done
    ;;
  stop|start)
    load_cluster
    # (grep -q would stop reading early and fail the pipeline under pipefail)
    node_names | grep -x "$node_arg" >/dev/null || { log "no node '$node_arg' (nodes: $(node_names | paste -sd' ' -))"; exit 2; }
    if [ "$command" = stop ]; then stop_node "$node_arg"; else start_node "$node_arg"; wait_node "$node_arg"; fi
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
