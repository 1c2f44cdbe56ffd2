"""The official openai npm package (Node) streams through a signed URL: web/examples/stream-chat.mjs."""

from __future__ import annotations

import json
import shutil
import subprocess

from local.stack import LocalStack
from tests.conftest import ROOT
from tests.helpers import new_subject, signed_url, upstream_control

EXAMPLE = ROOT / "web" / "examples"


def test_node_openai_client_streams_through_a_signed_url(app_stack: LocalStack) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are part of this machine image (and installed by CI)"
    if not (EXAMPLE / "node_modules" / "openai").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, check=True, capture_output=True, timeout=300
        )
    upstream_control(app_stack, delay_ms=5)
    answer = signed_url(app_stack, subject=new_subject())
    result = subprocess.run(
        [node, "stream-chat.mjs", json.dumps(answer), "hello from node"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Echo (1 messages): hello from node"
