"""What a leaked URL can cost at most, computed from the settings (pure; renders the README section).

Not imported by the handler: README.md's "Abuse budget" section is this module's output for the template's
defaults, and tests/unit/test_abuse_budget.py fails when the two disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sigstream.core.settings import StreamSettings
from sigstream.core.sw1 import DEFAULT_URL_RATE_LIMIT
from stream_app.chat.messages import IMAGE_TOKEN_BOUND, IMAGE_TOKENS

# The most real tokens one estimated token of input can be (what a reservation holds for it): an image's bound
# over its estimate. Text is at most 16 (four UTF-8 bytes a character, four characters an estimated token).
BOUND_PER_ESTIMATED_TOKEN = IMAGE_TOKEN_BOUND["auto"] / IMAGE_TOKENS["auto"]


@dataclass(frozen=True)
class AbuseBudget:
    """Upper bounds for one leaked chat URL of one subject."""

    url_window_seconds: int  # the longest lifetime, plus the clock skew on both sides
    minute_windows: int  # rate-limit windows such a URL can touch
    requests: int  # turns it can make
    turn_output_tokens: int
    stateless_turn_tokens: int  # upper bound of the largest stateless turn (what its reservation holds)
    stateful_turn_tokens: int  # ... of a turn in a conversation (the history window too)
    daily_budget: int
    days: int  # UTC days the window can touch
    tokens: int  # the bound: the lesser of rate x turns and budget x days (each day overshot by one turn at most)
    sw1_requests: int
    largest_turn_tokens: int = 0  # the largest turn that can run: no reservation may exceed the daily budget


def abuse_budget(settings: StreamSettings) -> AbuseBudget:
    """The bounds the settings imply."""
    window = settings.max_url_lifetime + 2 * settings.url_clock_skew_seconds
    minutes = math.ceil(window / 60) + 1  # a window that starts just before a minute boundary touches one more
    requests = settings.rate_limit_per_minute * minutes
    output = settings.max_output_tokens  # n is 1 unless the URL signs more
    stateless = math.ceil(settings.max_input_tokens * BOUND_PER_ESTIMATED_TOKEN) + output
    stateful = stateless + math.ceil(settings.history_token_budget * BOUND_PER_ESTIMATED_TOKEN)
    budget = settings.daily_token_budget
    largest = min(stateful, budget) if budget > 0 else stateful
    days = 1 + math.ceil(window / 86400)
    by_rate = requests * largest
    tokens = min(by_rate, days * (budget + largest)) if budget > 0 else by_rate
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
        largest_turn_tokens=largest,
    )


def render(settings: StreamSettings) -> str:
    """The README section (Markdown) for these settings."""
    b = abuse_budget(settings)
    s = settings
    ratio = f"{BOUND_PER_ESTIMATED_TOKEN:.1f}"
    rows = [
        (
            "longest a URL works",
            f"{s.max_url_lifetime} s lifetime + 2 x {s.url_clock_skew_seconds} s skew = {b.url_window_seconds} s",
        ),
        ("requests it can make", f"{s.rate_limit_per_minute}/min x {b.minute_windows} minute windows = {b.requests:,}"),
        ("output per turn", f"{b.turn_output_tokens:,} tokens (`MaxOutputTokens`; `n` is 1 unless signed)"),
        (
            "largest turn (upper bound)",
            f"{b.stateless_turn_tokens:,} tokens stateless ({s.max_input_tokens:,} estimated tokens in, each at most "
            f"{ratio} real ones, + {b.turn_output_tokens:,} out), {b.stateful_turn_tokens:,} in a conversation "
            f"(+{s.history_token_budget:,} estimated of history)"
            + (f"; no reservation may exceed the daily budget, so {b.largest_turn_tokens:,}" if b.daily_budget else ""),
        ),
        (
            "daily budget of the subject",
            f"{b.daily_budget:,} tokens, reserved at the upper bound before each call, so exceeded by at most one turn"
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
        "A reservation is an upper bound, not an estimate: a client chooses its text, and one that tokenises badly\n"
        "(31,000 astral characters: 8,004 tokens at four characters a token, 121,297 in o200k_base) must not beat it.\n"
        "Text counts its UTF-8 bytes (byte-level tokenisers make at most one token a byte), an image the most\n"
        "gpt-4o-mini bills for one (48,169 tokens); audio and file parts are estimates (docs/security.md). The budget\n"
        "is settled with the provider's real usage. The subject's budget is shared by all its URLs, so minting\n"
        "more URLs for one user does not raise the bound. Multiply by your model's price per token for money.\n"
    )
