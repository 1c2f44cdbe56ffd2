"""Sign and verify operations per second, in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from bench.harness import ROOT
from bench.report import Row, Section
from sigstream.core.signed_url import Grant, sign_query, verify_query
from sigstream.core.sw1 import Sw1App, verify_sw1
from stream_app.sw1_proxy import _normalise


def _rate(fn: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            fn()
        count += 200
    return count / (time.perf_counter() - start)


def run(quick: bool) -> Section:
    """Ops/s for our scheme and for SW1 (median of 5 runs)."""
    seconds = 0.05 if quick else 0.4
    key = {"k1": b"0123456789abcdef0123456789abcdef"}
    now = int(time.time())
    grant = Grant(
        "POST", "/v1/chat/completions", "user-42", now, now + 300, "conv_0123456789abcdef", ("gpt-4o-mini",), 512
    )
    query = sign_query(grant, "k1", key["k1"])
    vectors = json.loads((ROOT / "tests" / "fixtures" / "recorded" / "signway-sw1-vectors.json").read_text())["vectors"]
    vector = next(v for v in vectors if v["name"] == "V5-put-headers-body-query")
    app = {vector["id"]: Sw1App(vector["id"], vector["secret"], ("*",))}
    body = vector["request"]["body"].encode()
    sw1_query = urlsplit(vector["request"]["path_and_query"]).query

    def sw1() -> None:
        verify_sw1(
            method="PUT",
            raw_query=sw1_query,
            headers=vector["request"]["headers"],
            read_body=lambda n: body,
            apps=app,
            normalise_url=_normalise,
            now=vector["request"]["now_unix"],
            max_body=1 << 20,
        )

    results = {
        "sign (our scheme)": lambda: sign_query(grant, "k1", key["k1"]),
        "verify (our scheme)": lambda: verify_query(
            method="POST", path="/v1/chat/completions", raw_query=query, keys=key, now=now, max_lifetime=3600
        ),
        "verify (SW1, signed headers + body)": sw1,
    }
    section = Section(
        "Signing throughput",
        "In-process loops on one core (`bench/signing.py`); each figure is the median of 5 timed runs. "
        "No target: these show the signing work is negligible next to a network round trip.",
    )
    for name, fn in results.items():
        rates = sorted(_rate(fn, seconds) for _ in range(5))
        section.rows.append(Row("signing", name, f"{rates[2]:,.0f} ops/s"))
    return section
