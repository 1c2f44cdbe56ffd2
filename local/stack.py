"""Start and stop the whole local stack: upstream, moto, functions, Function URLs, web page."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from local import persistence
from local.aws import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, create_resources, free_port
from local.aws_proxy import AwsProxy
from local.fake_provider import MODEL, FakeProvider
from local.function_url import FunctionUrlServer
from local.pool import ACCOUNT_ID, FunctionPool
from local.relay import Relay
from local.running_stack import STACK_NAME as RUNNING_STACK_NAME
from local.template import FUNCTION_TYPE, FunctionSpec, Resolver, function_specs, load_template, parameter_defaults
from local.web_server import WebServer

STACK_NAME = RUNNING_STACK_NAME
# The AWS SDKs' endpoint overrides, as the template declares them (empty when deployed).
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SECRETS_MANAGER")
DOCKER_HOST_NAME = "host.docker.internal"
LOOPBACK = "127.0.0.1"


def docker_bridge_address() -> str | None:
    """The IPv4 address of Docker Engine's default bridge (docker0) on this machine, if there is one."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", b"docker0"))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def default_container_host() -> str:
    """How a `sam local invoke` container reaches this machine.

    SAM CLI runs it on Docker's default bridge whatever `--docker-network host` says (SAM CLI 1.170 only
    connects other networks; aws/aws-sam-cli#4236), so 127.0.0.1 is the container itself. With Docker
    Engine the machine is the bridge's address; Docker Desktop names it host.docker.internal.
    """
    return docker_bridge_address() or DOCKER_HOST_NAME


def relays_needed(host: str | None) -> bool:
    """A container host that is an address of this machine other than 127.0.0.1 needs listeners there."""
    if not host or host == LOOPBACK:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name (host.docker.internal): Docker Desktop forwards it to the loopback itself
    return True


def sam_invoke_flags(host: str) -> list[str]:
    """The `sam local invoke` options that let its container reach `host` (see default_container_host)."""
    return ["--add-host", f"{DOCKER_HOST_NAME}:host-gateway"] if host == DOCKER_HOST_NAME else []


class StackError(Exception):
    """The stack cannot start (a port in use, a child that died); the message says what to do."""


class StackStoppedError(StackError):
    """stop() was called while start() was still running (Ctrl-C during start-up)."""


@dataclass(frozen=True)
class Ports:
    """Stable ports from one base (SIGSTREAM_PORT): the page, moto, the upstream, then each Function URL."""

    base: int

    @property
    def web(self) -> int:
        """The chat page."""
        return self.base

    @property
    def aws(self) -> int:
        """The moto server."""
        return self.base + 1

    @property
    def upstream(self) -> int:
        """The embedded upstream."""
        return self.base + 2

    def function_url(self, index: int) -> int:
        """The index-th function with a FunctionUrlConfig, in template order."""
        return self.base + 3 + index


