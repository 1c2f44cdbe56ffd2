"""Execution environments of one function: processes started as Lambda starts them, scaled on demand."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from local.invocation import Invocation, InvocationFailed
from local.runtime_api import RuntimeApiServer
from local.template import FunctionSpec

ACCOUNT_ID = "123456789012"
LogSink = Callable[[str, str], None]


def lambda_environment(spec: FunctionSpec, runtime_api: str, aws_env: dict[str, str], region: str) -> dict[str, str]:
    """Environment variables as Lambda sets them, then the template's own."""
    python_paths = [str(spec.code_dir)] + [str(d / "python") for d in spec.layer_dirs if (d / "python").is_dir()]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(python_paths),
        "LAMBDA_TASK_ROOT": str(spec.code_dir),
        "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
        "_HANDLER": spec.handler,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
    }
    env.update(spec.environment)
    # Then the local AWS: credentials as Lambda sets them, and the endpoint overrides the template declares
    # empty (as `sam local invoke --env-vars` fills them in).
    env.update(aws_env)
    return env


def resolve_opt_path(path: str, layer_dirs: tuple[Path, ...]) -> str:
    """Map /opt/<x> (where Lambda extracts layers) to the layer folder that holds <x>."""
    if not path.startswith("/opt/"):
        return path
    rel = path[len("/opt/") :]
    for layer in layer_dirs:
        if (layer / rel).exists():
            return str(layer / rel)
    raise FileNotFoundError(f"{path}: no layer of the function provides it")


def launch_command(spec: FunctionSpec, env: dict[str, str]) -> list[str]:
    """The managed runtime's start: bootstrap, or `$AWS_LAMBDA_EXEC_WRAPPER python bootstrap`."""
    bootstrap = [sys.executable, "-m", "awslambdaric", spec.handler]
    wrapper = env.get("AWS_LAMBDA_EXEC_WRAPPER")
    return [resolve_opt_path(wrapper, spec.layer_dirs), *bootstrap] if wrapper else bootstrap


