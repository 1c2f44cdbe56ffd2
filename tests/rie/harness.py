"""Run a built function under AWS's Runtime Interface Emulator the way `sam local invoke` runs it.

`sam local invoke` starts a container from the runtime's image with the layers extracted into /opt,
the code at /var/task (both read-only), the RIE at /var/rapid and SAM's computed environment, then
POSTs the event to the RIE's invoke endpoint. This harness does the same without Docker:

* SAM CLI's own code (tests/rie/sam_invoke_config.py, run in .venv-tools) computes the environment
  and the entry point from the `sam build` output and an `--env-vars` file;
* private mount and PID namespaces (tests/rie/sandbox.py under `unshare`) put the merged layers at /opt,
  the code at /var/task, the RIE at /var/rapid, and a stand-in of the managed runtime at /var/runtime
  and /var/lang, so paths such as `AWS_LAMBDA_EXEC_WRAPPER=/opt/sigstream-runtime` mean what they mean
  on Lambda; nothing is written to the machine's /opt or /var;
* the event goes to `POST /2015-03-31/functions/function/invocations`, as SAM sends it.

What differs from the container, and why: the interpreter is this machine's CPython (its binary,
libpython and stdlib copied to what becomes /var/lang, no site-packages, as in the image), and the dependencies layer is rebuilt by its own Makefile for
this machine's architecture and Python (the arm64 / cp312 wheels `sam build` fetches cannot load
here). The managed runtime stand-in is the pinned awslambdaric with the bootstrap scripts the
python3.12 image uses (`/var/runtime/bootstrap` honours AWS_LAMBDA_EXEC_WRAPPER; `bootstrap.py` sets
sys.path like the image's and runs awslambdaric). The image's /var/runtime also has boto3; this one does
not, on purpose: neither function may need it (cold start), and a stray import fails here first.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.relay import Relay

ROOT = Path(__file__).resolve().parents[2]
# This machine's address on the stand-in for Docker's bridge (docker0's role): a container reaches the
# machine here, and only here. Any 127/8 address is this machine's without configuration.
BRIDGE_ADDRESS = "127.0.0.2"
RIE_PORT = 8080  # the container port SAM publishes
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
PRELUDE_SEPARATOR = b"\x00" * 8
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# ENV of the public.ecr.aws/lambda/python image that SAM runs (Dockerfile ENV lines).
IMAGE_ENV = {
    "LANG": "en_US.UTF-8",
    "TZ": ":/etc/localtime",
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
}
# The python3.12 image's /var/runtime/bootstrap: the managed runtime's start, exec wrapper included.
RUNTIME_BOOTSTRAP = """#!/bin/bash
export AWS_EXECUTION_ENV=AWS_Lambda_{runtime}
if [ -z "$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec /var/lang/bin/{python} /var/runtime/bootstrap.py
fi
wrapper="$AWS_LAMBDA_EXEC_WRAPPER"
if [ ! -f "$wrapper" ]; then echo "$wrapper: does not exist"; exit 127; fi
if [ ! -x "$wrapper" ]; then echo "$wrapper: is not an executable"; exit 126; fi
exec -- "$wrapper" /var/lang/bin/{python} /var/runtime/bootstrap.py
"""
# ... and its /var/runtime/bootstrap.py: task root and layer paths first, then awslambdaric.
RUNTIME_BOOTSTRAP_PY = """import os, sys
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, "/opt/python")
    sys.path.insert(0, "/opt/python/lib/python%d.%d/site-packages" % sys.version_info[:2])
sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
from awslambdaric.__main__ import main
main([sys.argv[0], os.environ["_HANDLER"]])
"""


class PrerequisiteError(Exception):
    """Something the harness needs (unshare, the RIE binary, a build) is missing."""


def rie_binary() -> Path:
    """The RIE shipped in the aws-sam-cli wheel, for this machine's architecture."""
    arch = _ARCH.get(platform.machine().lower())
    if arch is None:
        raise PrerequisiteError(f"no RIE build for {platform.machine()}")
    found = sorted(
        (ROOT / ".venv-tools" / "lib").glob(f"python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}")
    )
    if not found:
        raise PrerequisiteError("samcli/local/rapid/aws-lambda-rie-* not found: `make test` installs .venv-tools")
    return found[0]