def port_is_free(port: int) -> bool:
    """Whether a loopback port can be bound now."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    ports: Ports | None = None  # fixed ports (SIGSTREAM_PORT); free ones when None
    persist_file: Path | None = None  # moto's tables and key secrets saved here on stop, loaded on start
    # Lambda Managed Instances: invocations one environment serves at once (AWS_LAMBDA_MAX_CONCURRENCY).
    max_concurrency: int | None = None
    container_host: str | None = None  # how `sam local invoke` containers reach this machine (sam-env.json)


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
        self.tables: dict[str, str] = {}
        self.specs: dict[str, FunctionSpec] = {}
        self.restored_items = 0
        self.relays: list[Relay] = []
        self.function_urls: set[str] = set()  # every Function URL, served or not (make invoke)
        self._stopping = False
        self._lock = threading.Lock()

    def _check_ports(self) -> None:
        ports = self.options.ports
        if ports is None:
            return
        url_functions = [
            k
            for k, r in self.template["Resources"].items()
            if r.get("Type") == FUNCTION_TYPE and "FunctionUrlConfig" in r.get("Properties", {})
        ]
        wanted = {"the chat page": ports.web, "moto server": ports.aws}
        if not self.options.upstream_base_url:
            wanted["the embedded upstream"] = ports.upstream
        wanted.update({f"the {k} URL": ports.function_url(i) for i, k in enumerate(url_functions)})
        for what, port in wanted.items():
            if not port_is_free(port):
                raise StackError(f"port {port} ({what}) is in use; stop what holds it or choose another SIGSTREAM_PORT")

    def _step(self) -> None:
        if self._stopping:
            raise StackStoppedError("stopped while starting")

    def start(self) -> dict[str, Any]:
        """Start every part; returns the endpoints document. stop() may be called from another thread."""
        opts = self.options
        self._check_ports()
        saved_tables, saved_secrets = persistence.read_snapshot(opts.persist_file) if opts.persist_file else ({}, {})
        if (
            opts.persist_file
            and not opts.persist_file.exists()
            and persistence.set_aside_path(opts.persist_file).exists()
        ):
            aside = persistence.set_aside_path(opts.persist_file)
            self.logs("stack", f"{opts.persist_file} could not be read: starting empty, the file is kept as {aside}")
        if opts.upstream_base_url:
            self.upstream_base_url = opts.upstream_base_url.rstrip("/")
            api_key = opts.upstream_api_key or ""
        else:
            api_key = "sk-local-" + secrets.token_hex(16)
            with self._lock:
                self._step()
                self.upstream = FakeProvider(api_key, port=opts.ports.upstream if opts.ports else 0)
            self.upstream_base_url = self.upstream.base_url
        params = parameter_defaults(self.template, opts.parameters)
        if "UpstreamBaseUrl" in params:
            params["UpstreamBaseUrl"] = self.upstream_base_url
        if self.upstream is not None and "AllowedModels" in params and "AllowedModels" not in opts.parameters:
            params["AllowedModels"] = ",".join(filter(None, [params["AllowedModels"], MODEL]))  # the embedded one
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
        proxy = f"{self.upstream_base_url}/chat/completions"
        self.sw1_app = {
            "id": "local-app",
            "secret": saved_secrets.get("sw1-app-secret") or secrets.token_urlsafe(32),
            "proxy": proxy,
            # A sam local invoke container reaches the same upstream under the container host's name.
            "allowed_proxies": sorted({proxy, self.container_url(proxy)}),
            "headers": {"authorization": f"Bearer {api_key}"},
        }
        with self._lock:
            self._step()
            self.moto = MotoServer.spawn(opts.ports.aws if opts.ports else None)
        try:
            self.moto.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            self._step()
            raise StackError(f"moto server did not start: {exc}") from exc
        self._step()
        self._start_relays()
        values = {"provider-key": api_key, "sw1-apps": json.dumps({"apps": [self.sw1_app]})}
        if "signing-keys" in saved_secrets:
            values["signing-keys"] = saved_secrets["signing-keys"]
        self.secret_arns = create_resources(self.moto, self.template, resolver, values)
        self.tables = {
            k: resolver.refs[k]
            for k, r in self.template["Resources"].items()
            if r.get("Type") == "AWS::DynamoDB::Table"
        }
        if saved_tables:
            self.restored_items = persistence.load_tables(self.moto.client("dynamodb"), self.tables, saved_tables)
        ports: dict[str, int] = {}
        for logical_id, res in self.template["Resources"].items():
            if res.get("Type") == FUNCTION_TYPE:
                name = res.get("Properties", {}).get("FunctionName")
                resolver.refs[logical_id] = name if isinstance(name, str) else f"{STACK_NAME}-{logical_id}"
                # The URL is known even when not served (make invoke), so env vars that name it resolve.
                if "FunctionUrlConfig" in res.get("Properties", {}):
                    ports[logical_id] = opts.ports.function_url(len(ports)) if opts.ports else free_port()
                    url = f"http://127.0.0.1:{ports[logical_id]}/"
                    resolver.attributes[(f"{logical_id}Url", "FunctionUrl")] = url
                    self.function_urls.add(url)
            elif res.get("Type") == "AWS::Serverless::LayerVersion":
                resolver.refs[logical_id] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical_id}:1"
        credentials = {ACCESS_KEY: SECRET_KEY}
        aws_env = self.moto.client_env()
        if opts.aws_proxy:
            self.aws_proxy = AwsProxy(self.moto.port)
            aws_env["AWS_ENDPOINT_URL"] = self.aws_proxy.endpoint
        self.specs = function_specs(self.template, resolver, opts.root)
        for logical_id, spec in self.specs.items():
            with self._lock:
                self._step()
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
            with self._lock:
                self._step()
                self.web = WebServer(opts.web_dir, self, port=opts.ports.web if opts.ports else 0)
        return self.endpoints()

    def _start_relays(self) -> None:
        """Listen on the container host too (for moto and the embedded upstream), when it is an address here."""
        host = self.options.container_host
        if not relays_needed(host) or host is None or self.moto is None:
            return
        ports = [self.moto.port] + ([int(self.upstream.server_address[1])] if self.upstream else [])
        for port in ports:
            try:
                relay = Relay(("tcp", host, port), ("tcp", LOOPBACK, port))
            except OSError as exc:
                raise StackError(
                    f"cannot listen on {host}:{port} for sam local invoke containers ({exc.strerror}); "
                    "set SIGSTREAM_SAM_HOST to an address of this machine (see the README)"
                ) from None
            with self._lock:
                self._step()
                self.relays.append(relay.start())

    def container_url(self, url: str) -> str:
        """A loopback URL of this stack as a `sam local invoke` container reaches it."""
        host = self.options.container_host or LOOPBACK
        return url.replace(f"//{LOOPBACK}:", f"//{host}:")

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

    def sam_env(self) -> dict[str, dict[str, str]]:
        """A `sam local invoke --env-vars` file: each function's variables as this stack sets them.

        Every variable the template declares gets the local value (real resource names and ARNs, the
        Stream URL, the upstream), and the endpoint overrides point at moto. What the function connects
        to is named as the container reaches it (`container_url`); the Function URLs stay as they are:
        the Sign function hands them to clients on this machine.
        """
        endpoint = self.moto.endpoint if self.moto else ""
        doc: dict[str, dict[str, str]] = {}
        for logical_id, spec in self.specs.items():
            env = dict(spec.environment)
            if "AWS_ENDPOINT_URL" in env:
                env["AWS_ENDPOINT_URL"] = endpoint
            doc[logical_id] = {k: v if v in self.function_urls else self.container_url(v) for k, v in env.items()}
        return doc

    def snapshot(self) -> None:
        """Save moto's tables and the key secrets (SIGSTREAM_PERSIST), for the next start."""
        if not self.options.persist_file or not self.moto or not self.tables:
            return
        values = self.secret_values()
        secrets_doc = {"sw1-app-secret": str(self.sw1_app.get("secret", ""))}
        if "signing-keys" in values:
            secrets_doc["signing-keys"] = values["signing-keys"]
        tables = persistence.dump_tables(self.moto.client("dynamodb"), self.tables)
        persistence.save_snapshot(self.options.persist_file, tables, secrets_doc)

    def stop(self) -> None:
        """Stop every child process and server; safe from another thread while start() runs, and twice."""
        with self._lock:
            self._stopping = True
            urls, self.urls = list(self.urls.values()), {}
            pools, self.pools = list(self.pools.values()), {}
            web, self.web = self.web, None
            proxy, self.aws_proxy = self.aws_proxy, None
            upstream, self.upstream = self.upstream, None
            relays, self.relays = self.relays, []
        for relay in relays:
            relay.stop()
        # Environments first (SIGKILL, as Lambda ends them), so no runtime sees its Runtime API go away.
        for pool in pools:
            pool.close()
        servers: list[Any] = [*urls, *(s for s in (web, proxy, upstream) if s is not None)]
        threads = [threading.Thread(target=server.stop, daemon=True) for server in servers]
        for thread in threads:
            thread.start()
        if self.moto and self.moto.process.poll() is None:
            try:
                self.snapshot()
            except Exception as exc:  # never lose the shutdown over the snapshot; say so instead
                self.logs("stack", f"could not save local data: {exc}")
            self.moto.stop()
        for thread in threads:
            thread.join(timeout=2)


