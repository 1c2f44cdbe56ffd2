"""`python -m local dev | invoke FN EVENT | event EVENT | sign SUBJECT`: the local stack's commands."""

from __future__ import annotations

import signal

# Ctrl-C while the modules below load (boto3, moto: most of a second) has nothing to clean up yet: end
# quietly instead of printing a KeyboardInterrupt traceback. Python's own handler is back right after.
signal.signal(signal.SIGINT, signal.SIG_DFL)

import argparse
import json
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

from local.aws import ACCESS_KEY, REGION, SECRET_KEY
from local.dev_lock import AlreadyRunningError, DevLock
from local.invoke_cli import invoke_once
from local.running_stack import state_dir
from local.stack import LocalStack, StackError, options_from_env, sam_invoke_flags

signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent


def _write_json(path: Path, doc: Any) -> None:
    """Atomically: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _shown(path: Path) -> str:
    """A path as a user in the checkout would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sam_invoke_command(function: str, event: str, env_file: Path, container_host: str) -> str:
    """The `sam local invoke` line for one event: credentials for moto, the stack's --env-vars file."""
    credentials = f"AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_DEFAULT_REGION={REGION}"
    flags = "".join(f" {shlex.quote(flag)}" for flag in sam_invoke_flags(container_host))
    return (
        f"make -s event EVENT={event} | {credentials} .venv-tools/bin/sam local invoke {function} "
        f"-e - --env-vars {shlex.quote(_shown(env_file))}{flags}"
    )


def _start(stack: LocalStack, outcome: list[Any]) -> None:
    try:
        outcome.append(stack.start())
    except BaseException as exc:  # reported by the main thread (or dropped if it is stopping anyway)
        outcome.append(exc)


def run_dev() -> int:
    """Start everything, write .local/endpoints.json and sam-env.json, wait for Ctrl-C / SIGTERM, stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state = state_dir(ROOT)
    try:
        lock = DevLock.acquire(state)
    except AlreadyRunningError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    endpoints_file, env_file = state / "endpoints.json", state / "sam-env.json"
    try:
        stack = LocalStack(options_from_env(ROOT, state_dir=state))
    except StackError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    outcome: list[Any] = []
    # Start-up runs on a thread so Ctrl-C is honoured at once, even while moto is still starting.
    starter = threading.Thread(target=_start, args=(stack, outcome), daemon=True)
    starter.start()
    parent = os.getppid()

    def orphaned() -> bool:
        # `kill -9` of make (our parent) sends us nothing: being re-parented is the only sign.
        return os.getppid() != parent

    try:
        while starter.is_alive() and not stop.wait(0.05) and not orphaned():
            pass
        if stop.is_set() or orphaned():
            return 0
        result = outcome[0]
        if isinstance(result, StackError):
            print(f"make dev: {result}", file=sys.stderr)
            return 1
        if isinstance(result, BaseException):
            raise result
        _write_json(endpoints_file, result)
        _write_json(env_file, stack.sam_env())
        lock.describe({"web_url": str(result.get("web_url", ""))})
        print("sigstream local stack is up:", flush=True)
        for key in ("web_url", "sign_url", "stream_url", "aws_endpoint_url", "upstream_base_url"):
            print(f"  {key:18} {result.get(key, '')}", flush=True)
        if stack.options.persist_file:
            print(f"  local data kept in {_shown(stack.options.persist_file)} ({stack.restored_items} items loaded)")
        print(f"  endpoints written to {_shown(endpoints_file)}", flush=True)
        host = stack.options.container_host or ""
        print(f"  sam local invoke (Docker; run `make build` first; containers reach this machine at {host}):")
        print(
            "    " + sam_invoke_command("StreamFunction", "events/stream-chat-valid.json", env_file, host), flush=True
        )
        print("  Ctrl-C stops", flush=True)
        while not stop.wait(0.2) and not orphaned():
            pass
        return 0
    finally:
        for path in (endpoints_file, env_file):
            path.unlink(missing_ok=True)
        stack.stop()
        starter.join(timeout=1)
        stack.stop()  # anything the start-up thread created after the first stop()
        lock.release()
        print("sigstream local stack stopped", flush=True)


def _container_upstream(endpoints: dict[str, Any]) -> str:
    """The upstream as a `sam local invoke` container reaches it (sam-env.json), for SW1 events' proxy."""
    try:
        env = json.loads((state_dir(ROOT) / "sam-env.json").read_text())["StreamFunction"]
        return str(env["SIGSTREAM_UPSTREAM_BASE_URL"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(endpoints.get("upstream_base_url", ""))


def run_event(event_file: Path) -> int:
    """`make event`: print a freshly signed copy of an event for `sam local invoke -e -`."""
    from local.event_prep import EventFileError, check_event, prepare_event
    from local.running_stack import NoLocalStackError, RunningStack
    from local.url_caller import url_caller

    if not event_file.is_file():
        print(f"make event: no event file {event_file} (see events/README.md)", file=sys.stderr)
        return 2
    try:
        check_event(event_file.read_bytes())
        running = RunningStack.find(ROOT)
        secrets = running.secret_values()
        caller = url_caller(running.endpoints["stream_url"])
        proxy = f"{_container_upstream(running.endpoints)}/chat/completions"
        sys.stdout.write(prepare_event(event_file.read_bytes(), secrets, proxy, caller).decode() + "\n")
    except NoLocalStackError as exc:
        print(f"make event: {exc}", file=sys.stderr)
        return 1
    except EventFileError as exc:
        print(f"make event: {event_file} is {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m local")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run the whole local stack")
    inv = sub.add_parser("invoke", help="invoke one function with an event file, like `sam local invoke`")
    inv.add_argument("function", help="logical id in template.yaml, e.g. StreamFunction")
    inv.add_argument("event", type=Path, help="event JSON file, e.g. events/stream-chat-valid.json")
    ev = sub.add_parser("event", help="print a freshly signed event for `sam local invoke -e -`")
    ev.add_argument("event", type=Path)
    sub.add_parser("sign", help="print a signed Stream URL (see --help)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sign"]:
        from local.sign_cli import main as sign_main

        return sign_main(argv[1:], ROOT)
    args = parser.parse_args(argv)
    if args.command == "dev":
        return run_dev()
    if args.command == "event":
        return run_event(args.event)
    return invoke_once(ROOT, args.function, args.event, sys.stdout.buffer, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
