"""The backend a Sigstream deployment needs: it logs its users in, signs Stream URLs for them, serves the page.

* Its logged-in user becomes the URL's `subject`, so each user sees only their own conversations.
* It calls the Sign URL with SigV4 from its own AWS credentials: botocore's default chain, i.e. the role of
  the instance, task or function it runs as (attach the stack's BackendSignPolicyArn to that role).
* It serves web/ (the chat page), whose only server call is `POST /api/sign {"action", "conversation_id"}`.

The login here is a stand-in (users and password hashes from BACKEND_USERS); put your identity provider
in `_authenticate` and keep the rest.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.session import Session
from flask import Flask, Response, abort, redirect, request, send_from_directory, session
from werkzeug.security import check_password_hash, generate_password_hash

ROOT = Path(__file__).resolve().parents[2]
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PAGE_FILES = {"app.js", "sse.js", "style.css"}
# What the chat page may ask for, as Sign requests (the backend, not the browser, decides method and path).
ACTIONS = {
    "chat": ("POST", "/v1/chat/completions"),
    "list": ("GET", "/v1/conversations"),
    "messages": ("GET", "/v1/conversations/{id}/messages"),
    "delete": ("DELETE", "/v1/conversations/{id}"),
    "stop": ("POST", "/v1/conversations/{id}/stop"),
    "stream": ("GET", "/v1/conversations/{id}/stream"),
}
CONVERSATION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class Signer(Protocol):
    """Anything that turns a Sign request body into (status, answer)."""

    def sign(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /sign."""