def parse_overrides(text: str) -> dict[str, str]:
    """`Name=value Name2=value2`, as `sam deploy --parameter-overrides` takes them."""
    pairs = [item.split("=", 1) for item in text.split()]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise ValueError(f"parameter overrides must be Name=value pairs: {text!r}")
    return {name: value for name, value in pairs}


def options_from_env(root: Path, log_stream: TextIO | None = sys.stdout, state_dir: Path | None = None) -> StackOptions:
    """Options for `make dev`, from the environment.

    UPSTREAM_BASE_URL / UPSTREAM_API_KEY, SIGSTREAM_PARAMETER_OVERRIDES, SIGSTREAM_PORT (stable ports
    from this base) and SIGSTREAM_PERSIST=1 (keep local data across restarts).
    """
    state = state_dir or root / ".local"
    base = os.environ.get("SIGSTREAM_PORT", "").strip()
    if base and not (base.isdigit() and 1024 <= int(base) <= 65000):
        raise StackError(f"SIGSTREAM_PORT must be a port number from 1024 to 65000, not {base!r}")
    persist = os.environ.get("SIGSTREAM_PERSIST", "").strip().lower() in ("1", "true", "yes")
    concurrency = os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "").strip()
    if concurrency and not (concurrency.isdigit() and int(concurrency) >= 1):
        raise StackError(f"AWS_LAMBDA_MAX_CONCURRENCY must be a positive integer, not {concurrency!r}")
    container_host = os.environ.get("SIGSTREAM_SAM_HOST", "").strip() or default_container_host()
    return StackOptions(
        root=root,
        template=root / "template.yaml",
        parameters=parse_overrides(os.environ.get("SIGSTREAM_PARAMETER_OVERRIDES", "")),
        upstream_base_url=os.environ.get("UPSTREAM_BASE_URL") or None,
        upstream_api_key=os.environ.get("UPSTREAM_API_KEY") or None,
        log_stream=log_stream,
        log_dir=state / "logs",
        web_dir=root / "web",
        ports=Ports(int(base)) if base else None,
        persist_file=state / "data" / "moto-state.json" if persist else None,
        max_concurrency=int(concurrency) if concurrency else None,
        container_host=container_host,
    )
