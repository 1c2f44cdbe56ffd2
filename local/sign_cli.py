"""`make sign`: print a signed Stream URL, like Signway's sign.py, for backends and local use."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from local.running_stack import NoLocalStackError, RunningStack
from sigstream.core.errors import BadRequestError
from sigstream.core.settings import ConfigError, SigningKeys, parse_signing_keys
from sigstream.core.url_issuer import SignSpec, issue_url, random_id


def _keys_from_local_stack(root: Path) -> tuple[SigningKeys, str]:
    running = RunningStack.find(root)
    return parse_signing_keys(running.secret_values()["signing-keys"]), str(running.endpoints["stream_url"])


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
    parser.add_argument("--n", type=int, help="choices per chat request the URL allows (absent: 1)")
    parser.add_argument("--max-lifetime", type=int, default=int(os.environ.get("SIGSTREAM_MAX_URL_LIFETIME", "3600")))
    args = parser.parse_args(argv)
    try:
        if os.environ.get("SIGSTREAM_SIGNING_KEYS"):
            keys = parse_signing_keys(os.environ["SIGSTREAM_SIGNING_KEYS"])
            stream_url = os.environ.get("SIGSTREAM_STREAM_URL") or ""
            if not stream_url:
                raise NoLocalStackError("SIGSTREAM_SIGNING_KEYS is set but SIGSTREAM_STREAM_URL is not; set both")
        else:
            keys, stream_url = _keys_from_local_stack(root)
    except NoLocalStackError as exc:
        print(f"make sign: {exc} (or set SIGSTREAM_SIGNING_KEYS and SIGSTREAM_STREAM_URL)", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"make sign: {exc}", file=sys.stderr)
        return 1
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
        n=args.n,
    )
    try:
        doc = issue_url(
            spec,
            keys,
            stream_url,
            now=int(time.time()),
            max_lifetime=args.max_lifetime,
            new_id=random_id,
        )
    except BadRequestError as exc:
        print(f"make sign: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2))
    return 0
