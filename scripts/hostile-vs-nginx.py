#!/usr/bin/env python3
"""Sends the gateway's hostile-input cases to the gateway and to nginx, side by side.

Both proxies sit in front of the same backend: an nginx that serves files, with a protected page
at /auth/secret.html ("TOP-SECRET") and a virtual host secret.example ("SECRET-SITE"). They are
configured alike (crates/gateway/tests/hostile/gateway.toml; the nginx equivalent is below):
basic auth on the path /auth/ and on the host secret.example, a rate limit on /limited/, a body
limit on /small/, everything else open. Every case of crates/gateway/tests/hostile/cases.toml is
sent as bytes to each; the table records the statuses each answered and whether the protected
content came back without credentials, and replaces the part of docs/gateway.md between its
markers.

    scripts/hostile-vs-nginx.py [--no-record]

Needs nginx (apt-get install nginx-light) and builds the release binary. Not a test: CI does not
run it (the Rust suite asserts the gateway's side of every case).
"""
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HOSTILE = os.path.join(ROOT, "crates/gateway/tests/hostile")
DOC = os.path.join(ROOT, "docs/gateway.md")
START, END = "<!-- hostile-vs-nginx:start -->", "<!-- hostile-vs-nginx:end -->"
SECRETS = (b"TOP-SECRET", b"SECRET-SITE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, what, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start on port {port}")


def send(port, request, quiet=1.0, limit=5.0):
    """Sends the bytes; reads until the server closes or is quiet for `quiet` seconds."""
    got = b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        s.settimeout(quiet)
        deadline = time.time() + limit
        while time.time() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not data:
                break
            got += data
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", got)]
    return statuses, any(secret in got for secret in SECRETS)


def closes_within(port, request, seconds):
    """Whether the server closes a connection that sent `request` within `seconds`."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        s.settimeout(seconds)
        started = time.time()
        try:
            while s.recv(65536):
                pass
            return time.time() - started
        except socket.timeout:
            return None
        except OSError:
            return time.time() - started


def nginx_conf(work, port, backend_port, htpasswd, mode):
    common = f"""
worker_processes 1;
daemon off;
pid {work}/{mode}.pid;
error_log {work}/{mode}-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/{mode}-body;
  proxy_temp_path {work}/{mode}-proxy;
  keepalive_timeout 2s;
  client_header_timeout 2s;
