#!/usr/bin/env bash
# Installs what building and testing Flotilla needs on a fresh Debian machine, skipping what is
# already there. Needs root (or sudo) only when something must be installed.
set -euo pipefail

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# A C compiler builds the bundled SQLite; MariaDB runs the TODO API's primary/replica tests
# (scripts/db/mariadb.sh starts it, never systemd).
packages=()
command -v cc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null 2>&1 || packages+=(mariadb-server mariadb-client)
# The board's end-to-end test drives headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
# The Swarm end-to-end test (run when a Docker engine in Swarm mode is there) loads with wrk.
command -v wrk >/dev/null 2>&1 || packages+=(wrk)
# The video tests make their own short clips and probe uploads with ffmpeg and ffprobe.
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || packages+=(ffmpeg)
# The registry's and the trace collector's tests run real clients: Python ones in a venv, Node
# ones with npm.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
  echo "setup: installing ${packages[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# rustfmt and clippy come with the toolchain; add them if this toolchain lacks them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
# cargo-machete keeps unused dependencies out (scripts/test.sh runs it).
if ! cargo machete --version >/dev/null 2>&1; then
  echo "setup: installing cargo-machete"
  cargo install --locked --quiet cargo-machete@0.9.2
fi
# The real clients the tests run, pinned, into target/clients (where the tests look): Eureka's
# (the registry's tests), Zipkin's (the trace collector's), OpenTelemetry's protobuf
# definitions (the OTLP receiver of the tracing tests), Azure's storage emulator (Azurite) with
# Azure's Python client, and moto's S3 server with boto3 (video-storage's Azure and S3 backends). One pip and one npm install each,
# so a newer list replaces an older one (npm removes what the install does not name).
clients="$(cd "$(dirname "$0")/.." && pwd)/target/clients"
if [ ! -x "$clients/py/bin/python" ] \
  || ! "$clients/py/bin/python" -c 'import py_eureka_client, py_zipkin, opentelemetry.proto, azure.storage.blob, moto.server, boto3' 2>/dev/null; then
  echo "setup: installing py-eureka-client, py_zipkin, opentelemetry-proto, azure-storage-blob and moto into $clients/py"
  python3 -m venv "$clients/py"
  "$clients/py/bin/pip" install --quiet --disable-pip-version-check py-eureka-client==0.13.3 \
    py_zipkin==1.2.8 opentelemetry-proto==1.45.2 azure-storage-blob==12.31.1 "moto[server]==5.1.18"
fi
# schemathesis checks the TODO API against its own OpenAPI document (tests/api/schemathesis.rs),
# in a venv of its own: it pins many libraries of its own.
if [ ! -x "$clients/st/bin/st" ] || [ "$("$clients/st/bin/st" --version 2>/dev/null)" != "st, version 4.32.0" ]; then
  echo "setup: installing schemathesis into $clients/st"
  python3 -m venv "$clients/st"
  "$clients/st/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.0
fi
if [ ! -f "$clients/js/node_modules/eureka-js-client/package.json" ] \
  || [ ! -f "$clients/js/node_modules/zipkin-transport-http/package.json" ] \
  || [ ! -f "$clients/js/node_modules/azurite/package.json" ]; then
  echo "setup: installing eureka-js-client, zipkin-js and Azurite into $clients/js"
  mkdir -p "$clients/js"
  (cd "$clients/js" && npm install --silent --no-audit --no-fund --no-save \
    eureka-js-client@4.5.0 zipkin@0.22.0 zipkin-transport-http@0.22.0 azurite@3.37.0)
fi
echo "setup: ready"
