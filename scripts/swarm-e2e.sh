#!/usr/bin/env bash
# The TODO system on a real Docker Swarm, end to end: builds the images, creates the network,
# secrets and node label, deploys the eight stacks of deploy/swarm/, waits until every service has
# converged (FlixTube's video pair too), checks that the API tasks registered with both registries under their overlay
# address, runs a smoke test through the published port (the board renders, and is one trace in
# the trace collector from the front gateway to the API; a TODO created and
# read through /api/; the write reaches both database replicas; a video uploaded and read back
# with a Range request through video-streaming's published port), then, under a bounded steady load
# (reads of the board and the API, and writes), rolls the API and the board with
# `docker service update --force` and scales the API up and down, counting failed requests. It
# removes everything it created, prints a summary and exits non-zero on any failure.
#
#   scripts/swarm-e2e.sh
#
# Needs a Docker engine in Swarm mode (a single node is enough), wrk, curl and python3.
# Settings (environment):
#   E2E_PORT            published port of the front gateway          (default 18080)
#   E2E_REGISTRY_PORT   published port of the first registry         (default 18761)
#   E2E_TRACES_PORT     published port of the trace collector        (default 19411)
#   E2E_VIDEO_PORT      published port of video-streaming            (default 14001)
#   E2E_DASHBOARD_PORT  published port of the dashboard              (default 17979)
#   E2E_BUILD_TARGET    `host`: image from `cargo build --release` on this host (Debian 12, no
#                       image pulls); `runtime`: from source in Docker (BuildKit, pulls rust)
#                                                                    (default host)
#   E2E_RATE            requests per second of the steady load, about (default 100)
#   E2E_KEEP=1          leave everything running at the end (for a look around)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

port=${E2E_PORT:-18080}
registry_port=${E2E_REGISTRY_PORT:-18761}
traces_port=${E2E_TRACES_PORT:-19411}
video_port=${E2E_VIDEO_PORT:-14001}
dashboard_port=${E2E_DASHBOARD_PORT:-17979}
target=${E2E_BUILD_TARGET:-host}
rate=${E2E_RATE:-100}
image=flotilla:e2e
db_image=flotilla-mariadb:e2e
stacks=(todo_dashboard todo_video todo_ingress todo_frontend todo_app todo_mysql todo_registry todo_traces)   # removal order
secrets=(tododb_root_password tododb_password tododb_repl_password todo_primary_url todo_replica_urls)
work=$(mktemp -d /tmp/flotilla-e2e.XXXXXX)
base="http://127.0.0.1:$port"

results=()
failed=0
say() { printf '\n== %s\n' "$*"; }
pass() { results+=("PASS  $*"); echo "PASS: $*"; }
fail() { results+=("FAIL  $*"); echo "FAIL: $*" >&2; failed=1; }
die() { fail "$*"; exit 1; }

created_network=0
labelled_node=0
node_id=
cleanup() {
  local code=$?
  if [ "${E2E_KEEP:-}" = 1 ]; then
    echo "E2E_KEEP=1: leaving the stacks running on port $port"
  else
    say "cleaning up"
    for stack in "${stacks[@]}"; do docker stack rm "$stack" >/dev/null 2>&1 || true; done
    # Tasks and their networks go away asynchronously; volumes and secrets can only go after.
    for _ in $(seq 60); do
      [ -z "$(docker ps -aq --filter label=com.docker.stack.namespace 2>/dev/null | head -n1)" ] && break
      sleep 1
    done
    for s in "${secrets[@]}"; do docker secret rm "$s" >/dev/null 2>&1 || true; done
    docker volume ls -q --filter name=todo_mysql_ | xargs -r docker volume rm >/dev/null 2>&1 || true
    docker volume rm todo_traces_data >/dev/null 2>&1 || true
    if [ "$created_network" = 1 ]; then
      for _ in $(seq 20); do docker network rm todoapp >/dev/null 2>&1 && break; sleep 1; done
    fi
    [ "$labelled_node" = 1 ] && docker node update --label-rm flotilla.db "$node_id" >/dev/null 2>&1
    docker image rm "$image" "$db_image" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  echo
  echo "== swarm e2e summary"
  printf '%s\n' "${results[@]}"
  if [ "$failed" = 0 ] && [ "$code" = 0 ]; then echo "swarm e2e: all passed"; else echo "swarm e2e: FAILED"; exit 1; fi
}
trap cleanup EXIT

