"""Browser tests: Chromium (Debian's, or the runner's Chrome; see find_chromium) driven by Playwright against `make dev`."""

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

SCREENSHOTS = Path(os.environ.get("SIGSTREAM_SCREENSHOT_DIR") or ROOT / ".local" / "screenshots")
# SIGSTREAM_CHROMIUM names the browser; otherwise the first of these on PATH that runs (GitHub's runners
# have google-chrome preinstalled; Debian has chromium; `chromium-browser` is often a snap shim).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _runs(path: str) -> bool:
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return result.returncode == 0 and ("Chromium" in result.stdout or "Chrome" in result.stdout)


def find_chromium() -> str | None:
    """The browser to drive: $SIGSTREAM_CHROMIUM, else the first working one of CHROMIUM_NAMES."""
    named = os.environ.get("SIGSTREAM_CHROMIUM")
    if named:
        return named
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path and _runs(path):
            return path
    return None


def _ensure_chromium() -> str:
    """A Chromium executable; installs Debian's chromium when none is found (never a Playwright download)."""
    found = find_chromium()
    if found:
        if not Path(found).exists():
            pytest.fail(f"SIGSTREAM_CHROMIUM={found} does not exist")
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail(
            f"no Chromium found (set SIGSTREAM_CHROMIUM or put one of {', '.join(CHROMIUM_NAMES)} on PATH); "
            "it cannot be installed here (needs root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900)
    found = find_chromium()
    assert found, "apt-get installed chromium but it does not run"
    return found


class DevStack:
    """`python -m local dev` with its endpoints and the embedded upstream's switches."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.control_url = endpoints["upstream_base_url"].rsplit("/v1", 1)[0] + "/_control"

    def upstream(self, **changes: Any) -> None:
        body = json.dumps({"reset": True, **changes}).encode()
        request = urllib.request.Request(self.control_url, body, {"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()

    def requests(self) -> list[dict[str, Any]]:
        """The chat requests the embedded upstream received since its last reset."""
        with urllib.request.urlopen(self.control_url + "/requests", timeout=10) as response:
            found: list[dict[str, Any]] = json.loads(response.read())
        return found


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
    """Headless Chromium (see find_chromium)."""
    executable = _ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
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
