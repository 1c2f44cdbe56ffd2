"""Security scanners that run offline: bandit, detect-secrets. (cfn-lint: test_template.py; pip-audit: make audit.)"""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT
from tests.integration.test_template import tool


def test_bandit_finds_no_medium_or_high_issue() -> None:
    result = tool("bandit", "-q", "-r", "functions", "layers", "local", "bench", "-ll")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_secret_outside_the_reviewed_baseline() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert len(files) > 50
    result = tool("detect-secrets-hook", "--baseline", ".secrets.baseline", *files)
    assert result.returncode == 0, result.stdout + result.stderr
