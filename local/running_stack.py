"""The stack a `make dev` in this checkout is running, as seen from another command (`make sign`, `make event`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.template import load_template

STACK_NAME = "sigstream-local"  # local.stack names resources after it
# What `make sign` and `make event` read from endpoints.json.
ENDPOINT_KEYS = ("aws_endpoint_url", "region", "aws_access_key_id", "aws_secret_access_key", "stream_url")


class NoLocalStackError(Exception):
    """No usable `make dev` is running; the message is one line saying what to do."""


def state_dir(root: Path) -> Path:
    """Where `make dev` writes endpoints.json, sam-env.json, logs and its lock (.local/)."""
    return Path(os.environ.get("SIGSTREAM_LOCAL_STATE_DIR") or root / ".local")


def secret_names(template: dict[str, Any]) -> dict[str, str]:
    """Role (`Metadata.SigstreamLocal`) to the secret's local name."""
    return {
        role: f"{STACK_NAME}/{logical_id}"
        for logical_id, res in template["Resources"].items()
        if (role := (res.get("Metadata") or {}).get("SigstreamLocal"))
    }


@dataclass(frozen=True)
class RunningStack:
    """Endpoints and secrets of the running local stack."""

    root: Path
    endpoints: dict[str, Any]

    @classmethod
    def find(cls, root: Path) -> RunningStack:
        """Read .local/endpoints.json, or say that `make dev` must run first."""
        path = state_dir(root) / "endpoints.json"
        try:
            endpoints = json.loads(path.read_text())
        except FileNotFoundError:
            raise NoLocalStackError(
                f"no local stack is running ({path} not found): start `make dev` in another terminal first"
            ) from None
        except ValueError:
            raise NoLocalStackError(f"{path} is not valid JSON: restart `make dev`") from None
        missing = [k for k in ENDPOINT_KEYS if not isinstance(endpoints, dict) or k not in endpoints]
        if missing:
            raise NoLocalStackError(f"{path} lacks {', '.join(missing)} (another version's?): restart `make dev`")
        return cls(root, endpoints)

    def client(self, service: str) -> Any:
        """A boto3 client for the stack's moto server (no retries: a stopped stack is reported at once)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoints["aws_endpoint_url"],
            region_name=self.endpoints["region"],
            aws_access_key_id=self.endpoints["aws_access_key_id"],
            aws_secret_access_key=self.endpoints["aws_secret_access_key"],
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def secret_values(self) -> dict[str, str]:
        """Current values of the role-tagged secrets ('signing-keys', 'sw1-apps', 'provider-key')."""
        from botocore.exceptions import BotoCoreError, ClientError

        names = secret_names(load_template(self.root / "template.yaml"))
        client = self.client("secretsmanager")
        try:
            return {role: client.get_secret_value(SecretId=name)["SecretString"] for role, name in names.items()}
        except (BotoCoreError, ClientError) as exc:
            raise NoLocalStackError(
                f"the local stack does not answer at {self.endpoints['aws_endpoint_url']} ({type(exc).__name__}); "
                "is `make dev` still running? Restart it"
            ) from None
