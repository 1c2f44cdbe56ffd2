"""Security scanners that run offline: bandit, detect-secrets. (cfn-lint: test_template.py; pip-audit: make audit.)"""

from __future__ import annotations

import json

from tests.conftest import ROOT
from tests.integration.test_template import tool


def test_bandit_finds_no_medium_or_high_issue() -> None:
    result = tool("bandit", "-q", "-r", "functions", "layers", "local", "bench", "-ll")
    assert result.returncode == 0, result.stdout + result.stderr


def _findings(doc: dict) -> set[tuple[str, str, str]]:
    return {(path, f["type"], f["hashed_secret"]) for path, found in doc["results"].items() for f in found}


def test_no_secret_outside_the_reviewed_baseline() -> None:
    """A fresh scan of the tracked files finds nothing the reviewed baseline does not list (line numbers aside)."""
    result = tool(
        "detect-secrets",
        "scan",
        "--exclude-files",
        r"^(\.secrets\.baseline|docs/screenshots/|web/examples/package-lock\.json)",
    )
    assert result.returncode == 0, result.stderr
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    unreviewed = _findings(json.loads(result.stdout)) - _findings(baseline)
    assert not unreviewed, f"secrets not in the reviewed baseline: {sorted(unreviewed)}"
    assert all(not f.get("is_secret", False) for found in baseline["results"].values() for f in found)