class Environment:
    """One execution environment: a process plus its own Runtime API endpoint."""

    def __init__(self, pool: FunctionPool) -> None:
        self.pool = pool
        self.function_arn = pool.function_arn
        self.running: dict[str, Invocation] = {}
        self.expired: set[str] = set()
        self.ready = False  # has called /next at least once
        self.returning = 0  # answered invocations whose worker has not yet come back to /next
        self.stopped = False
        self.init_error: InvocationFailed | None = None
        self.server = RuntimeApiServer(self)
        env = lambda_environment(pool.spec, self.server.address, pool.aws_env, pool.region)
        self.process = subprocess.Popen(
            launch_command(pool.spec, env),
            env=env,
            cwd=pool.spec.code_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: worker processes die with it
        )
        threading.Thread(target=self._pump_logs, daemon=True).start()

    def _pump_logs(self) -> None:
        for raw in self.process.stdout or ():
            self.pool.log(self.pool.spec.logical_id, raw.decode("utf-8", "replace").rstrip("\n"))
        self.process.wait()
        self.pool.environment_exited(self)

    def next_invocation(self) -> Invocation | None:
        """Block in /next until work arrives; the timeout clock starts when it is handed out."""
        self.ready = True
        self.pool.worker_back(self)
        inv = self.pool.take(self)
        if inv is not None:
            inv.begin(self)
            self.running[inv.request_id] = inv
            self.pool.watch_deadline(self, inv)
        return inv

    def finished(self, inv: Invocation) -> None:
        """The runtime answered this invocation; its worker is about to ask for the next one."""
        if self.running.pop(inv.request_id, None) is not None:
            self.pool.worker_returning(self)

    def init_failed(self, error_type: str, body: bytes) -> None:
        """POST /runtime/init/error: the environment will exit; queued work gets the error."""
        self.init_error = InvocationFailed(error_type, body)

    def signal_kill(self) -> None:
        """SIGKILL the environment's process group (its runtime and any worker processes)."""
        self.stopped = True
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Stop the process and its Runtime API endpoint (timeouts, shutdown)."""
        self.signal_kill()
        self.process.wait()  # gone before its /next is woken, so it logs no spurious error
        self.pool.wake()
        self.server.stop()


class FunctionPool:
    """Routes invocations of one function to environments, starting new ones when all are busy."""

    def __init__(
        self,
        spec: FunctionSpec,
        aws_env: dict[str, str],
        region: str,
        log: LogSink,
        max_environments: int = 64,
    ) -> None:
        self.spec = spec
        self.aws_env = aws_env
        self.region = region
        self.log = log
        self.max_environments = max_environments
        self.function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{spec.name}"
        self.environments: list[Environment] = []
        # Lambda Managed Instances: one environment serves this many invocations at once.
        self.slots = max(int(spec.environment.get("AWS_LAMBDA_MAX_CONCURRENCY", "1") or 1), 1)
        self.invocations = 0
        self._queue: collections.deque[Invocation] = collections.deque()
        self._cond = threading.Condition()
        self._waiting = 0  # /next calls blocked in take()
        self._closed = False

    def invoke(
        self, event: bytes, trace_id: str = "", client_context: str | None = None, request_id: str | None = None
    ) -> Invocation:
        """Queue an invocation; its response events arrive on `inv.events`."""
        inv = Invocation(event=event, timeout=self.spec.timeout, trace_id=trace_id, client_context=client_context)
        if request_id:
            inv.request_id = request_id
        with self._cond:
            self.invocations += 1
            self._queue.append(inv)
            starting = self.slots * sum(1 for e in self.environments if not e.ready and not e.stopped)
            # Like Lambda, an environment that just answered is reused rather than a new one started.
            returning = sum(e.returning for e in self.environments if not e.stopped)
            supply = self._waiting + starting + returning
            if len(self._queue) > supply and len(self.environments) < self.max_environments:
                self.environments.append(Environment(self))
            self._cond.notify()
        return inv

    @property
    def idle_slots(self) -> int:
        """Invocations that environments are waiting for right now."""
        return self._waiting

    def take(self, env: Environment) -> Invocation | None:
        """Called from an environment's /next: the oldest queued invocation."""
        with self._cond:
            self._waiting += 1
            try:
                while not self._queue and not env.stopped and not self._closed:
                    self._cond.wait()
                if env.stopped or self._closed:
                    return None
                return self._queue.popleft()
            finally:
                self._waiting -= 1

    def wake(self) -> None:
        """Let blocked /next calls notice a stopped environment."""
        with self._cond:
            self._cond.notify_all()

    def worker_returning(self, env: Environment) -> None:
        """A worker answered and will call /next again."""
        with self._cond:
            env.returning += 1

    def worker_back(self, env: Environment) -> None:
        """A worker is in /next again."""
        with self._cond:
            env.returning = max(env.returning - 1, 0)

    def watch_deadline(self, env: Environment, inv: Invocation) -> None:
        """Enforce the function timeout: past the deadline the invocation fails.

        One invocation per environment (Lambda): the environment is killed, as Lambda resets it. Several
        (Lambda Managed Instances): only that invocation fails; the environment, its other invocations and
        even the late worker carry on, as on Lambda, which leaves the function to watch its own deadline.
        """

        def expire() -> None:
            if not inv.finished:
                env.expired.add(inv.request_id)
                inv.fail("Sandbox.Timedout", f"Task timed out after {self.spec.timeout:.2f} seconds")
                self.log(self.spec.logical_id, f"{inv.request_id} Task timed out after {self.spec.timeout} seconds")
                if self.slots > 1:
                    return
                self._discard(env)
                env.kill()

        timer = threading.Timer(max(inv.deadline_ms / 1000 - time.time(), 0), expire)
        timer.daemon = True
        timer.start()

    def _discard(self, env: Environment) -> None:
        with self._cond:
            if env in self.environments:
                self.environments.remove(env)

    def environment_exited(self, env: Environment) -> None:
        """The process ended: fail what it held; a failed init fails the work waiting for it."""
        self._discard(env)
        for inv in list(env.running.values()):
            inv.fail("Runtime.ExitError", f"RequestId: {inv.request_id} Error: Runtime exited")
        if not env.stopped:
            env.kill()
        if env.ready:
            return
        failure = env.init_error or InvocationFailed(
            "Runtime.ExitError", b'{"errorMessage":"Runtime exited during init"}'
        )
        with self._cond:
            if any(not e.ready for e in self.environments):
                return  # another environment is still initialising and will take the queue
            pending, self._queue = list(self._queue), collections.deque()
        for inv in pending:
            inv.emit(failure)

    def recycle(self) -> None:
        """Stop every environment, so the next invocation is a cold start (benchmarks)."""
        with self._cond:
            envs, self.environments = list(self.environments), []
        for env in envs:
            env.kill()

    def close(self) -> None:
        """Stop every environment: SIGKILL first (as Lambda ends them), so no runtime sees /next fail."""
        with self._cond:
            envs = list(self.environments)
        for env in envs:
            env.signal_kill()
        with self._cond:
            self._closed = True
            envs = list(self.environments)
            self.environments.clear()
            self._cond.notify_all()
        for env in envs:
            env.kill()
