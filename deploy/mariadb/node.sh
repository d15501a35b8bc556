#!/usr/bin/env bash
# Runs one MariaDB node of the TODO database: a primary, or a replica that sets up its own
# replication. Initialises the data directory on first start only; later starts reuse it.
# Runs mariadbd in the foreground (a container entrypoint) and stops it cleanly on SIGTERM/SIGINT.
#
# The original tododb image's environment contract:
#   MYSQL_ROOT_PASSWORD   (required) root password
#   MYSQL_DATABASE        database to create                     (default tododb)
#   MYSQL_USER / MYSQL_PASSWORD   application user, all rights on MYSQL_DATABASE
#   MYSQL_MASTER          set (any value): this node is the primary
#   MYSQL_MASTER_HOST     replica: the primary's host            (required on a replica)
#   MYSQL_REPL_USER / MYSQL_REPL_PASSWORD   replica: replication user it creates on the primary
# Additions:
#   <any of the above>_FILE  read the value from this file instead (Docker secrets)
#   MYSQL_MASTER_PORT     replica: the primary's port            (default 3306)
#   MARIADB_DATADIR       data directory                         (default /var/lib/mysql)
#   MARIADB_RUNDIR        socket, pid file, generated config     (default /run/mysqld)
#   MARIADB_PORT          port                                   (default 3306)
#   MARIADB_BIND          listen address                         (default 0.0.0.0)
#   MARIADB_SERVER_ID     unique server id                       (default: derived, see below)
#   MARIADB_BUFFER_POOL   InnoDB buffer pool size                (default 64M)
#
# Unlike the original (which read SHOW MASTER STATUS and so missed rows written before the replica
# started), a new replica copies the primary's database with a consistent dump that carries its
# GTID position, then replicates from exactly there. The primary's own setup (users, database) is
# kept out of the binary log, so replicas never replay it.
set -euo pipefail

log() { echo "mariadb-node: $*" >&2; }
die() { log "$*"; exit 1; }

# NAME_FILE: the value of NAME is in that file (how Docker secrets arrive).
for name in MYSQL_ROOT_PASSWORD MYSQL_DATABASE MYSQL_USER MYSQL_PASSWORD MYSQL_REPL_USER MYSQL_REPL_PASSWORD; do
  file_var=${name}_FILE
  if [ -n "${!file_var:-}" ]; then
    [ -z "${!name:-}" ] || die "both $name and $file_var are set; set only one"
    [ -r "${!file_var}" ] || die "$file_var=${!file_var}: cannot read"
    export "$name=$(cat "${!file_var}")"
  fi
done

# `node.sh health`: the container health check. Healthy once the node has finished its own
# setup (a replica: copied the primary and started replicating) and the server answers.
if [ "${1:-}" = health ]; then
  rundir=${MARIADB_RUNDIR:-/run/mysqld}
  [ -e "${MARIADB_DATADIR:-/var/lib/mysql}/.flotilla-initialized" ] || exit 1
  [ -e "$rundir/ready" ] || exit 1
  MYSQL_PWD=${MYSQL_ROOT_PASSWORD:-} exec mariadb-admin --defaults-file="$rundir/my.cnf" --protocol=socket -uroot ping >/dev/null 2>&1
fi

: "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD is required}"
database=${MYSQL_DATABASE:-tododb}
datadir=${MARIADB_DATADIR:-/var/lib/mysql}
rundir=${MARIADB_RUNDIR:-/run/mysqld}
port=${MARIADB_PORT:-3306}
bind=${MARIADB_BIND:-0.0.0.0}
if [ -n "${MYSQL_MASTER:-}" ]; then role=primary; else role=replica; fi
if [ "$role" = replica ]; then
  : "${MYSQL_MASTER_HOST:?a replica needs MYSQL_MASTER_HOST (or set MYSQL_MASTER on the primary)}"
  : "${MYSQL_REPL_USER:?a replica needs MYSQL_REPL_USER}"
  : "${MYSQL_REPL_PASSWORD:?a replica needs MYSQL_REPL_PASSWORD}"
fi
primary_port=${MYSQL_MASTER_PORT:-3306}

# A server id unique among the nodes: given, or derived from this host's addresses and name
# (the original used only the last two octets of one address, which collides across networks),
# then kept in the data directory so a restarted container (new name, new address) keeps it.
server_id=${MARIADB_SERVER_ID:-}
if [ -z "$server_id" ] && [ -s "$datadir/.flotilla-server-id" ]; then
  server_id=$(cat "$datadir/.flotilla-server-id")
fi
if [ -z "$server_id" ]; then
  seed="$(hostname 2>/dev/null):$(hostname -i 2>/dev/null || true):$port:$RANDOM"
  server_id=$(( 0x$(printf '%s' "$seed" | md5sum | cut -c1-7) % 4294967294 + 1 ))
fi

# Temporary tables go to a directory of this node's own: a starting mariadbd removes the temporary
# table files it finds in its tmpdir, so nodes sharing /tmp (several on one machine) removed each
# other's while initialising (mariadb-install-db then failed: 5 of 18 parallel starts here).
tmpdir=$rundir/tmp
mkdir -p "$datadir" "$rundir" "$tmpdir"
socket=$rundir/mariadb.sock
cnf=$rundir/my.cnf
run_as=()
[ "$(id -u)" -eq 0 ] && run_as=(--user=root)

