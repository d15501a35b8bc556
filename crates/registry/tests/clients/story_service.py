"""Seed 004's story-service, as a Python service registered through py-eureka-client.

    story_service.py REGISTRY_URL PORT

Serves `GET /story...` with `story from PORT`, and `GET /apps` with the app names its client's
own copy of the registry holds (so a test sees what the client fetched). On SIGTERM it stops the
client (status DOWN, then cancel) and exits.
"""
import http.server
import json
import signal
import sys
import threading

import py_eureka_client.eureka_client as eureka_client

registry, port = sys.argv[1], int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/apps":
            applications = eureka_client.get_client().applications
            names = sorted(a.name for a in applications.applications) if applications else []
            body = json.dumps(names).encode()
        else:
            body = f"story from {port}{self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
eureka_client.init(
    eureka_server=registry,
    app_name="story-service",
    instance_host="127.0.0.1",
    instance_ip="127.0.0.1",
    instance_port=port,
    renewal_interval_in_secs=1,
    duration_in_secs=3,
)


def stop():
    eureka_client.stop()
    server.shutdown()


signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop).start())
print("ready", flush=True)
server.serve_forever()
print("stopped", flush=True)
