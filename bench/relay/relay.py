"""Baseline for per-chunk cost: a minimal stdlib runtime loop that copies upstream bytes to /response unchanged.

After each invocation it logs the CPU (`time.process_time()`) it spent from the first upstream read to the end,
as the probe layer does for the functions.
"""

import http.client
import json
import os
import time
from urllib.parse import urlsplit

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
upstream = urlsplit(os.environ["SIGSTREAM_UPSTREAM_BASE_URL"])
key = os.environ["RELAY_API_KEY"]
runtime = http.client.HTTPConnection(api)
conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port)
while True:
    runtime.request("GET", "/2018-06-01/runtime/invocation/next")
    response = runtime.getresponse()
    event = json.loads(response.read())
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    start = time.process_time()
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
    first = None
    chunks = size = 0
    while True:
        data = source.read1(65536)
        if not data:
            break
        if first is None:
            first = time.process_time()
        chunks += 1
        size += len(data)
        runtime.send(b"%x\r\n%s\r\n" % (len(data), data))
    end = time.process_time()
    runtime.send(b"0\r\n\r\n")
    runtime.getresponse().read()
    report = {"probe": "relay", "cpu_first": (first or end) - start, "cpu_total": end - start}
    report.update({"cpu_stream": end - (first or end), "chunks_out": chunks, "bytes_out": size})
    print(json.dumps(report), flush=True)
