"""moto in server mode as the local AWS, with the template's tables and secrets created in it."""

from __future__ import annotations

import json
import secrets
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from local.template import Resolver

ACCESS_KEY = "AKIALOCALSIGSTREAM01"
SECRET_KEY = "local-secret-key-for-moto-server-only"  # noqa: S105 - moto accepts any key
REGION = "us-east-1"
_TABLE_KEYS = (
    "KeySchema",
    "AttributeDefinitions",
    "BillingMode",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "ProvisionedThroughput",
    "StreamSpecification",
    "SSESpecification",
)


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


@dataclass
class MotoServer:
    """A moto server child process on loopback (DynamoDB calls serialised, see local.moto_serialised)."""

    port: int
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, port: int | None = None) -> MotoServer:
        """Start moto server and wait until it answers."""
        server = cls.spawn(port)
        server.wait_ready()
        return server

    @classmethod
    def spawn(cls, port: int | None = None) -> MotoServer:
        """Start the process without waiting (so a caller can stop it while it starts)."""
        port = port or free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "local.moto_serialised", "127.0.0.1", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,  # so the child can import `local`
            start_new_session=True,  # a terminal's Ctrl-C reaches `make dev`, which stops it in order
        )
        return cls(port, process)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until it answers; fails at once if the process died (e.g. its port was taken)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with status {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"moto server not answering on port {self.port} after {timeout}s")

    @property
    def endpoint(self) -> str:
        """AWS_ENDPOINT_URL for clients."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        """A boto3 client pointed at this server."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        """Terminate the server (killed if it does not exit within a second)."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client_env(self) -> dict[str, str]:
        """Environment that points AWS SDKs (boto3, Powertools) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": "local",
        }


def generate_secret(spec: dict[str, Any]) -> str:
    """A value for GenerateSecretString, as Secrets Manager would produce one."""
    length = int(spec.get("PasswordLength", 32))
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation", False):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    alphabet = "".join(c for c in alphabet if c not in spec.get("ExcludeCharacters", ""))
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    if "SecretStringTemplate" in spec:
        doc = json.loads(spec["SecretStringTemplate"])
        doc[spec["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


def create_resources(
    moto: MotoServer,
    template: dict[str, Any],
    resolver: Resolver,
    secret_values: dict[str, str],
) -> dict[str, str]:
    """Create the template's DynamoDB tables and secrets; fills resolver refs/attributes.

    `secret_values` maps a secret's `Metadata.SigstreamLocal` role to the value to store; returns
    each role's secret ARN.
    """
    roles: dict[str, str] = {}
    dynamodb, secretsmanager = moto.client("dynamodb"), moto.client("secretsmanager")
    for logical_id, res in template["Resources"].items():
        kind = res.get("Type")
        if kind == "AWS::DynamoDB::Table":
            props = resolver.resolve(res.get("Properties", {}))
            name = props.get("TableName") or f"{resolver.parameters['AWS::StackName']}-{logical_id}"
            args = {k: props[k] for k in _TABLE_KEYS if k in props}
            if "SSESpecification" in args:
                args["SSESpecification"] = {"Enabled": bool(args["SSESpecification"].get("SSEEnabled"))}
            table = dynamodb.create_table(TableName=name, **args)["TableDescription"]
            if "TimeToLiveSpecification" in props:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = table["TableArn"]
        elif kind == "AWS::SecretsManager::Secret":
            props = resolver.resolve(res.get("Properties", {}))
            role = (res.get("Metadata") or {}).get("SigstreamLocal")
            if role in secret_values:
                value = secret_values[role]
            elif "GenerateSecretString" in props:
                value = generate_secret(props["GenerateSecretString"])
            else:
                value = props.get("SecretString", "")
            name = props.get("Name") or f"{resolver.parameters['AWS::StackName']}/{logical_id}"
            arn = secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]
            resolver.refs[logical_id] = arn
            resolver.attributes[(logical_id, "Id")] = arn
            if role:
                roles[role] = arn
    return roles
