"""The browser tests find Chromium by $SIGSTREAM_CHROMIUM or by its usual names, skipping shims that do not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import find_chromium


def _program(folder: Path, name: str, script: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_the_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _program(tmp_path, "chromium", 'echo "Chromium 150.0"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SIGSTREAM_CHROMIUM", "/opt/custom/chrome")
    assert find_chromium() == "/opt/custom/chrome"


def test_a_snap_shim_that_does_not_run_is_skipped_for_google_chrome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _program(tmp_path, "chromium-browser", 'echo "Command requires the chromium snap" >&2; exit 1')
    chrome = _program(tmp_path, "google-chrome", 'echo "Google Chrome 150.0.1"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SIGSTREAM_CHROMIUM", raising=False)
    assert find_chromium() == str(chrome)


def test_the_first_usual_name_that_runs_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = _program(tmp_path, "chromium", 'echo "Chromium 150.0 built on Debian"')
    _program(tmp_path, "google-chrome", 'echo "Google Chrome 150.0.1"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SIGSTREAM_CHROMIUM", raising=False)
    assert find_chromium() == str(debian)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_chromium() is None