@dataclass(frozen=True)
class SignUrlClient:
    """POST /sign to the Sign Function URL, SigV4-signed with the process's AWS credentials."""

    sign_url: str
    region: str
    botocore_session: Session = field(default_factory=Session)

    def sign(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One signed call; credentials are fetched (and refreshed, for a role) by botocore."""
        credentials = self.botocore_session.get_credentials()
        if credentials is None:
            raise RuntimeError("no AWS credentials: run with a role (or AWS_* variables locally)")
        body = json.dumps(doc).encode()
        aws_request = AWSRequest(
            "POST", self.sign_url.rstrip("/") + "/sign", data=body, headers={"content-type": "application/json"}
        )
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", self.region).add_auth(aws_request)
        http_request = urllib.request.Request(  # noqa: S310 - the configured Sign URL
            aws_request.url, data=body, headers=dict(aws_request.headers.items()), method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=15) as response:  # noqa: S310  # nosec B310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read() or b"{}")
            except ValueError:
                return err.code, {}


@dataclass(frozen=True)
class Config:
    """Settings, from the environment (`from_env`)."""

    sign_url: str
    region: str
    stream_origin: str  # the Stream URL's origin, for the page's Content-Security-Policy
    users: Mapping[str, str]  # username -> password hash (the stand-in login)
    secret_key: str
    web_dir: Path = ROOT / "web"
    chat_url_ttl: int = 300
    secure_cookies: bool = True
    # The origin browsers use (https://chat.example.com). Behind a load balancer that terminates TLS the app
    # sees plain http, so the request's own host URL is not what the browser sends as Origin.
    public_origin: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """SIGSTREAM_SIGN_URL, SIGSTREAM_STREAM_URL, AWS_REGION, BACKEND_USERS ("name:password,..."), BACKEND_PUBLIC_ORIGIN, ..."""
        users = {}
        for pair in filter(None, (p.strip() for p in env.get("BACKEND_USERS", "").split(","))):
            name, _, password = pair.partition(":")
            if not USERNAME.match(name) or not password:
                raise ValueError(f"BACKEND_USERS: {name!r} needs a lower-case name and a password")
            users[name] = generate_password_hash(password)
        stream = env.get("SIGSTREAM_STREAM_URL", "").rstrip("/")
        return cls(
            sign_url=env["SIGSTREAM_SIGN_URL"],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            stream_origin=re.sub(r"^(\w+://[^/]+).*$", r"\1", stream),
            users=users,
            secret_key=env.get("BACKEND_SECRET_KEY") or secrets.token_hex(32),
            chat_url_ttl=int(env.get("BACKEND_CHAT_URL_TTL", "300")),
            secure_cookies=env.get("BACKEND_SECURE_COOKIES", "true").lower() != "false",
            public_origin=env.get("BACKEND_PUBLIC_ORIGIN", "").rstrip("/") or None,
        )


def subject_for(username: str) -> str:
    """The Sigstream subject of one of our users: stable, and never another user's."""
    return f"acct:{username}"


def sign_request(subject: str, body: Any, chat_url_ttl: int) -> dict[str, Any] | str:
    """The page's `{"action", "conversation_id"}` as a Sign body for this subject, or what is wrong with it."""
    if not isinstance(body, dict) or body.get("action") not in ACTIONS:
        return f"action must be one of {sorted(ACTIONS)}"
    method, path = ACTIONS[body["action"]]
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and not (isinstance(conversation_id, str) and CONVERSATION.match(conversation_id)):
        return "conversation_id is malformed"
    doc: dict[str, Any] = {"subject": subject, "method": method, "path": path}
    if "{id}" in path:
        if conversation_id is None:
            return "conversation_id is required"
        doc["path"] = path.replace("{id}", conversation_id)
    elif body["action"] == "chat":
        doc["expires_in"] = chat_url_ttl
        if conversation_id:
            doc["conversation_id"] = conversation_id
    return doc


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title><link rel="stylesheet" href="style.css"></head>
<body><main><form method="post" action="/login" data-testid="login">
<h1>Sign in</h1>{error}
<label>User <input name="username" data-testid="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" data-testid="password" autocomplete="current-password" required></label>
<button type="submit" data-testid="login-submit">Sign in</button>
</form></main></body></html>"""


def _error(status: int, message: str) -> Response:
    return Response(
        json.dumps({"error": {"message": message, "code": "invalid_request"}}), status, mimetype="application/json"
    )


def create_app(config: Config | None = None, signer: Signer | None = None) -> Flask:
    """The WSGI app (`gunicorn 'examples.flask_backend.app:create_app()'` reads its Config from the environment)."""
    config = config or Config.from_env(os.environ)
    signer = signer or SignUrlClient(config.sign_url, config.region)
    app = Flask(__name__, static_folder=None)
    app.secret_key = config.secret_key
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=config.secure_cookies
    )
    csp = f"default-src 'self'; connect-src 'self' {config.stream_origin}; img-src 'self' data:; style-src 'self'"

    def _authenticate(username: str, password: str) -> bool:
        known = config.users.get(username)
        # Compare against a dummy hash for unknown users too, so timing does not tell which names exist.
        ok = check_password_hash(known or _DUMMY_HASH, password)
        return known is not None and ok

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = csp + "; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/login")
    def login_page() -> Response:
        return Response(_LOGIN_PAGE.format(error=""), mimetype="text/html")

    @app.post("/login")
    def login() -> Response:
        username = request.form.get("username", "").strip().lower()
        if not _authenticate(username, request.form.get("password", "")):
            page = _LOGIN_PAGE.format(error='<p role="alert" data-testid="login-error">Wrong user or password.</p>')
            return Response(page, 401, mimetype="text/html")
        session.clear()
        session["user"] = username
        return redirect("/", 303)  # type: ignore[return-value]

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect("/login", 303)  # type: ignore[return-value]

    @app.get("/")
    def page() -> Response:
        if "user" not in session:
            return redirect("/login", 303)  # type: ignore[return-value]
        return send_from_directory(config.web_dir, "index.html")

    @app.get("/<name>")
    def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            abort(404)
        return send_from_directory(config.web_dir, name)

    @app.post("/api/sign")
    def api_sign() -> Response:
        user = session.get("user")
        if not isinstance(user, str):
            return _error(401, "sign in first")
        origin = request.headers.get("Origin")
        expected = config.public_origin or request.host_url.rstrip("/")
        if origin is not None and not hmac.compare_digest(origin, expected):
            return _error(403, "cross-site request")  # SameSite=Strict already; this is belt and braces
        if not request.is_json:
            return _error(415, "body must be JSON")
        doc = sign_request(subject_for(user), request.get_json(silent=True), config.chat_url_ttl)
        if isinstance(doc, str):
            return _error(400, doc)
        status, answer = signer.sign(doc)
        if status != 200:
            app.logger.warning("Sign URL answered %s for %s", status, doc["path"])
            return _error(502 if status >= 500 or status == 403 else status, "could not sign a URL")
        return Response(json.dumps(answer), 200, mimetype="application/json")

    return app


_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))
