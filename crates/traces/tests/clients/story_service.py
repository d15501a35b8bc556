"""Seed 003's first hop, traced with py_zipkin: a SERVER span for GET /story, a CLIENT span
calling catalog-service, and a failed local span; sent to the collector as Zipkin v2 JSON.
Prints the trace id and the client span's id (what it would send as B3 headers) as JSON.

    python story_service.py PORT
"""
import json
import sys

from py_zipkin import Kind
from py_zipkin.encoding import Encoding
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span

port = int(sys.argv[1])
transport = SimpleHTTPTransport("127.0.0.1", port)
with zipkin_span(
    service_name="story-service",
    span_name="GET /story",
    transport_handler=transport,
    sample_rate=100.0,
    encoding=Encoding.V2_JSON,
    kind=Kind.SERVER,
) as root:
    root.update_binary_annotations({"http.method": "GET", "http.path": "/story"})
    with zipkin_span(service_name="story-service", span_name="GET /catalog", kind=Kind.CLIENT) as call:
        call.add_sa_binary_annotation(port=9000, service_name="catalog-service", host="127.0.0.1")
        attrs = call.zipkin_attrs
        print(json.dumps({"traceId": attrs.trace_id, "spanId": attrs.span_id}), flush=True)
    with zipkin_span(service_name="story-service", span_name="select stories") as query:
        query.update_binary_annotations({"error": "timeout"})
