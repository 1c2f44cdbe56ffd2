"""The local stack as a developer lives in it: Ctrl-C at any moment, a second `make dev`, stable ports,
persistent data, and one-line answers when something is missing. Real subprocesses and signals.
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.conftest import ROOT
from tests.helpers import http
from tests.helpers import sign as sign_request

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "core" / "python")}
STOP_DEADLINE = 2.0  # issue 15: Ctrl-C stops everything within 2 s, at any moment


class Dev:
    """`python -m local dev` in its own process group, as a terminal runs `make dev`."""

    def __init__(self, state: Path, **env: str) -> None:
        self.state = state
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local", "dev"],
            cwd=ROOT,
            env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(state), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.output = {"stdout": b"", "stderr": b""}
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, pipe: Any) -> None:
        for line in pipe:
            self.output[name] += line

    def endpoints(self, timeout: float = 60) -> dict[str, Any]:
        path = self.state / "endpoints.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, "endpoints.json never appeared"
            time.sleep(0.05)
        return dict(json.loads(path.read_text()))

    def ctrl_c(self) -> float:
        """SIGINT to the whole foreground group, as the terminal sends it; seconds until the process exits."""
        start = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        elapsed = time.monotonic() - start
        for reader in self._readers:
            reader.join(timeout=5)
        return elapsed

    def text(self) -> str:
        return (self.output["stdout"] + self.output["stderr"]).decode("utf-8", "replace")


def _assert_clean_stop(dev: Dev, elapsed: float) -> None:
    text = dev.text()
    assert dev.proc.returncode == 0, text[-3000:]
    assert elapsed < STOP_DEADLINE, f"took {elapsed:.2f}s to stop"
    assert "Traceback" not in text, text[-3000:]
    assert "RuntimeApiError" not in text and "botocore" not in text, text[-3000:]
    assert "sigstream local stack stopped" in text
    assert not (dev.state / "endpoints.json").exists() and not (dev.state / "sam-env.json").exists()


@pytest.mark.parametrize("delay", [0.3, 1.2])
def test_ctrl_c_during_start_up_stops_at_once_without_tracebacks(tmp_path: Path, delay: float) -> None:
    dev = Dev(tmp_path)
    # From the lock, taken once the modules are loaded (they take 0.25-0.4 s on a loaded machine; Ctrl-C before
    # that is the next test's case): then moto is still starting, or resources are being created.
    deadline = time.monotonic() + 30
    while not (tmp_path / "dev.lock").exists():
        assert dev.proc.poll() is None and time.monotonic() < deadline, dev.text()[-3000:]
        time.sleep(0.01)
    time.sleep(delay)
    elapsed = dev.ctrl_c()
    _assert_clean_stop(dev, elapsed)


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2])
def test_ctrl_c_while_the_modules_still_load_is_quiet(tmp_path: Path, delay: float) -> None:
    """The first fraction of a second is spent importing boto3 and moto: Ctrl-C there is no traceback either."""
    dev = Dev(tmp_path)
    time.sleep(delay)
    elapsed = dev.ctrl_c()
    assert "Traceback" not in dev.text() and "KeyboardInterrupt" not in dev.text(), dev.text()[-3000:]
    assert elapsed < STOP_DEADLINE
    assert not (tmp_path / "endpoints.json").exists()


def test_ctrl_c_when_idle_stops_everything_within_two_seconds(tmp_path: Path) -> None:
    dev = Dev(tmp_path)
    endpoints = dev.endpoints()
    elapsed = dev.ctrl_c()
    _assert_clean_stop(dev, elapsed)
    for key in ("sign_url", "stream_url", "web_url", "aws_endpoint_url", "upstream_base_url"):
        host, port = endpoints[key].split("//")[1].split("/")[0].split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port))) != 0, f"{key} still served"


def test_ctrl_c_after_traffic_and_during_a_stream_is_quiet_and_quick(tmp_path: Path) -> None:
    dev = Dev(tmp_path)
    endpoints = dev.endpoints()
    fake = type("S", (), {"endpoints": lambda self: endpoints})()
    body = json.dumps({"messages": [{"role": "user", "content": "one two three four five six"}]}).encode()
    headers = {"content-type": "application/json"}
    for _ in range(2):  # warm environments of both functions, then a finished stream
        _, answer = sign_request(fake, {"subject": "life-user", "stateless": True})  # type: ignore[arg-type]
        status, _, _ = http("POST", answer["url"], body, headers)
        assert status == 200
    control = endpoints["upstream_base_url"].removesuffix("/v1") + "/_control"
    http("POST", control, json.dumps({"delay_ms": 400}).encode(), headers)
    _, answer = sign_request(fake, {"subject": "life-user", "stateless": True})  # type: ignore[arg-type]
    stream_body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "a b c d e f g h"}]})
    request = urllib.request.Request(answer["url"], data=stream_body.encode(), headers=headers, method="POST")
    response = urllib.request.urlopen(request, timeout=30)
    assert response.status == 200
    first = response.read1(64)  # mid-stream: the first event is here, the rest is paced by the upstream
    assert first.startswith(b"data: ")
    elapsed = dev.ctrl_c()
    _assert_clean_stop(dev, elapsed)
    try:
        rest = response.read()
    except (OSError, http_client.HTTPException):  # a cut stream is the expected outcome
        rest = b""
    assert b"[DONE]" not in first + rest  # the stream was cut by the stop, not finished


def test_a_killed_make_dev_leaves_no_moto_server_behind(tmp_path: Path) -> None:
    """moto runs in its own session (Ctrl-C reaches only `make dev`), so it must notice a SIGKILLed parent."""
    dev = Dev(tmp_path)
    endpoints = dev.endpoints()
    os.kill(dev.proc.pid, signal.SIGKILL)
    dev.proc.wait(timeout=10)
    host, port = endpoints["aws_endpoint_url"].split("//")[1].split(":")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, int(port))) != 0:
                break
        time.sleep(0.1)
    else:
        raise AssertionError("moto server outlived the killed make dev")
    if _group_alive(dev.proc.pid):  # tidy up whatever else of the killed stack is left
        os.killpg(dev.proc.pid, signal.SIGKILL)


def _stack_processes(state: Path) -> list[str]:
    """Processes of a local stack whose state dir is `state` (the dev process and its moto server)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"SIGSTREAM_LOCAL_STATE_DIR={state}".encode() in environ.split(b"\0") and "python" in cmdline:
            found.append(f"{proc.name} {cmdline}")
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_make_dev_killed_by_pid_takes_the_whole_stack_with_it(tmp_path: Path, sig: signal.Signals) -> None:
    """`kill <pid of make>` (a supervisor, an IDE's stop button, `Popen.terminate()`) signals make alone,
    not its process group: the stack must not live on, orphaned, holding the lock and the ports.
    """
    env = {**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path)}
    make = subprocess.Popen(
        ["make", "-s", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "endpoints.json").exists():
            assert make.poll() is None and time.monotonic() < deadline, "make dev did not come up"
            time.sleep(0.05)
        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        os.kill(make.pid, sig)
        make.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _stack_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _stack_processes(tmp_path) == [], "the stack outlived make dev"
        assert not (tmp_path / "endpoints.json").exists(), "a stopped stack leaves no endpoints file"
        host, port = endpoints["stream_url"].split("//")[1].rstrip("/").split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port))) != 0, "the Stream URL is still served"
    finally:
        for line in _stack_processes(tmp_path):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if _group_alive(make.pid):
            os.killpg(make.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_make_dev_says_where_the_first_one_is(tmp_path: Path) -> None:
    first = Dev(tmp_path)
    endpoints = first.endpoints()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "local", "dev"],
            cwd=ROOT,
            env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {first.proc.pid}" in lines[0] and endpoints["web_url"] in lines[0]
        assert json.loads((tmp_path / "endpoints.json").read_text()) == endpoints  # untouched
    finally:
        first.ctrl_c()


