"""What a leaked URL can cost at most, computed from the settings (pure; renders the README section).

Not imported by the handler: README.md's "Abuse budget" section is this module's output for the template's
defaults, and tests/unit/test_abuse_budget.py fails when the two disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sigstream.core.settings import StreamSettings
from sigstream.core.sw1 import DEFAULT_URL_RATE_LIMIT


@dataclass(frozen=True)
class AbuseBudget:
    """Upper bounds for one leaked chat URL of one subject (tokens are the gateway's estimates)."""

    url_window_seconds: int  # the longest lifetime, plus the clock skew on both sides
    minute_windows: int  # rate-limit windows such a URL can touch
    requests: int  # turns it can make
    turn_output_tokens: int
    stateless_turn_tokens: int  # reservation of the largest stateless turn
    stateful_turn_tokens: int  # ... of a turn in a conversation (the history window too)
    daily_budget: int
    days: int  # UTC days the window can touch
    tokens: int  # the bound: the lesser of rate x turns and budget x days (each day overshot by one turn at most)
    sw1_requests: int


def abuse_budget(settings: StreamSettings) -> AbuseBudget:
    """The bounds the settings imply."""
    window = settings.max_url_lifetime + 2 * settings.url_clock_skew_seconds
    minutes = math.ceil(window / 60) + 1  # a window that starts just before a minute boundary touches one more
    requests = settings.rate_limit_per_minute * minutes
    output = settings.max_output_tokens  # n is 1 unless the URL signs more
    stateless = settings.max_input_tokens + output
    stateful = stateless + settings.history_token_budget
    days = 1 + math.ceil(window / 86400)
    by_rate = requests * stateful
    budget = settings.daily_token_budget
    tokens = min(by_rate, days * (budget + stateful)) if budget > 0 else by_rate
    return AbuseBudget(
        url_window_seconds=window,
        minute_windows=minutes,
        requests=requests,
        turn_output_tokens=output,
        stateless_turn_tokens=stateless,
        stateful_turn_tokens=stateful,
        daily_budget=budget,
        days=days,
        tokens=tokens,
        sw1_requests=DEFAULT_URL_RATE_LIMIT * (math.ceil(window / 60) + 1),
    )


def render(settings: StreamSettings) -> str:
    """The README section (Markdown) for these settings."""
    b = abuse_budget(settings)
    s = settings
    rows = [
        (
            "longest a URL works",
            f"{s.max_url_lifetime} s lifetime + 2 x {s.url_clock_skew_seconds} s skew = {b.url_window_seconds} s",
        ),
        ("requests it can make", f"{s.rate_limit_per_minute}/min x {b.minute_windows} minute windows = {b.requests:,}"),
        ("output per turn", f"{b.turn_output_tokens:,} tokens (`MaxOutputTokens`; `n` is 1 unless signed)"),
        (
            "largest turn (estimated)",
            f"{b.stateless_turn_tokens:,} tokens stateless ({s.max_input_tokens:,} in + {b.turn_output_tokens:,} out), "
            f"{b.stateful_turn_tokens:,} in a conversation (+{s.history_token_budget:,} of history)",
        ),
        (
            "daily budget of the subject",
            f"{b.daily_budget:,} tokens, reserved before each call, so exceeded by at most one turn"
            if b.daily_budget
            else "none (`DailyTokenBudget=0`)",
        ),
        ("UTC days the window touches", f"{b.days}"),
        (
            "**at most, in tokens**",
            f"**{b.tokens:,}** (the lesser of requests x largest turn and days x (budget + one turn))",
        ),
        (
            "a leaked SW1 URL",
            f"{b.sw1_requests:,} requests (default {DEFAULT_URL_RATE_LIMIT}/min per URL); tokens capped only by the app's `max_tokens`",
        ),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        "With the template's defaults, a leaked chat URL (one subject) can cost at most:\n\n"
        "| | |\n| --- | --- |\n" + table + "\n\n"
        "Token counts are the gateway's estimates (about four characters a token, fixed costs for media); the daily\n"
        "budget is settled with the provider's real usage. The subject's budget is shared by all its URLs, so minting\n"
        "more URLs for one user does not raise the bound. Multiply by your model's price per token for money.\n"
    )
