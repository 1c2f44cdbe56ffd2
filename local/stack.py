"""Start and stop the whole local stack: upstream, moto, functions, Function URLs, web page."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from local.aws import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, create_resources, free_port
from local.aws_proxy import AwsProxy
from local.fake_provider import FakeProvider
from local.function_url import FunctionUrlServer
from local.pool import ACCOUNT_ID, FunctionPool
from local.template import FUNCTION_TYPE, Resolver, function_specs, load_template, parameter_defaults
from local.web_server import WebServer

STACK_NAME = "sigstream-local"


@dataclass
class StackOptions:
    """What to run and how."""

    root: Path
    template: Path
    parameters: dict[str, str] = field(default_factory=dict)
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    log_stream: TextIO | None = None
    log_dir: Path | None = None
    web_dir: Path | None = None
    function_urls: bool = True
    aws_proxy: bool = False  # put a counting / fault-injecting proxy between functions and moto
    # Lambda Managed Instances: invocations one environment serves at once (AWS_LAMBDA_MAX_CONCURRENCY).
    max_concurrency: int | None = None


class FunctionLogs:
    """Collects function output: echoed to a stream, written per function, kept for tests."""

    def __init__(self, stream: TextIO | None, log_dir: Path | None) -> None:
        self.stream = stream
        self.log_dir = log_dir
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, function: str, line: str) -> None:
        with self._lock:
            self.lines.append((function, line))
            if self.stream:
                self.stream.write(f"[{function}] {line}\n")
                self.stream.flush()
            if self.log_dir:
                with (self.log_dir / f"{function}.log").open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")


class LocalStack:
    """Everything `make dev` runs, in one object."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.template = load_template(options.template)
        self.logs = FunctionLogs(options.log_stream, options.log_dir)
        self.upstream: FakeProvider | None = None
        self.moto: MotoServer | None = None
        self.aws_proxy: AwsProxy | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.urls: dict[str, FunctionUrlServer] = {}
        self.web: WebServer | None = None
        self.sw1_app: dict[str, Any] = {}
        self.upstream_base_url = ""
        self.secret_arns: dict[str, str] = {}

    def start(self) -> dict[str, Any]:
        """Start every part; returns the endpoints document."""
        opts = self.options
        if opts.upstream_base_url:
            self.upstream_base_url = opts.upstream_base_url.rstrip("/")
            api_key = opts.upstream_api_key or ""
        else:
            api_key = "sk-local-" + secrets.token_hex(16)
            self.upstream = FakeProvider(api_key)
            self.upstream_base_url = self.upstream.base_url
        params = parameter_defaults(self.template, opts.parameters)
        if "UpstreamBaseUrl" in params:
            params["UpstreamBaseUrl"] = self.upstream_base_url
        params.update(
            {
                "AWS::StackName": STACK_NAME,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT_ID,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
            }
        )
        resolver = Resolver(self.template, params)
        self.sw1_app = {
            "id": "local-app",
            "secret": secrets.token_urlsafe(32),
            "proxy": f"{self.upstream_base_url}/chat/completions",
            "headers": {"authorization": f"Bearer {api_key}"},
        }
        self.moto = MotoServer.start()
        self.secret_arns = create_resources(
            self.moto,
            self.template,
            resolver,
            {"provider-key": api_key, "sw1-apps": json.dumps({"apps": [self.sw1_app]})},
        )
        ports: dict[str, int] = {}
        for logical_id, res in self.template["Resources"].items():
            if res.get("Type") == FUNCTION_TYPE:
                name = res.get("Properties", {}).get("FunctionName")
                resolver.refs[logical_id] = name if isinstance(name, str) else f"{STACK_NAME}-{logical_id}"
                # The URL is known even when not served (make invoke), so env vars that name it resolve.
                if "FunctionUrlConfig" in res.get("Properties", {}):
                    ports[logical_id] = free_port()
                    url = f"http://127.0.0.1:{ports[logical_id]}/"
                    resolver.attributes[(f"{logical_id}Url", "FunctionUrl")] = url
            elif res.get("Type") == "AWS::Serverless::LayerVersion":
                resolver.refs[logical_id] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical_id}:1"
        credentials = {ACCESS_KEY: SECRET_KEY}
        aws_env = self.moto.client_env()
        if opts.aws_proxy:
            self.aws_proxy = AwsProxy(self.moto.port)
            aws_env["AWS_ENDPOINT_URL"] = self.aws_proxy.endpoint
        for logical_id, spec in function_specs(self.template, resolver, opts.root).items():
            if opts.max_concurrency:  # set by Lambda, not the template: every function gets it
                env = {**spec.environment, "AWS_LAMBDA_MAX_CONCURRENCY": str(opts.max_concurrency)}
                spec = dataclasses.replace(spec, environment=env)
            pool = FunctionPool(spec, aws_env, REGION, self.logs)
            self.pools[logical_id] = pool
            if logical_id in ports and opts.function_urls:
                server = FunctionUrlServer(pool, credentials, ports[logical_id])
                server.start()
                self.urls[logical_id] = server
        if opts.web_dir and opts.web_dir.is_dir():
            self.web = WebServer(opts.web_dir, self)
        return self.endpoints()

    def endpoints(self) -> dict[str, Any]:
        """The `.local/endpoints.json` document."""
        doc: dict[str, Any] = {
            "function_urls": {k: v.url for k, v in self.urls.items()},
            "aws_endpoint_url": self.moto.endpoint if self.moto else "",
            "region": REGION,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "upstream_base_url": self.upstream_base_url,
            "sw1_app": {"id": self.sw1_app.get("id"), "secret": self.sw1_app.get("secret")},
            "web_url": self.web.url if self.web else "",
        }
        for logical_id, server in self.urls.items():
            # SignFunction -> sign_url: one rule, so the template stays the only list of functions.
            doc[logical_id.removesuffix("Function").lower() + "_url"] = server.url
        return doc

    def secret_values(self) -> dict[str, str]:
        """Current values of the template's role-tagged secrets (signing keys, SW1 apps, provider key)."""
        if not self.moto:
            return {}
        client = self.moto.client("secretsmanager")
        return {role: client.get_secret_value(SecretId=arn)["SecretString"] for role, arn in self.secret_arns.items()}

    def stop(self) -> None:
        """Stop every child process and server."""
        for server in self.urls.values():
            server.stop()
        for pool in self.pools.values():
            pool.close()
        if self.web:
            self.web.stop()
        if self.aws_proxy:
            self.aws_proxy.stop()
        if self.moto:
            self.moto.stop()
        if self.upstream:
            self.upstream.stop()