def _free_base() -> int:
    for base in range(20000, 60000, 97):
        ports = range(base, base + 5)
        if all(_bindable(p) for p in ports):
            return base
    raise AssertionError("no free port range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigstream_port_gives_stable_ports_and_persistence_keeps_history_and_keys(tmp_path: Path) -> None:
    base = _free_base()
    env = {"SIGSTREAM_PORT": str(base), "SIGSTREAM_PERSIST": "1"}
    dev = Dev(tmp_path, **env)
    endpoints = dev.endpoints()
    assert endpoints["web_url"] == f"http://127.0.0.1:{base}/"
    assert endpoints["aws_endpoint_url"] == f"http://127.0.0.1:{base + 1}"
    assert endpoints["upstream_base_url"] == f"http://127.0.0.1:{base + 2}/v1"
    assert {endpoints["stream_url"], endpoints["sign_url"]} == {
        f"http://127.0.0.1:{base + 3}/",
        f"http://127.0.0.1:{base + 4}/",
    }
    fake = type("S", (), {"endpoints": lambda self: endpoints})()
    _, chat = sign_request(fake, {"subject": "persist-user"})  # type: ignore[arg-type]
    body = json.dumps({"messages": [{"role": "user", "content": "remember me"}]}).encode()
    assert http("POST", chat["url"], body, {"content-type": "application/json"})[0] == 200
    _, listing = sign_request(
        fake,  # type: ignore[arg-type]
        {"subject": "persist-user", "method": "GET", "path": f"/v1/conversations/{chat['conversation_id']}/messages"},
    )
    dev.ctrl_c()
    assert (tmp_path / "data" / "moto-state.json").exists()

    again = Dev(tmp_path, **env)
    try:
        assert again.endpoints() == endpoints  # same ports; the SW1 app secret is kept, so SW1 URLs stay valid
        # A URL signed before the restart still verifies (keys restored), and the history is there.
        status, _, data = http("GET", listing["url"])
        assert status == 200, data
        assert [m["content"] for m in json.loads(data)["data"]][:1] == ["remember me"]
    finally:
        again.ctrl_c()


def test_sigstream_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    base = _free_base()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "-m", "local", "dev"],
            cwd=ROOT,
            env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path), "SIGSTREAM_PORT": str(base)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {base + 1} (moto server) is in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["sign", "user-1"], "make sign: no local stack is running"),
        (["event", "events/stream-chat-valid.json"], "make event: no local stack is running"),
        (["event", "events/no-such-event.json"], "make event: no event file events/no-such-event.json"),
        (["invoke", "StreamFunction", "events/no-such-event.json"], "make invoke: no event file"),
    ],
)
def test_missing_stack_or_event_is_one_line_saying_what_to_do(tmp_path: Path, args: list[str], expected: str) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("SIGSTREAM_SIGNING_KEYS", "SIGSTREAM_STREAM_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "local", *args],
        cwd=ROOT,
        env={**env, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert result.stdout == ""


_MALFORMED = [("{not json", "is not JSON"), ("[]", "is a JSON list, not an event object")]
_UNSIGNABLE = ('{"rawQueryString": "sig=local-resign&sub=u"}', "not a Function URL event with a signed URL to re-sign")


@pytest.mark.parametrize(
    "command,content,reason",
    [
        *(("event", c, r) for c, r in _MALFORMED),  # refused before looking for a stack
        *(("invoke", c, r) for c, r in [*_MALFORMED, _UNSIGNABLE]),  # the last one only once it re-signs
    ],
)
def test_a_malformed_event_file_is_one_line_not_a_traceback(
    tmp_path: Path, command: str, content: str, reason: str
) -> None:
    event = tmp_path / "event.json"
    event.write_text(content)
    args = ["event", str(event)] if command == "event" else ["invoke", "StreamFunction", str(event)]
    result = subprocess.run(
        [sys.executable, "-m", "local", *args],
        cwd=ROOT,
        env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    mine = [line for line in result.stderr.splitlines() if line.startswith(f"make {command}:")]
    assert len(mine) == 1 and str(event) in mine[0] and reason in mine[0], result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_make_sign_with_a_stale_endpoints_file_says_the_stack_is_gone(tmp_path: Path) -> None:
    port = _free_base()
    (tmp_path / "endpoints.json").write_text(
        json.dumps(
            {
                "aws_endpoint_url": f"http://127.0.0.1:{port}",
                "region": "us-east-1",
                "aws_access_key_id": "x",
                "aws_secret_access_key": "y",
                "stream_url": f"http://127.0.0.1:{port + 1}/",
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "local", "sign", "user-1"],
        cwd=ROOT,
        env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0] and "make dev" in lines[0], result.stderr


@pytest.mark.parametrize("command", [["sign", "user-1"], ["event", "events/stream-chat-valid.json"]])
def test_an_endpoints_file_missing_fields_is_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({"aws_endpoint_url": "http://127.0.0.1:9"}))
    result = subprocess.run(
        [sys.executable, "-m", "local", *command],
        cwd=ROOT,
        env={**ENV, "SIGSTREAM_LOCAL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks region" in lines[0] and "restart `make dev`" in lines[0], result.stderr


@pytest.mark.parametrize(
    "body,named",
    [
        (b'{"delay": 200}', "unknown control delay"),  # the README's key is delay_ms
        (b'{"delay_ms": "fast"}', "delay_ms must be a number"),
        (b'{"replay": "tests/fixtures/recorded/openai-sse/no-such.sse"}', "replay file"),
        (b'{"faults": {"status": 429}}', "faults must be a list"),
        (b"not json", "JSON object"),
    ],
)
def test_the_upstream_controls_refuse_what_they_would_ignore_or_crash_on(
    app_stack: LocalStack, body: bytes, named: str
) -> None:
    """The README's curl controls: a typo is a 400 naming it, not {"ok": true} and a traceback wall later."""
    control = app_stack.endpoints()["upstream_base_url"].removesuffix("/v1") + "/_control"
    status, _, data = http("POST", control, body)
    assert status == 400, data
    assert named in json.loads(data)["error"]["message"]
    assert http("POST", control, b'{"reset": true, "delay_ms": 0}')[0] == 200  # the real keys still work


def test_sam_env_names_the_stack_as_a_container_reaches_it(tmp_path: Path) -> None:
    """SAM CLI's container sits on Docker's bridge: 127.0.0.1 there is the container. With an address of
    this machine as the container host (docker0's; 127.0.0.2 stands in), moto and the upstream answer there
    too, sam-env.json names them there, and the printed line carries no (ignored) --docker-network host.
    """
    dev = Dev(tmp_path, SIGSTREAM_SAM_HOST="127.0.0.2")
    endpoints = dev.endpoints()
    try:
        env = json.loads((tmp_path / "sam-env.json").read_text())
        moto_port = endpoints["aws_endpoint_url"].rsplit(":", 1)[1]
        upstream = endpoints["upstream_base_url"].replace("127.0.0.1", "127.0.0.2")
        for function in ("StreamFunction", "SignFunction"):
            assert env[function]["AWS_ENDPOINT_URL"] == f"http://127.0.0.2:{moto_port}"
        assert env["StreamFunction"]["SIGSTREAM_UPSTREAM_BASE_URL"] == upstream
        assert env["SignFunction"]["SIGSTREAM_STREAM_URL"] == endpoints["stream_url"]  # handed to clients here
        status, _, models = http("GET", upstream + "/models")  # through make dev's listener on 127.0.0.2
        assert status == 200 and b"local-echo-1" in models
        import boto3

        tables = boto3.client(
            "dynamodb",
            endpoint_url=env["StreamFunction"]["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=endpoints["aws_access_key_id"],
            aws_secret_access_key=endpoints["aws_secret_access_key"],
        ).list_tables()["TableNames"]
        assert env["StreamFunction"]["SIGSTREAM_TABLE"] in tables
        line = next(x for x in dev.text().splitlines() if "sam local invoke StreamFunction" in x)
        assert "--docker-network" not in line
        assert line.rstrip().endswith(f"--env-vars {tmp_path / 'sam-env.json'}")  # and nothing after it
    finally:
        elapsed = dev.ctrl_c()
    _assert_clean_stop(dev, elapsed)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.2", int(moto_port))) != 0, "the container-side listener outlived the stack"


def test_with_docker_desktop_s_name_the_line_adds_the_host(tmp_path: Path) -> None:
    dev = Dev(tmp_path, SIGSTREAM_SAM_HOST="host.docker.internal")
    endpoints = dev.endpoints()
    try:
        env = json.loads((tmp_path / "sam-env.json").read_text())
        port = endpoints["aws_endpoint_url"].rsplit(":", 1)[1]
        assert env["StreamFunction"]["AWS_ENDPOINT_URL"] == f"http://host.docker.internal:{port}"
        line = next(x for x in dev.text().splitlines() if "sam local invoke StreamFunction" in x)
        assert line.rstrip().endswith("--add-host host.docker.internal:host-gateway")
    finally:
        _assert_clean_stop(dev, dev.ctrl_c())
