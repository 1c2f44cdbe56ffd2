"""`python -m examples.flask_backend`: the backend against a running `make dev` (or any deployed stack).

With SIGSTREAM_SIGN_URL unset, it reads the local stack's .local/endpoints.json (Sign URL, Stream URL,
region and the local credentials the local Sign URL accepts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from examples.flask_backend.app import ROOT, Config, create_app


def main(argv: list[str] | None = None) -> int:
    """CLI."""
    parser = argparse.ArgumentParser(prog="python -m examples.flask_backend", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BACKEND_PORT", "8000")))
    parser.add_argument("--endpoints", type=Path, default=ROOT / ".local" / "endpoints.json")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if "SIGSTREAM_SIGN_URL" not in env:
        if not args.endpoints.exists():
            print(f"{args.endpoints} not found: start `make dev` first (or set SIGSTREAM_SIGN_URL)", file=sys.stderr)
            return 2
        endpoints = json.loads(args.endpoints.read_text())
        env.update(
            SIGSTREAM_SIGN_URL=endpoints["sign_url"],
            SIGSTREAM_STREAM_URL=endpoints["stream_url"],
            AWS_REGION=endpoints["region"],
            AWS_ACCESS_KEY_ID=endpoints["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=endpoints["aws_secret_access_key"],
        )
        env.pop("AWS_SESSION_TOKEN", None)
        env.setdefault("BACKEND_USERS", "alice:alice,bob:bob")
        env.setdefault("BACKEND_SECURE_COOKIES", "false")  # plain http on loopback
        os.environ.update(env)  # botocore's credential chain reads the process environment
        os.environ.pop("AWS_SESSION_TOKEN", None)
    app = create_app(Config.from_env(env))
    print(f"backend on http://127.0.0.1:{args.port}/ (users: {env.get('BACKEND_USERS', '').count(':')})", flush=True)
    app.run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