def parse_overrides(text: str) -> dict[str, str]:
    """`Name=value Name2=value2`, as `sam deploy --parameter-overrides` takes them."""
    pairs = [item.split("=", 1) for item in text.split()]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise ValueError(f"parameter overrides must be Name=value pairs: {text!r}")
    return dict(pairs)  # type: ignore[arg-type]


def options_from_env(root: Path, log_stream: TextIO | None = sys.stdout) -> StackOptions:
    """`make dev`'s options: UPSTREAM_BASE_URL/_API_KEY, SIGSTREAM_PARAMETER_OVERRIDES, AWS_LAMBDA_MAX_CONCURRENCY."""
    concurrency = os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "")
    if concurrency and not (concurrency.isdigit() and int(concurrency) >= 1):
        raise ValueError(f"AWS_LAMBDA_MAX_CONCURRENCY must be a positive integer: {concurrency!r}")
    return StackOptions(
        root=root,
        template=root / "template.yaml",
        parameters=parse_overrides(os.environ.get("SIGSTREAM_PARAMETER_OVERRIDES", "")),
        upstream_base_url=os.environ.get("UPSTREAM_BASE_URL") or None,
        upstream_api_key=os.environ.get("UPSTREAM_API_KEY") or None,
        log_stream=log_stream,
        log_dir=root / ".local" / "logs",
        web_dir=root / "web",
        max_concurrency=int(concurrency) if concurrency else None,
    )
