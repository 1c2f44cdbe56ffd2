"""Baseline for per-chunk cost: a minimal stdlib runtime loop that copies upstream bytes to /response unchanged."""

import http.client
import json
import os
from urllib.parse import urlsplit

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
upstream = urlsplit(os.environ["SIGSTREAM_UPSTREAM_BASE_URL"])
key = os.environ["RELAY_API_KEY"]
runtime = http.client.HTTPConnection(api)
while True:
    runtime.request("GET", "/2018-06-01/runtime/invocation/next")
    response = runtime.getresponse()
    event = json.loads(response.read())
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    conn = http.client.HTTPConnection(upstream.hostname, upstream.port)
    conn.request(
        "POST",
        upstream.path + "/chat/completions",
        body=event["body"],
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    source = conn.getresponse()
    runtime.putrequest("POST", f"/2018-06-01/runtime/invocation/{request_id}/response")
    runtime.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    runtime.putheader("Transfer-Encoding", "chunked")
    runtime.putheader("Content-Type", "text/event-stream")
    runtime.endheaders()
    while True:
        data = source.read1(65536)
        if not data:
            break
        runtime.send(b"%x\r\n%s\r\n" % (len(data), data))
    runtime.send(b"0\r\n\r\n")
    runtime.getresponse().read()
    conn.close()