"""
    if mode == "backend":
        # Files where there are some; "ok" (200) for any other path or method, as the Rust
        # suite's backend answers.
        return common + f"""
  server {{
    listen 127.0.0.1:{port} default_server;
    root {work}/site;
    error_page 404 405 =200 @ok;
    location @ok {{ return 200 "ok\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name secret.example;
    root {work}/secret-site;
  }}
}}
"""
    return common + f"""
  limit_req_zone $binary_remote_addr zone=limited:1m rate=1r/m;
  upstream app {{ server 127.0.0.1:{backend_port}; }}
  proxy_set_header Host $host;
  server {{
    listen 127.0.0.1:{port};
    server_name secret.example;
    location / {{
      auth_basic "Restricted";
      auth_basic_user_file {htpasswd};
      proxy_pass http://app;
    }}
  }}
  server {{
    listen 127.0.0.1:{port} default_server;
    location /auth/ {{
      auth_basic "Restricted";
      auth_basic_user_file {htpasswd};
      proxy_pass http://app;
    }}
    location /limited/ {{
      limit_req zone=limited nodelay;
      proxy_pass http://app;
    }}
    location /small/ {{
      client_max_body_size 10;
      proxy_pass http://app;
    }}
    location / {{
      proxy_pass http://app;
    }}
  }}
}}
"""


def start_nginx(work, port, backend_port, htpasswd, mode):
    conf = os.path.join(work, f"{mode}.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(work, port, backend_port, htpasswd, mode))
    for d in (f"{mode}-body", f"{mode}-proxy"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    process = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    wait_for(port, f"nginx ({mode})")
    return process


def start_gateway(work, port, backend_port, htpasswd):
    env = dict(
        os.environ,
        BACKEND=f"127.0.0.1:{backend_port}",
        HTPASSWD=htpasswd,
        LISTEN=f"127.0.0.1:{port}",
        ADMIN="off",
        LOG_FORMAT="json",
    )
    config = os.path.join(work, "gateway.toml")
    with open(os.path.join(HOSTILE, "gateway.toml")) as source, open(config, "w") as f:
        # The same timeouts as the nginx side's, for the timed cases.
        f.write(source.read().replace('bind = "${LISTEN:-127.0.0.1:0}"',
                                      'bind = "${LISTEN:-127.0.0.1:0}"\nkeepalive_timeout = "2s"'))
    binary = os.path.join(ROOT, "target/release/flotilla")
    process = subprocess.Popen([binary, "gateway", "--config", config], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port, "the gateway")
    return process


def main():
    record = "--no-record" not in sys.argv
    if not shutil.which("nginx"):
        sys.exit("needs nginx (apt-get install nginx-light)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with open(os.path.join(HOSTILE, "cases.toml"), "rb") as f:
        cases = tomllib.load(f)["case"]
    work = tempfile.mkdtemp(prefix="hostile-")
    # nginx's workers run as another user: everything they read must be readable by all.
    os.chmod(work, 0o755)
    os.umask(0o022)
    processes = []
    try:
        os.makedirs(os.path.join(work, "site/auth"))
        os.makedirs(os.path.join(work, "site/public"))
        os.makedirs(os.path.join(work, "site/limited"))
        os.makedirs(os.path.join(work, "secret-site"))
        for path, text in [("site/index.html", "public"), ("site/public/index.html", "public"),
                           ("site/auth/secret.html", "TOP-SECRET"), ("site/limited/a", "limited"),
                           ("secret-site/index.html", "SECRET-SITE")]:
            with open(os.path.join(work, path), "w") as f:
                f.write(text + "\n")
        # The same user as the gateway's file: nginx reads {SHA} entries too.
        htpasswd = os.path.join(work, "htpasswd")
        digest = base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
        with open(htpasswd, "w") as f:
            f.write(f"alice:{{SHA}}{digest}\n")
        backend_port = free_port()
        processes.append(start_nginx(work, backend_port, None, htpasswd, "backend"))
        rows = []
        for case in cases:
            answers = {}
            for side in ("gateway", "nginx"):
                # Fresh proxies per case: rate limits start afresh.
                port = free_port()
                if side == "gateway":
                    process = start_gateway(work, port, backend_port, htpasswd)
                else:
                    process = start_nginx(work, port, backend_port, htpasswd, "proxy")
                try:
                    request = case["request"].encode("latin-1")
                    statuses, secret = send(port, request)
                    # Protected content is a leak only when the request had no credentials.
                    answers[side] = (statuses, secret and b"\r\nAuthorization:" not in request)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=20)
            rows.append((case, answers))
        timed = []
        for name, request in [
            ("part of HTTP/2's preface, then nothing", b"PRI * HTTP/2.0\r\n"),
            ("HTTP/2's preface and SETTINGS, then nothing",
             b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
            ("half a request head, then nothing", b"GET / HTTP/1.1\r\nHost: public.example\r\n"),
        ]:
            outcome = {}
            for side in ("gateway", "nginx"):
                port = free_port()
                if side == "gateway":
                    process = start_gateway(work, port, backend_port, htpasswd)
                else:
                    process = start_nginx(work, port, backend_port, htpasswd, "proxy")
                try:
                    outcome[side] = closes_within(port, request, 15)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=20)
            timed.append((name, outcome))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    def show(answer):
        statuses, leaked = answer
        text = ", ".join(map(str, statuses)) or "closed"
        return f"**{text}, LEAKED**" if leaked else text

    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    lines = [START, "",
             f"Measured by `scripts/hostile-vs-nginx.py` against {version.split(': ')[-1]}, both in front of the "
             "same nginx file server (the protected page holds `TOP-SECRET`, the protected host "
             "`SECRET-SITE`). Statuses in order; **LEAKED** marks an answer that carried protected "
             "content to a client without credentials.", "",
             "| group | case | gateway | nginx | gateway expected |",
             "|---|---|---|---|---|"]
    for case, answers in rows:
        expected = ", ".join(map(str, case["expect"])) or "closed"
        lines.append(f"| {case['group']} | {case['name']} | {show(answers['gateway'])} | "
                     f"{show(answers['nginx'])} | {expected} |")
    lines += ["", "Timed (both with a 2 s header and keep-alive timeout): when the server closes the "
              "connection.", "", "| case | gateway | nginx |", "|---|---|---|"]
    for name, outcome in timed:
        def when(seconds):
            return "open after 15 s" if seconds is None else f"closed after {seconds:.1f} s"
        lines.append(f"| {name} | {when(outcome['gateway'])} | {when(outcome['nginx'])} |")
    lines += ["", END]
    table = "\n".join(lines)
    print(table)
    mismatches = [case["name"] for case, answers in rows
                  if answers["gateway"][0] != case["expect"] or answers["gateway"][1]]
    if mismatches:
        print("gateway answers differ from cases.toml for: " + "; ".join(mismatches), file=sys.stderr)
    if record:
        with open(DOC) as f:
            doc = f.read()
        if START in doc and END in doc:
            doc = doc[:doc.index(START)] + table + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n## Hostile input, side by side with nginx\n\n" + table + "\n"
        with open(DOC, "w") as f:
            f.write(doc)
        print(f"recorded in {os.path.relpath(DOC, ROOT)}")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
