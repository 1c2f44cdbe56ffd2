"""The chat page's backend: it asks the Sign function for URLs with SigV4, as a real backend would.

The browser never holds a key: it gets short-lived signed URLs for its own demo user (a cookie).
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACTIONS = {
    "chat": ("POST", "/v1/chat/completions"),
    "list": ("GET", "/v1/conversations"),
    "messages": ("GET", "/v1/conversations/{id}/messages"),
    "delete": ("DELETE", "/v1/conversations/{id}"),
    "stop": ("POST", "/v1/conversations/{id}/stop"),
    "stream": ("GET", "/v1/conversations/{id}/stream"),
}


@dataclass(frozen=True)
class DemoBackend:
    """Signs requests to the Sign function URL with the local stack's credentials."""

    sign_url: str
    access_key: str
    secret_key: str
    region: str
    chat_url_ttl: int = int(os.environ.get("SIGSTREAM_DEMO_URL_TTL", "300"))

    @staticmethod
    def new_user() -> str:
        """A fresh demo subject for a browser without the cookie."""
        return "demo-" + secrets.token_hex(6)

    def sign(self, subject: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Turn {"action", "conversation_id"} into a POST /sign for this subject."""
        action = request.get("action")
        if action not in ACTIONS:
            return 400, {"error": {"message": f"action must be one of {sorted(ACTIONS)}", "code": "invalid_request"}}
        method, path = ACTIONS[action]
        conversation_id = request.get("conversation_id")
        doc: dict[str, Any] = {"subject": subject, "method": method, "path": path}
        if "{id}" in path:
            if not isinstance(conversation_id, str):
                return 400, {"error": {"message": "conversation_id is required", "code": "invalid_request"}}
            doc["path"] = path.replace("{id}", conversation_id)
        elif action == "chat":
            doc["expires_in"] = self.chat_url_ttl
            if conversation_id:
                doc["conversation_id"] = conversation_id
        body = json.dumps(doc).encode()
        aws_request = AWSRequest(
            "POST", self.sign_url + "sign", data=body, headers={"content-type": "application/json"}
        )
        SigV4Auth(Credentials(self.access_key, self.secret_key), "lambda", self.region).add_auth(aws_request)
        http_request = urllib.request.Request(  # noqa: S310 - the local stack's own loopback URL
            aws_request.url, data=body, headers=dict(aws_request.headers.items()), method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=30) as response:  # noqa: S310  # nosec B310 - loopback Sign URL
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")
