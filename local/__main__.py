"""`python -m local dev` runs the stack; `python -m local invoke FN EVENT` runs one invocation."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from local.invoke_cli import invoke_once
from local.stack import LocalStack, options_from_env

ROOT = Path(__file__).resolve().parent.parent


def run_dev() -> int:
    """Start everything, write .local/endpoints.json, wait for SIGINT/SIGTERM, stop everything."""
    stack = LocalStack(options_from_env(ROOT))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state_dir = Path(os.environ.get("SIGSTREAM_LOCAL_STATE_DIR") or ROOT / ".local")
    endpoints_file = state_dir / "endpoints.json"
    try:
        endpoints = stack.start()
        endpoints_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = endpoints_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(endpoints, indent=2) + "\n")
        tmp.replace(endpoints_file)  # readers never see a half-written file
        print("sigstream local stack is up:", flush=True)
        for key in ("web_url", "sign_url", "stream_url", "aws_endpoint_url", "upstream_base_url"):
            print(f"  {key:18} {endpoints.get(key, '')}", flush=True)
        print(f"  endpoints written to {endpoints_file}; Ctrl-C stops", flush=True)
        stop.wait()
    finally:
        endpoints_file.unlink(missing_ok=True)
        stack.stop()
        print("sigstream local stack stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m local")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run the whole local stack")
    inv = sub.add_parser("invoke", help="invoke one function with an event file, like `sam local invoke`")
    inv.add_argument("function", help="logical id in template.yaml, e.g. StreamFunction")
    inv.add_argument("event", type=Path, help="event JSON file, e.g. events/stream-chat.json")
    sub.add_parser("sign", help="print a signed Stream URL (see --help)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sign"]:
        from local.sign_cli import main as sign_main

        return sign_main(argv[1:], ROOT)
    args = parser.parse_args(argv)
    if args.command == "dev":
        return run_dev()
    return invoke_once(ROOT, args.function, args.event, sys.stdout.buffer, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
