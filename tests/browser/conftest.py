"""Browser tests: Debian's Chromium driven by Playwright against `make dev` (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("SIGSTREAM_SCREENSHOT_DIR") or ROOT / ".local" / "screenshots")


def _ensure_chromium() -> None:
    """Install Debian's chromium when absent (never a Playwright browser download)."""
    if Path(CHROMIUM).exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail("Chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900)
    assert Path(CHROMIUM).exists()


class DevStack:
    """`python -m local dev` with its endpoints and the embedded upstream's switches."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.control_url = endpoints["upstream_base_url"].rsplit("/v1", 1)[0] + "/_control"

    def upstream(self, **changes: Any) -> None:
        body = json.dumps({"reset": True, **changes}).encode()
        request = urllib.request.Request(self.control_url, body, {"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """`make dev`, as a developer runs it, with short-lived chat URLs so expiry can be exercised."""
    state = tmp_path_factory.mktemp("dev")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "layers" / "core" / "python"),
        "SIGSTREAM_LOCAL_STATE_DIR": str(state),
        "SIGSTREAM_DEMO_URL_TTL": "4",
        "SIGSTREAM_PARAMETER_OVERRIDES": "UrlClockSkew=0 RateLimit=1000",
    }
    env.pop("UPSTREAM_BASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local", "dev"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not (state / "endpoints.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "make dev did not come up"
        time.sleep(0.1)
    yield DevStack(json.loads((state / "endpoints.json").read_text()))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium."""
    _ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any, dev_stack: DevStack) -> Iterator[Any]:
    """A fresh browser context (its own demo user) on the chat page."""
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dev_stack.endpoints["web_url"])
    page.wait_for_selector('[data-testid="status"][data-state="idle"]')
    yield page
    context.close()
    assert errors == [], errors


def shot(page: Any, name: str) -> None:
    """Save a screenshot of a state worth showing (docs/screenshots with SIGSTREAM_SCREENSHOT_DIR)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
