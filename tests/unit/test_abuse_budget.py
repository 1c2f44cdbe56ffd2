"""README's abuse budget is computed from the template's defaults, not written by hand."""

from __future__ import annotations

import math
import re
from typing import Any

from local.template import load_template
from sigstream.core.settings import StreamSettings
from stream_app.chat.abuse_budget import abuse_budget, render
from tests.conftest import ROOT

START, END = "<!-- abuse-budget:start -->", "<!-- abuse-budget:end -->"


def default_settings() -> StreamSettings:
    """The Stream function's settings with every template parameter at its default."""
    template = load_template(ROOT / "template.yaml")
    defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    env: dict[str, Any] = {
        **template["Globals"]["Function"]["Environment"]["Variables"],
        **template["Resources"]["StreamFunction"]["Properties"]["Environment"]["Variables"],
    }
    resolved = {}
    for name, value in env.items():
        ref = value.get("Ref") if isinstance(value, dict) else None
        resolved[name] = defaults.get(ref, "resource") if ref else str(value)
    return StreamSettings.from_env(resolved)


def test_the_readme_section_is_the_rendering_of_the_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(START, 1)[1].split(END, 1)[0].strip("\n")
    expected = render(default_settings()).strip("\n")
    assert section == expected, "regenerate README's abuse budget:\n" + expected


def test_the_bound_is_what_the_limits_imply() -> None:
    settings = default_settings()
    budget = abuse_budget(settings)
    assert budget.requests == settings.rate_limit_per_minute * budget.minute_windows
    # Bounds, not estimates: an estimated token of input is at most 48,169 / 1,600 real ones (an image).
    assert budget.stateless_turn_tokens == math.ceil(8000 * 48_169 / 1600) + settings.max_output_tokens
    assert budget.stateful_turn_tokens == budget.stateless_turn_tokens + math.ceil(6000 * 48_169 / 1600)
    assert budget.largest_turn_tokens == 200_000  # a reservation above the daily budget is refused
    assert budget.tokens == min(budget.requests * 200_000, 2 * (200_000 + 200_000))
    numbers = re.findall(r"\*\*([0-9,]+)\*\*", render(settings))
    assert numbers == [f"{budget.tokens:,}"]
