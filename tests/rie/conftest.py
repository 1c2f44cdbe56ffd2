"""Fixtures for running the built functions under the RIE: the build, the runtime image, a local stack."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.aws import ACCESS_KEY, REGION, SECRET_KEY
from local.stack import LocalStack, StackOptions, sam_invoke_flags
from tests.conftest import ROOT
from tests.rie.harness import (
    BRIDGE_ADDRESS,
    TOOLS_PYTHON,
    PrerequisiteError,
    RieFunction,
    RuntimeImage,
    check_unshare,
    rie_binary,
    sam_config,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SAM = ROOT / ".venv-tools" / "bin" / "sam"


def _missing(reason: str) -> None:
    """In CI a missing prerequisite fails the run; on a laptop without it, the tests say why they skip."""
    if IN_CI:
        pytest.fail(f"RIE tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"RIE tests need: {reason}")


@pytest.fixture(scope="session")
def rie_ready() -> None:
    """unshare, the RIE binary and SAM CLI are all here (or the session fails in CI / skips locally)."""
    try:
        rie_binary()
        check_unshare()
    except PrerequisiteError as exc:
        _missing(str(exc))
    if not SAM.exists() or not TOOLS_PYTHON.exists():
        _missing(f"{SAM} (`make test` installs .venv-tools)")


@pytest.fixture(scope="session")
def built(rie_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` (Docker-free, as `make build`), plus the dependencies layer rebuilt for this machine."""
    out = tmp_path_factory.mktemp("rie-build")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(
        [str(SAM), "build", "--template", "template.yaml", "--build-dir", str(out / "build")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    host = out / "host-dependencies"
    import platform
    import sys

    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[platform.machine().lower()]
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT / "layers" / "dependencies"),
            "build-DependenciesLayer",
            f"ARTIFACTS_DIR={host}",
            f"TARGET_ARCH={arch}",
            f"TARGET_PYTHON={sys.version_info.major}.{sys.version_info.minor}",
            f"PIP={sys.executable} -m pip",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def runtime_image(rie_ready: None, tmp_path_factory: pytest.TempPathFactory) -> RuntimeImage:
    """/var/lang, /var/runtime and /var/rapid of the python3.12 image, as this machine can provide them."""
    return RuntimeImage.create(tmp_path_factory.mktemp("rie-image"))


@pytest.fixture(scope="session")
def rie_stack(rie_ready: None) -> Iterator[LocalStack]:
    """The local stack whose moto server and upstream the RIE-run functions use (`make dev`'s parts).

    Its own stack, with a high rate limit: every event here is `user-42`'s, run twice (RIE and make invoke).
    """
    stack = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            log_stream=io.StringIO(),
            parameters={"RateLimit": "1000"},
            container_host=BRIDGE_ADDRESS,  # as make dev finds docker0's address
        )
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def sam_env_file(rie_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `.local/sam-env.json` that `make dev` would write for this stack."""
    path = tmp_path_factory.mktemp("rie-env") / "sam-env.json"
    path.write_text(json.dumps(rie_stack.sam_env(), indent=2))
    return path


# Environment SAM takes from the shell (credentials, region): the values `make dev` prints.
SHELL = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

StartFunction = Callable[..., RieFunction]


@pytest.fixture(scope="session")
def start_function(
    built: Path, runtime_image: RuntimeImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartFunction]:
    """start_function(name, env_vars=, debug_port=, extra_env=, template=, network_flags=) -> a running container.

    The template is the `sam build` output unless another is given (SAM runs an unbuilt one from its CodeUri).
    The network is what SAM makes of `network_flags` (default: the flags the line `make dev` prints has).
    Containers are stopped at the end of the session.
    """
    started: list[RieFunction] = []

    def start(
        function: str,
        env_vars: Path | None = None,
        debug_port: int | None = None,
        extra_env: dict[str, str] | None = None,
        shell: dict[str, str] | None = None,
        template: Path | None = None,
        network_flags: list[str] | None = None,
    ) -> RieFunction:
        template = template or built / "build" / "template.yaml"
        flags = sam_invoke_flags(BRIDGE_ADDRESS) if network_flags is None else network_flags
        config = sam_config(template, function, env_vars, debug_port, shell or SHELL, flags)
        container = RieFunction(
            runtime_image,
            config,
            tmp_path_factory.mktemp(f"rie-{function}"),
            extra_env=extra_env,
            host_layers={"DependenciesLayer": built / "host-dependencies"},
        )
        started.append(container)
        return container

    yield start
    for container in started:
        container.stop()


def write_env_file(directory: Path, doc: dict[str, Any]) -> Path:
    """An --env-vars file for one scenario."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "env.json"
    path.write_text(json.dumps(doc))
    return path


def no_mount_leaked() -> bool:
    """Nothing of the sandbox is visible in the host's mount table."""
    table = Path("/proc/self/mountinfo").read_text()
    return " /var/task " not in table and " /var/runtime " not in table and shutil.which("unshare") is not None