{
  echo "[mariadbd]"
  echo "datadir=$datadir"
  echo "port=$port"
  echo "bind-address=$bind"
  echo "socket=$socket"
  echo "pid-file=$rundir/mariadb.pid"
  echo "tmpdir=$tmpdir"
  echo "server-id=$server_id"
  echo "log-bin=mariadb-bin"
  echo "log-slave-updates=ON"
  echo "binlog-format=ROW"
  echo "relay-log=relay-bin"
  echo "character-set-server=utf8mb4"
  echo "collation-server=utf8mb4_unicode_ci"
  echo "skip-name-resolve"
  echo "innodb-buffer-pool-size=${MARIADB_BUFFER_POOL:-64M}"
  echo "innodb-log-file-size=32M"
  echo "performance-schema=OFF"
  echo "max-connections=300"
  [ "$role" = replica ] && echo "read-only=ON"
  echo "[client]"
  echo "socket=$socket"
} >"$cnf"

local_sql() { mariadb --defaults-file="$cnf" --protocol=socket -uroot "$@"; }
primary_sql() { mariadb -h "$MYSQL_MASTER_HOST" -P "$primary_port" -uroot -p"$MYSQL_ROOT_PASSWORD" "$@"; }
sql_string() { printf "'%s'" "${1//\'/\'\'}"; }

marker=$datadir/.flotilla-initialized
fresh=0
if [ ! -e "$marker" ]; then
  if [ -d "$datadir/mysql" ]; then
    log "an earlier initialisation did not finish; starting over"
    find "$datadir" -mindepth 1 -delete
  fi
  log "initialising $datadir as a $role (server-id $server_id)"
  mariadb-install-db --defaults-file="$cnf" "${run_as[@]}" --auth-root-authentication-method=normal \
    --skip-test-db >"$rundir/install.log" 2>&1 || { cat "$rundir/install.log" >&2; die "mariadb-install-db failed"; }
  fresh=1
fi

rm -f "$rundir/ready"
mariadbd --defaults-file="$cnf" "${run_as[@]}" &
mariadbd_pid=$!
stop() {
  log "stopping mariadbd"
  kill -TERM "$mariadbd_pid" 2>/dev/null || true
  wait "$mariadbd_pid" 2>/dev/null || true
  exit 0
}
trap stop TERM INT

for _ in $(seq 300); do
  # ping succeeds once the server answers, even when the (unknown yet) password is refused.
  if [ -S "$socket" ] && mariadb-admin --defaults-file="$cnf" --protocol=socket -uroot ping >/dev/null 2>&1; then
    break
  fi
  kill -0 "$mariadbd_pid" 2>/dev/null || die "mariadbd exited during startup"
  sleep 0.2
done

if [ "$fresh" = 1 ]; then
  root_pw=$(sql_string "$MYSQL_ROOT_PASSWORD")
  # mariadb-install-db also creates password-less root accounts for 127.0.0.1, ::1 and the host
  # name; being more specific than root@'%', they would refuse every TCP login as root.
  extra_roots=$(local_sql -N -e "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user
    WHERE user = 'root' AND host NOT IN ('localhost', '%')" | paste -sd, -)
  {
    # Setup stays out of the binary log: each node creates its own users and database.
    echo "SET sql_log_bin = 0;"
    [ -n "$extra_roots" ] && echo "DROP USER $extra_roots;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $root_pw;"
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY $root_pw;"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    echo "CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    if [ -n "${MYSQL_USER:-}" ]; then
      echo "CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY $(sql_string "${MYSQL_PASSWORD:-}");"
      echo "GRANT ALL ON \`$database\`.* TO '$MYSQL_USER'@'%';"
    fi
    echo "FLUSH PRIVILEGES;"
  } | local_sql

  if [ "$role" = replica ]; then
    until primary_sql -e "SELECT 1" >/dev/null 2>&1; do
      log "primary $MYSQL_MASTER_HOST:$primary_port is not ready; retrying"
      sleep 1
    done
    log "primary is ready"
    repl_pw=$(sql_string "$MYSQL_REPL_PASSWORD")
    primary_sql -e "SET sql_log_bin = 0;
      CREATE USER IF NOT EXISTS '$MYSQL_REPL_USER'@'%' IDENTIFIED BY $repl_pw;
      GRANT REPLICATION SLAVE ON *.* TO '$MYSQL_REPL_USER'@'%';"
    # A consistent copy of the database and the GTID position it was taken at.
    log "copying $database from the primary"
    {
      echo "SET sql_log_bin = 0;"
      mariadb-dump -h "$MYSQL_MASTER_HOST" -P "$primary_port" -uroot -p"$MYSQL_ROOT_PASSWORD" \
        --single-transaction --gtid --master-data=2 --routines --triggers --databases "$database"
    } >"$rundir/seed.sql"
    position=$(sed -n "s/^-- SET GLOBAL gtid_slave_pos='\(.*\)';$/\1/p" "$rundir/seed.sql" | head -n1)
    local_sql -p"$MYSQL_ROOT_PASSWORD" <"$rundir/seed.sql"
    rm -f "$rundir/seed.sql"
    local_sql -p"$MYSQL_ROOT_PASSWORD" -e "
      STOP SLAVE;
      SET GLOBAL gtid_slave_pos = $(sql_string "$position");
      CHANGE MASTER TO MASTER_HOST = $(sql_string "$MYSQL_MASTER_HOST"), MASTER_PORT = $primary_port,
        MASTER_USER = $(sql_string "$MYSQL_REPL_USER"), MASTER_PASSWORD = $repl_pw,
        MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
      START SLAVE;"
    log "replicating from $MYSQL_MASTER_HOST:$primary_port at GTID position '${position}'"
  fi
  touch "$marker"
  log "initialised"
fi
echo "$server_id" >"$datadir/.flotilla-server-id"
touch "$rundir/ready"

log "ready: $role on $bind:$port (server-id $server_id)"
wait "$mariadbd_pid"