# --- preconditions ---------------------------------------------------------------------------------
for tool in docker wrk curl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
[ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ] \
  || die "the Docker engine is not in Swarm mode (docker swarm init)"
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || die "run this on a Swarm manager"
if docker stack ls --format '{{.Name}}' | grep -qx -e todo_dashboard -e todo_traces -e todo_registry -e todo_mysql -e todo_app -e todo_frontend -e todo_ingress; then
  stacks=()   # not ours to remove
  die "a todo_* stack is already deployed; remove it first"
fi
node_id=$(docker info --format '{{.Swarm.NodeID}}')

# --- images ----------------------------------------------------------------------------------------
say "building images (target $target)"
if [ "$target" = host ]; then
  cargo build --release --locked -p flotilla
fi
docker build -q -f deploy/Dockerfile --target "$target" -t "$image" . >/dev/null \
  || die "building $image"
docker build -q -t "$db_image" deploy/mariadb >/dev/null || die "building $db_image"
size=$(docker image inspect "$image" --format '{{.Size}}')
if [ "$size" -lt $((50 * 1000 * 1000)) ]; then
  pass "images built; $image is $((size / 1000000)) MB (under 50 MB)"
else
  fail "$image is $((size / 1000000)) MB, over 50 MB"
fi

# --- network, node label, secrets -----------------------------------------------------------------
say "network, label, secrets"
if ! docker network inspect todoapp >/dev/null 2>&1; then
  docker network create --driver overlay --attachable --subnet 10.0.9.0/24 todoapp >/dev/null
  created_network=1
fi
# The API tasks register the address they have in this network (FLOTILLA_ADVERTISE_NETWORK).
FLOTILLA_OVERLAY_SUBNET=$(docker network inspect todoapp --format '{{(index .IPAM.Config 0).Subnet}}')
export FLOTILLA_OVERLAY_SUBNET
if [ -z "$(docker node inspect "$node_id" --format '{{index .Spec.Labels "flotilla.db"}}')" ]; then
  docker node update --label-add flotilla.db=true "$node_id" >/dev/null
  labelled_node=1