def check_unshare() -> None:
    """A private mount namespace must be available (see unshare_command)."""
    if shutil.which("unshare") is None:
        raise PrerequisiteError("unshare (util-linux) is not installed")
    if shutil.which("ip") is None:
        raise PrerequisiteError("ip (iproute2) is not installed: a container's loopback is brought up with it")
    probe = subprocess.run(
        [*unshare_command(network=True), "sh", "-c", "mount -t tmpfs tmpfs /mnt && ip link set lo up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise PrerequisiteError(f"cannot create a private mount namespace: {probe.stderr.strip()}")


def unshare_command(network: bool = False) -> list[str]:
    """Private mount and PID namespaces (as a container has): when the RIE goes, every runtime process goes.

    `network`: a network namespace of its own too, as a container on a Docker bridge has (127.0.0.1 is
    the container). As root, no user namespace, so the LMI-mode RIE can switch the runtime to uid 993.
    """
    spaces = ["--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", *(["--net"] if network else [])]
    if os.geteuid() != 0:
        spaces.append("--map-root-user")
    return ["unshare", *spaces, "--"]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sam_config(
    template: Path,
    function: str,
    env_vars: Path | None = None,
    debug_port: int | None = None,
    shell_env: dict[str, str] | None = None,
    network_flags: list[str] | None = None,
) -> dict[str, Any]:
    """What SAM CLI would configure for this function's container (see sam_invoke_config.py).

    `network_flags`: `sam local invoke`'s --docker-network / --add-host options, as a user passes them.
    """
    if not TOOLS_PYTHON.exists():
        raise PrerequisiteError(f"{TOOLS_PYTHON} missing: `make test` installs .venv-tools")
    cmd = [str(TOOLS_PYTHON), str(Path(__file__).with_name("sam_invoke_config.py")), str(template), function]
    if env_vars:
        cmd += ["--env-vars", str(env_vars)]
    if debug_port:
        cmd += ["--debug-port", str(debug_port)]
    cmd += network_flags or []
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "SAM_CLI_TELEMETRY": "0",
    }
    env.update(shell_env or {})
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sam_invoke_config failed: {result.stderr[-2000:]}")
    return dict(json.loads(result.stdout))


@dataclass
class RuntimeImage:
    """The parts of the Lambda python image this machine provides: /var/lang, /var/runtime, /var/rapid."""

    root: Path

    @classmethod
    def create(cls, root: Path, runtime: str = "python3.12") -> RuntimeImage:
        """Build it once per test session."""
        install_python(root / "lang", runtime.removeprefix("python"))
        runtime_dir = root / "runtime"
        runtime_dir.mkdir()
        site = Path(next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / "awslambdaric").is_dir()))
        for name in ("awslambdaric", "simplejson"):
            shutil.copytree(site / name, runtime_dir / name, ignore=shutil.ignore_patterns("__pycache__"))
        for extension in site.glob("runtime_client*.so"):
            shutil.copy2(extension, runtime_dir / extension.name)
        bootstrap = runtime_dir / "bootstrap"
        bootstrap.write_text(RUNTIME_BOOTSTRAP.format(runtime=runtime, python=runtime))
        bootstrap.chmod(0o755)
        (runtime_dir / "bootstrap.py").write_text(RUNTIME_BOOTSTRAP_PY)
        rapid = root / "rapid"
        rapid.mkdir()
        shutil.copy2(rie_binary(), rapid / "aws-lambda-rie")
        for path in (root, root / "lang", runtime_dir, rapid):
            path.chmod(0o755)  # the LMI-mode RIE runs the runtime as uid 993, as Lambda does
        return cls(root)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def install_python(lang: Path, version_name: str) -> None:
    """This machine's CPython, self-contained at what will be /var/lang: the binary, libpython, the stdlib.

    Only the standard library (no site-packages), like the image's /var/lang; it must not live under
    the host's /opt or /root (hidden or unreadable inside the sandbox), so it is linked or copied here.
    """
    base = Path(sys.base_prefix)
    short = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (lang / "bin").mkdir(parents=True)
    binary = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    shutil.copy2(binary, lang / "bin" / short)
    for alias in {"python3", "python", f"python{version_name}"} - {short}:
        (lang / "bin" / alias).symlink_to(short)
    (lang / "lib").mkdir()
    library = sysconfig.get_config_var("LDLIBRARY")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and library:
        for shared in (base / "lib").glob(f"{library}*"):
            shutil.copy2(shared, lang / "lib" / shared.name, follow_symlinks=True)
    skip = shutil.ignore_patterns("site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "config-*")
    shutil.copytree(base / "lib" / short, lang / "lib" / short, ignore=skip, copy_function=_link_or_copy)
    (lang / "lib" / short / "site-packages").mkdir()


def merge_layers(layers: list[Path], target: Path) -> Path:
    """Layers extracted into one /opt, in order, as Lambda and SAM's image build do."""
    target.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        shutil.copytree(layer, target, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@dataclass
class RieResponse:
    """What the RIE answered, and how a Function URL would read it."""

    rie_status: int
    raw: bytes
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    streamed: bool = False
    error: dict[str, Any] | None = None

    @classmethod
    def parse(cls, rie_status: int, raw: bytes) -> RieResponse:
        """A streamed response is prelude + 8 NULs + body; a buffered one is a statusCode object."""
        out = cls(rie_status, raw)
        if rie_status != 200:  # the RIE could not get an answer (init failure, crash, timeout)
            try:
                out.error = dict(json.loads(raw))
            except (ValueError, TypeError):
                out.error = {"errorType": f"RIE.{rie_status}", "errorMessage": raw.decode("utf-8", "replace")}
            out.status = 502
            return out
        head, sep, rest = raw.partition(PRELUDE_SEPARATOR)
        if sep:
            with contextlib.suppress(ValueError):
                meta = json.loads(head)
                if isinstance(meta, dict) and "statusCode" in meta:
                    out.status, out.headers, out.body, out.streamed = (
                        int(meta["statusCode"]),
                        meta.get("headers") or {},
                        rest,
                        True,
                    )
                    return out
        try:
            doc = json.loads(raw)
        except ValueError:
            out.status, out.body = 200, raw
            return out
        if isinstance(doc, dict) and "statusCode" in doc:
            out.status, out.headers = int(doc["statusCode"]), dict(doc.get("headers") or {})
            body = doc.get("body") or ""
            out.body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        elif isinstance(doc, dict) and "errorType" in doc:
            out.status, out.error = 502, doc  # a function error: a Function URL answers 502
        else:
            out.status, out.body = 200, raw
        return out


def bridge_ports(env: dict[str, str], names: dict[str, str]) -> list[int]:
    """Ports of the URLs in a container's environment that name this machine's bridge address."""
    hosts = {BRIDGE_ADDRESS} | {name for name, ip in names.items() if ip in ("host-gateway", BRIDGE_ADDRESS)}
    found = set()
    for value in env.values():
        for host, port in re.findall(r"//([A-Za-z0-9.\-]+):(\d+)", value):
            if host in hosts:
                found.add(int(port))
    return sorted(found)


class RieFunction:
    """One function's container: `unshare` + mounts + the RIE with SAM's entry point and environment.

    The network is the one SAM asks Docker for (config["network"]). On a bridge (what `sam local invoke`
    gets unless SAM sets host networking) the container has a network namespace of its own: 127.0.0.1
    is the container, the RIE's 8080 is published to a host port, and this machine is reachable only at
    its bridge address (BRIDGE_ADDRESS here, docker0's on a Docker host; `host-gateway` names it), on
    the ports the environment names. Unix sockets in the workdir carry both ways across the namespace.
    """

    def __init__(
        self,
        image: RuntimeImage,
        config: dict[str, Any],
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        host_layers: dict[str, Path] | None = None,
    ) -> None:
        self.config = config
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        layers = [Path((host_layers or {}).get(Path(p).name, p)) for p in config["layers"]]
        opt = merge_layers(layers, workdir / "opt")
        self.port, self.api_port = free_port(), free_port()
        entry = list(config["entrypoint"])
        if os.environ.get("SAM_CLI_RIE_DEV") == "1":  # SAM's own switch for the RIE's debug log
            entry = [("debug" if arg == "error" else arg) for arg in entry]
        network = config.get("network") or {"mode": "host", "extra_hosts": {}}
        self.isolated = network["mode"] != "host"
        self.relays: list[Relay] = []
        env = {**IMAGE_ENV, **config["env"], **(extra_env or {})}
        plan: dict[str, Any] = {
            "scratch": str(workdir / "scratch"),
            "mounts": [
                [str(image.root / "lang"), "/var/lang", True],
                [str(image.root / "runtime"), "/var/runtime", True],
                [str(image.root / "rapid"), "/var/rapid", True],
                [str(opt), "/opt", True],
                [config["code_dir"], "/var/task", True],
            ],
            "cwd": "/var/task",
            "env": env,
        }
        if self.isolated:
            # As in the container: the RIE's defaults (8080, and 9001 for the Runtime API) in its own namespace.
            plan["argv"] = entry
            sockets = workdir / "sockets"
            sockets.mkdir(exist_ok=True)
            names = {k: (BRIDGE_ADDRESS if v == "host-gateway" else v) for k, v in network["extra_hosts"].items()}
            out = [[BRIDGE_ADDRESS, port, str(sockets / f"out-{port}.sock")] for port in bridge_ports(env, names)]
            for _, port, path in out:  # container -> this machine's bridge address, as Docker routes it
                self.relays.append(Relay(("unix", path), ("tcp", BRIDGE_ADDRESS, port)).start())
            self._published = sockets / "rie.sock"
            plan["network"] = {
                "relay_path": str(ROOT),
                "hosts": names,
                "out": out,
                "published": [str(self._published), RIE_PORT],
            }
        else:  # host networking: the RIE on free loopback ports of this machine
            plan["argv"] = [
                entry[0],
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{self.port}",
                "--runtime-api-address",
                f"127.0.0.1:{self.api_port}",
                *entry[1:],
            ]
        plan_file = workdir / "plan.json"
        plan_file.write_text(json.dumps(plan))
        self.log_path = workdir / "rie.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *unshare_command(network=self.isolated),
                sys.executable,
                str(Path(__file__).with_name("sandbox.py")),
                str(plan_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.isolated:
            self._publish()
        self._wait_listening()

    def _publish(self, timeout: float = 30.0) -> None:
        """Docker's port publishing: a host port to the container's 8080 (once the RIE listens there)."""
        deadline = time.monotonic() + timeout
        while not self._published.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"RIE exited ({self.process.returncode}): {self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"RIE not listening after {timeout}s: {self.logs()[-3000:]}")
            time.sleep(0.05)
        self.relays.append(Relay(("tcp", "127.0.0.1", self.port), ("unix", str(self._published))).start())

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"RIE exited ({self.process.returncode}): {self.logs()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise TimeoutError(f"RIE not listening after {timeout}s: {self.logs()[-3000:]}")

    @property
    def url(self) -> str:
        """The invoke endpoint SAM posts events to."""
        return f"http://127.0.0.1:{self.port}{INVOKE_PATH}"

    def invoke(self, event: bytes, timeout: float = 120.0) -> RieResponse:
        """POST the event as SAM does and read the whole answer (the classic RIE buffers it)."""
        # SAM sends Content-Type: application/json; the LMI-mode RIE passes it on to the runtime.
        request = urllib.request.Request(
            self.url, data=event, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return RieResponse.parse(response.status, response.read())
        except urllib.error.HTTPError as err:
            return RieResponse.parse(err.code, err.read())

    def logs(self) -> str:
        """Everything the RIE and the function printed (what `sam local invoke` shows on stderr)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Stop the container (the whole process group: RIE, runtime, workers) and its network relays."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=10)
        for relay in self.relays:
            relay.stop()
        if not self._log.closed:
            self._log.close()
