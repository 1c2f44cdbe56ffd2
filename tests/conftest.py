"""Shared fixtures: paths, and the demo local stack (real processes, sockets and moto server)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import LocalStack, StackOptions

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fixtures" / "recorded"  # copied in from the shared set; see its README
DEMO = ROOT / "tests" / "fixtures" / "demo_stack"


@pytest.fixture(scope="session")
def demo_stack() -> Iterator[LocalStack]:
    """The demo template running on the local stack."""
    stack = LocalStack(StackOptions(root=DEMO, template=DEMO / "template.yaml", log_stream=io.StringIO()))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def app_stack() -> Iterator[LocalStack]:
    """template.yaml on the local stack: Sign and Stream functions, moto server, embedded upstream."""
    stack = LocalStack(StackOptions(root=ROOT, template=ROOT / "template.yaml", log_stream=io.StringIO()))
    stack.start()
    yield stack
    stack.stop()
