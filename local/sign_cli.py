"""`make sign`: print a signed Stream URL, like Signway's sign.py, for backends and local use."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import boto3

from local.stack import STACK_NAME
from local.template import load_template
from sigstream.core.settings import SigningKeys, parse_signing_keys
from sigstream.core.url_issuer import SignSpec, issue_url, random_id


def _keys_from_local_stack(root: Path) -> tuple[SigningKeys, str]:
    state = Path(os.environ.get("SIGSTREAM_LOCAL_STATE_DIR") or root / ".local")
    endpoints = json.loads((state / "endpoints.json").read_text())
    template = load_template(root / "template.yaml")
    logical_id = next(
        k for k, r in template["Resources"].items() if (r.get("Metadata") or {}).get("SigstreamLocal") == "signing-keys"
    )
    client = boto3.client(
        "secretsmanager",
        endpoint_url=endpoints["aws_endpoint_url"],
        region_name=endpoints["region"],
        aws_access_key_id=endpoints["aws_access_key_id"],
        aws_secret_access_key=endpoints["aws_secret_access_key"],
    )
    value = client.get_secret_value(SecretId=f"{STACK_NAME}/{logical_id}")["SecretString"]
    return parse_signing_keys(value), endpoints["stream_url"]


def main(argv: list[str], root: Path) -> int:
    """Parse arguments, sign, print the URL document as JSON."""
    parser = argparse.ArgumentParser(prog="make sign", description=__doc__)
    parser.add_argument("subject")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--conversation-id")
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--single-use", action="store_true")
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--max-lifetime", type=int, default=int(os.environ.get("SIGSTREAM_MAX_URL_LIFETIME", "3600")))
    args = parser.parse_args(argv)
    if os.environ.get("SIGSTREAM_SIGNING_KEYS"):
        keys, stream_url = parse_signing_keys(os.environ["SIGSTREAM_SIGNING_KEYS"]), os.environ["SIGSTREAM_STREAM_URL"]
    else:
        keys, stream_url = _keys_from_local_stack(root)
    spec = SignSpec(
        subject=args.subject,
        method=args.method,
        path=args.path,
        conversation_id=args.conversation_id,
        stateless=args.stateless,
        expires_in=args.expires_in,
        single_use=args.single_use,
        models=tuple(args.model),
        max_tokens=args.max_tokens,
    )
    doc = issue_url(
        spec,
        keys,
        stream_url,
        now=int(time.time()),
        max_lifetime=args.max_lifetime,
        new_id=random_id,
    )
    print(json.dumps(doc, indent=2))
    return 0
