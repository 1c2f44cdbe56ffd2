"""json.loads for many small documents: the C scanner called directly, the same result and errors.

json.loads spends as long in its Python wrapper (two whitespace regex matches, argument handling) as in
the C scanner that parses a 250-byte stream chunk; per streamed chunk that wrapper was the largest cost
after the socket reads (docs/adr/0007-upstream-client.md has the measurements).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.scanner import make_scanner
from typing import Any

# The C scanner where CPython has it, configured as json.loads configures it.
_scan_once: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def loads(text: str) -> Any:
    """Parse a JSON document; ValueError if it is not one (RecursionError if nested absurdly deep)."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace or not JSON: json.loads decides, and explains
    if end != len(text):
        return json.loads(text)  # trailing whitespace or extra data: likewise
    return value
