"""A proxy in front of moto server: counts AWS requests by operation and injects faults on demand."""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from local.quiet_server import QuietThreadingHTTPServer

THROTTLE = {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate exceeded (injected)"}
UNAVAILABLE = {"__type": "ServiceUnavailable", "message": "Service unavailable (injected)"}


@dataclass
class FaultPlan:
    """Faults for operations whose X-Amz-Target contains `match`: the next `count` calls fail."""

    match: str
    count: int
    status: int = 400
    body: dict[str, Any] = field(default_factory=lambda: dict(THROTTLE))


class AwsProxy(QuietThreadingHTTPServer):
    """Forward everything to moto; remember what went through."""

    def __init__(self, target_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target_port = target_port
        self.counts: collections.Counter[str] = collections.Counter()
        self.faults: list[FaultPlan] = []
        self.delays: dict[str, float] = {}  # X-Amz-Target substring -> seconds every such call is held
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        """AWS_ENDPOINT_URL for functions."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        """Forget counts and faults."""
        with self.lock:
            self.counts.clear()
            self.faults.clear()
            self.delays.clear()

    def inject(self, plan: FaultPlan) -> None:
        """Queue a fault plan."""
        with self.lock:
            self.faults.append(plan)

    def take_fault(self, target: str) -> FaultPlan | None:
        """The fault to apply to this call, if any."""
        with self.lock:
            for plan in self.faults:
                if plan.match in target and plan.count > 0:
                    plan.count -= 1
                    return plan
        return None

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: AwsProxy

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        with self.server.lock:
            self.server.counts[target.rsplit(".", 1)[-1] or self.path] += 1
        with self.server.lock:
            delay = next((seconds for match, seconds in self.server.delays.items() if match in target), 0.0)
        if delay:
            time.sleep(delay)  # a slow DynamoDB, for the benchmark that proves a write is off the first byte's path
        fault = self.server.take_fault(target)
        if fault:
            data = json.dumps(fault.body).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.target_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_DELETE = do_POST