fi
secret() { printf '%s' "$2" | docker secret create "$1" - >/dev/null; }
password() { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'; }
app_password=$(password)
secret tododb_root_password "$(password)"
secret tododb_password "$app_password"
secret tododb_repl_password "$(password)"
secret todo_primary_url "mysql://todo:$app_password@todo_mysql_master:3306/tododb"
secret todo_replica_urls "mysql://todo:$app_password@todo_mysql_slave:3306/tododb"

# --- deploy ---------------------------------------------------------------------------------------
# Converged: every service of the stack runs as many tasks as it wants, and each is healthy.
converged() {
  local name replicas want running healthy
  while read -r name replicas; do
    want=${replicas#*/}
    want=${want%% *}
    running=$(docker service ps "$name" --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running' || true)
    healthy=$(docker ps -q --filter "label=com.docker.swarm.service.name=$name" --filter health=healthy | wc -l)
    [ "$running" = "$want" ] && [ "$healthy" -ge "$want" ] || return 1
  done < <(docker service ls --filter "label=com.docker.stack.namespace=$1" --format '{{.Name}} {{.Replicas}}')
}
wait_converged() {
  local stack=$1 limit=$2 started=$SECONDS
  until converged "$stack"; do
    if (( SECONDS - started > limit )); then
      docker stack ps "$stack" --no-trunc >&2 || true
      for s in $(docker service ls -q --filter "label=com.docker.stack.namespace=$stack"); do
        docker service logs --tail 20 "$s" >&2 2>&1 || true
      done
      return 1
    fi
    sleep 2
  done
  echo "$stack converged in $((SECONDS - started)) s"
}

export FLOTILLA_IMAGE=$image FLOTILLA_MARIADB_IMAGE=$db_image FLOTILLA_PORT=$port
export FLOTILLA_REGISTRY_PORT=$registry_port FLOTILLA_TRACES_PORT=$traces_port FLOTILLA_VIDEO_PORT=$video_port
export FLOTILLA_DASHBOARD_PORT=$dashboard_port
for pair in todo_traces:traces todo_registry:registry todo_mysql:todo-mysql todo_app:todo-app todo_frontend:todo-frontend todo_ingress:todo-ingress todo_video:video todo_dashboard:dashboard; do
  stack=${pair%%:*}
  say "deploying $stack"
  docker stack deploy -c "deploy/swarm/${pair#*:}.yml" "$stack" >/dev/null || die "docker stack deploy $stack"
  wait_converged "$stack" 240 || die "$stack did not converge within 240 s"
done
pass "eight stacks deployed and converged"

# --- registry -------------------------------------------------------------------------------------
say "registry: the API tasks registered with their overlay address, on both peers"
registry_base="http://127.0.0.1:$registry_port"
# "ip ip ..." of the UP TODO-API instances a registry lists.
registered() {
  curl -fsS -H 'accept: application/json' "$1" | python3 -c '
import json, sys
apps = json.load(sys.stdin)["applications"]["application"]
print(" ".join(sorted(i["ipAddr"] for a in apps if a["name"] == "TODO-API" for i in a["instance"] if i["status"] == "UP")))'
}
api_ips=$(docker service ps todo_app_api --filter desired-state=running -q | while read -r task; do
  docker inspect "$task" --format '{{range .NetworksAttachments}}{{if eq .Network.Spec.Name "todoapp"}}{{range .Addresses}}{{.}} {{end}}{{end}}{{end}}'
done | tr ' ' '\n' | sed 's#/.*##' | grep . | sort | tr '\n' ' ' | sed 's/ $//')
seen=""
for _ in $(seq 30); do
  seen=$(registered "$registry_base/eureka/apps" 2>/dev/null || true)
  [ "$seen" = "$api_ips" ] && break
  sleep 1
done
if [ -n "$api_ips" ] && [ "$seen" = "$api_ips" ]; then
  pass "both API tasks registered with their todoapp addresses ($seen)"
else
  fail "registry lists TODO-API at [$seen]; the tasks' todoapp addresses are [$api_ips]"
fi
# registry-2 has them too (peer replication); asked from a throwaway task on the overlay.
peer=$(docker run --rm --network todoapp --entrypoint /usr/local/bin/flotilla "$image" \
  healthcheck http://todo_registry_registry-2:8761/eureka/apps/TODO-API 2>&1) \
  && pass "the peer registry lists TODO-API too" || fail "the peer registry: $peer"

# --- smoke test -----------------------------------------------------------------------------------
say "smoke test through $base"
for _ in $(seq 30); do curl -fsS -o /dev/null "$base/" 2>/dev/null && break; sleep 1; done
board=$(curl -fsS "$base/") || die "GET / through the front gateway"
grep -q '<title>TODO List</title>' <<<"$board" && pass "the board renders through port $port" \
  || fail "GET / is not the board"

# The board's request is one trace, as Sleuth would start it (multi-header B3): the front gateway,
# the board gateway, the board, its calls to the API gateway, the API.
trace_id=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
curl -fsS -o /dev/null "$base/" -H "X-B3-TraceId: $trace_id" -H "X-B3-SpanId: 6b221d5bc9e6496c" \
  -H "X-B3-Sampled: 1" || die "GET / with a B3 header"
services_in_trace() {
  curl -fsS "http://127.0.0.1:$traces_port/api/v2/trace/$1" 2>/dev/null | python3 -c '
import json, sys
print(" ".join(sorted({s["localEndpoint"]["serviceName"] for s in json.load(sys.stdin)})))'
}
wanted="api-gateway front todo-api todo-web web-gateway"
traced=""
for _ in $(seq 20); do
  traced=$(services_in_trace "$trace_id" || true)
  [ "$traced" = "$wanted" ] && break
  sleep 0.5
done
[ "$traced" = "$wanted" ] && pass "one board request is one trace through $wanted" \
  || fail "trace $trace_id has spans of [$traced]; wanted [$wanted]"

title="e2e-$(date +%s)-$RANDOM"
created=$(curl -fsS -X POST "$base/api/todo" -H 'content-type: application/json' \
  -d "{\"title\":\"$title\",\"content\":\"created by swarm-e2e\",\"status\":\"TODO\"}") \
  || die "POST /api/todo"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$created")
curl -fsS "$base/api/todo/$id" | grep -q "$title" && pass "TODO $id created and read back through /api/" \
  || fail "GET /api/todo/$id did not return the new TODO"

replica_rows() {
  docker exec "$1" bash -c 'mariadb --defaults-file=/run/mysqld/my.cnf -uroot \
    -p"$(cat /run/secrets/tododb_root_password)" -N -e "SELECT COUNT(*) FROM tododb.todo WHERE title = '"'$2'"'"'
}
# How many of the replica containers have the row titled $1 (waiting up to 10 s for all).
replicas_with() {
  local seen c
  for _ in $(seq 20); do
    seen=0
    for c in $(docker ps -q --filter label=com.docker.swarm.service.name=todo_mysql_slave); do
      [ "$(replica_rows "$c" "$1" 2>/dev/null)" = 1 ] && seen=$((seen + 1))
    done
    [ "$seen" = 2 ] && break
    sleep 0.5
  done
  echo "$seen"
}
seen=$(replicas_with "$title")
[ "$seen" = 2 ] && pass "the write reached both database replicas" \
  || fail "the write reached $seen of 2 replicas"

# Replacing the replica tasks (same slot, same volume) must not initialise them again, and they
# must go on replicating.
say "replacing the database replicas"
docker service update --force --detach=false --quiet todo_mysql_slave >/dev/null 2>&1 \
  || fail "docker service update --force todo_mysql_slave"
wait_converged todo_mysql 240 || fail "todo_mysql did not converge after replacing the replicas"
reinit=0
for c in $(docker ps -q --filter label=com.docker.swarm.service.name=todo_mysql_slave); do
  docker logs "$c" 2>&1 | grep -q "initialising" && reinit=$((reinit + 1))
done
seen=$(replicas_with "$title")
later="$title-after"
curl -fsS -o /dev/null -X POST "$base/api/todo" -H 'content-type: application/json' \
  -d "{\"title\":\"$later\",\"content\":\"after the replicas restarted\",\"status\":\"TODO\"}" \
  || fail "POST /api/todo after replacing the replicas"
seen_later=$(replicas_with "$later")
if [ "$reinit" = 0 ] && [ "$seen" = 2 ] && [ "$seen_later" = 2 ]; then
  pass "replaced replicas kept their data without initialising again, and replicate new writes"
else
  fail "replaced replicas: $reinit initialised again, $seen kept the row, $seen_later got the new write"
fi

# --- dashboard ------------------------------------------------------------------------------------
say "dashboard: both boards' circuit to the API, found through the registry"
dashboard_base="http://127.0.0.1:$dashboard_port"
circuit=""
for _ in $(seq 40); do
  curl -fsS -o /dev/null "$base/" 2>/dev/null || true
  circuit=$(curl -fsS "$dashboard_base/api/tiles" 2>/dev/null | python3 -c '
import json, sys
tiles = [t for t in json.load(sys.stdin)["tiles"]
         if t["service"] == "todo-web" and t["kind"] == "circuit" and t["name"] == "todo-api"]
print(tiles[0]["state"], tiles[0]["hosts"]) if tiles else print("")' 2>/dev/null || true)
  [ "$circuit" = "closed 2" ] && break
  sleep 1
done
if [ "$circuit" = "closed 2" ]; then
  pass "the dashboard shows both boards' circuit to the API, closed"
else
  fail "the dashboard's todo-web -> todo-api tile: [$circuit] (expected: closed, on 2 hosts)"
fi

# --- video ----------------------------------------------------------------------------------------
say "video: an upload through video-streaming, read back with a Range request"
video_base="http://127.0.0.1:$video_port"
for _ in $(seq 30); do curl -fsS -o /dev/null "$video_base/ready" 2>/dev/null && break; sleep 1; done
head -c 300000 /dev/urandom >"$work/clip.webm"
video_id=$(curl -fsS -F title="Swarm clip" -F "file=@$work/clip.webm" "$video_base/api/videos" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])') || video_id=""
if [ -n "$video_id" ]; then
  pass "a video uploaded through video-streaming to video-storage ($video_id)"
  # (Not `tail | head`: with pipefail, head closing the pipe early fails the script.)
  python3 -c 'import sys; sys.stdout.buffer.write(open(sys.argv[1], "rb").read()[100000:101000])' \
    "$work/clip.webm" >"$work/expected"
  code=$(curl -sS -o "$work/part" -w '%{http_code}' -H 'Range: bytes=100000-100999' \
    "$video_base/video?id=$video_id") || code=000
  if [ "$code" = 206 ] && cmp -s "$work/part" "$work/expected"; then
    pass "GET /video?id= with a Range: 206 and the right bytes"
  else
    fail "GET /video?id= with a Range answered $code (or other bytes)"
  fi
  curl -fsS "$video_base/" | grep -q "Swarm clip" && pass "the video list page shows it" \
    || fail "the video list page does not show the upload"
else
  fail "uploading a video through $video_base/api/videos"
fi

# --- steady load around each operation -------------------------------------------------------------
# wrk paced to about $rate requests per second over 4 connections: board pages, API reads, and
# one write in ten. Stopped with SIGINT after the operation; its summary counts failures.
cat >"$work/load.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  if n % 10 == 0 then
    return wrk.format("POST", "/api/todo", {["Content-Type"] = "application/json"},
      '{"title":"load","content":"swarm-e2e steady load","status":"TODO"}')
  elseif n % 2 == 0 then
    return wrk.format("GET", "/api/todo?status=TODO")
  end
  return wrk.format("GET", "/")
end
delay = function() return $((4000 / rate)) end
LUA
load_start() {
  wrk -t1 -c4 -d600s --timeout 10s -s "$work/load.lua" "$base/" >"$work/wrk.out" 2>&1 &
  load_pid=$!
  sleep 3
}
# Stops the load; passes when it had no failed request.
load_check() {
  local what=$1
  kill -INT "$load_pid" 2>/dev/null || true
  wait "$load_pid" 2>/dev/null || true
  local total errors non2xx
  total=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ {print $2}' "$work/wrk.out")
  errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.out")
  non2xx=${non2xx:-0} errors=${errors:-0}
  if [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$non2xx" = 0 ] && [ "$errors" = 0 ]; then
    pass "$what: $total requests, 0 failed"
  else
    cat "$work/wrk.out" >&2
    fail "$what: ${total:-no} requests, $non2xx non-2xx, $errors socket errors"
  fi
}

rolling_update() {
  local service=$1
  say "rolling update of $service under load"
  load_start
  docker service update --force --detach=false --quiet "$service" >/dev/null 2>&1 \
    || fail "docker service update --force $service"
  # The replaced tasks drain after the update reports convergence; keep loading through it.
  sleep 15
  load_check "rolling update of $service (docker service update --force)"
}
rolling_update todo_app_api
rolling_update todo_frontend_web

# The API gateways pick the new tasks up by DNS: each answers through the new addresses.
upstreams_used() {
  # `docker logs` of each gateway container: `docker service logs` can hang on some engines.
  for c in $(docker ps -q --filter label=com.docker.swarm.service.name=todo_app_gateway); do
    timeout 20 docker logs --since "$1" "$c" 2>&1 || true
  done | python3 -c '
import json, sys
seen = set()
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if isinstance(entry, dict) and entry.get("upstream_addr"):
        seen.update(a.strip() for a in str(entry["upstream_addr"]).split(","))
print(len(seen))'
}
say "scaling todo_app_api to 4 and back to 2 under load"
load_start
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
docker service scale --detach=false todo_app_api=4 >/dev/null 2>&1 || fail "docker service scale todo_app_api=4"
sleep 15   # one DNS look-up interval (5 s) and health checks, then traffic to spread
used=$(upstreams_used "$since")
[ "$used" -ge 4 ] && pass "after scaling to 4, the API gateways sent requests to $used API tasks" \
  || fail "after scaling to 4, the API gateways used $used API tasks"
docker service scale --detach=false todo_app_api=2 >/dev/null 2>&1 || fail "docker service scale todo_app_api=2"
sleep 15
load_check "scaling todo_app_api 2 -> 4 -> 2 (docker service scale)"
