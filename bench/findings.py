"""The prose of docs/benchmarks.md, written from this run's numbers (no sentence is fixed text about results)."""

from __future__ import annotations

from bench.contenders import IMPORT_TOTALS
from bench.report import Row, Section, rows_by_key


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _verdict(row: Row) -> str:
    return f"target {row.target}: **{'met' if row.met else 'missed'}**"


def _cold(rows: dict[str, Row]) -> str | None:
    ref, floor = rows.get("cold_vs_reference"), rows.get("cold_vs_floor")
    if not ref or not floor:
        return None
    ours = ref.data["ours"]
    text = (
        f"**Cold start.** The first byte of a cold Stream function arrived after {_ms(ours)} (p50): "
        f"{ours / ref.data['baseline']:.2f}x the tutorial reference's {_ms(ref.data['baseline'])} ({_verdict(ref)}) "
        f"and {ours / floor.data['baseline']:.2f}x the floor's {_ms(floor.data['baseline'])} ({_verdict(floor)})."
    )
    gap = ours - floor.data["baseline"]
    imports = IMPORT_TOTALS.get("stream_handler", 0.0) - IMPORT_TOTALS.get("floor_handler", 0.0)
    external = sorted(
        ((k[9:], v) for k, v in IMPORT_TOTALS.items() if k.startswith("external:")), key=lambda kv: -kv[1]
    )
    top = ", ".join(f"`{name}` {_ms(value)}" for name, value in external[:3]) or "none"
    if gap > 0:
        text += f" It spends {_ms(gap)} more than the floor."
    else:
        text += f" It was {_ms(-gap)} faster than the floor in this run: the two are within this machine's noise."
    text += (
        f" Importing `stream_handler` takes {_ms(imports)} longer than importing the floor's handler module; "
        f"the largest imports the floor does without: {top}."
    )
    return text


def _warm(rows: dict[str, Row]) -> str | None:
    row = rows.get("warm_cpu")
    if not row:
        return None
    ours, floor, ref = row.data["ours"], row.data["floor"], row.data["reference"]
    text = (
        f"**Warm CPU before the first byte.** {_ms(ours)} p50 ({_verdict(row)}). The floor, which makes the same "
        f"AWS calls and upstream request and nothing else, spends {_ms(floor)}: {_ms(ours - floor)} "
        f"({(ours - floor) / ours:.0%} of ours) is above the floor, {_ms(floor)} is the calls themselves "
        f"(SigV4, HTTP, JSON, the kernel's loopback TCP). The tutorial reference spends {_ms(ref)} "
        f"({ref / ours:.1f}x ours)."
    )
    ttfb = rows.get("warm_ttfb")
    if ttfb:
        text += (
            f" Warm time to first byte at the Runtime API: ours {_ms(ttfb.data['ours'])}, floor "
            f"{_ms(ttfb.data['floor'])}, reference {_ms(ttfb.data['reference'])} (p50)."
        )
    return text


def _chunks(rows: dict[str, Row]) -> str | None:
    row = rows.get("per_chunk")
    if not row:
        return None
    d = row.data
    text = (
        f"**Per chunk.** Streaming costs ours {_ms(d['ours'])} of CPU per 1,000 chunks, "
        f"{d['ours'] / d['relay']:.2f}x the stdlib relay's {_ms(d['relay'])} ({_verdict(row)}). "
        f"The floor, which passes the same bytes unparsed through our runtime layer, costs {_ms(d['floor'])}"
    )
    above_relay, parsing = (d["ours"] - d["relay"]) * 1000, (d["ours"] - d["floor"]) * 1000
    if parsing > 0 and above_relay > 0:
        text += (
            f": of the {above_relay:.1f} µs per chunk ours spends above the relay, {above_relay - parsing:.1f} µs "
            f"is the runtime layer and the handler's generator and {parsing:.1f} µs splitting events, parsing each "
            "one's JSON and recording the reply."
        )
    else:
        text += f", within this run's noise of ours ({parsing:+.1f} µs per chunk)."
    text += f" The tutorial reference costs {_ms(d['reference'])} ({d['reference'] / d['ours']:.1f}x ours)."
    burst = rows.get("per_chunk_burst")
    if burst:
        text += (
            f" When events arrive in bursts (several per read) the relay's cost per event falls and ours does not: "
            f"{burst.data['ours'] / burst.data['relay']:.2f}x ({_ms(burst.data['ours'])} vs {_ms(burst.data['relay'])})."
        )
    return text


def _ui_chunks(rows: dict[str, Row]) -> str | None:
    row = rows.get("ui_per_chunk")
    if not row:
        return None
    d = row.data
    extra = (d["ui"] - d["openai"]) * 1000
    return (
        f"**UI message stream.** Re-encoding each chunk for the AI SDK (`/v1/chat`) costs {_ms(d['ui'])} of CPU per "
        f"1,000 chunks against {_ms(d['openai'])} for the relayed OpenAI stream ({d['ui'] / d['openai']:.2f}x, "
        f"{extra:+.1f} µs per chunk)."
    )


def _lmi(rows: dict[str, Row]) -> str | None:
    done, ttfb = rows.get("lmi_complete"), rows.get("lmi_ttfb")
    if not done or not ttfb:
        return None
    d = ttfb.data
    ratio, floor_ratio = d["together"] / d["single"], d["floor_together"] / d["floor_single"]
    if floor_ratio >= 0.8 * ratio:
        cause = (
            "The floor slows down about as much, so the cause is not ours: four processes making their AWS calls "
            "and relaying at once share this machine's cores and the local moto server."
        )
    else:
        cause = "The floor slows down much less: the difference is ours to find."
    return (
        f"**AWS_LAMBDA_MAX_CONCURRENCY=4.** {int(done.data['complete'])} of {int(done.data['total'])} concurrent "
        f"streams completed in {int(done.data['environments'])} environment(s) ({_verdict(done)}); with four at "
        f"once the first byte came after {_ms(d['together'])} p50 against {_ms(d['single'])} one at a time, "
        f"{ratio:.2f}x ({_verdict(ttfb)}; worst {_ms(d['worst'])}). The floor, under the "
        f"same setting on the same machine, went from {_ms(d['floor_single'])} to {_ms(d['floor_together'])} "
        f"({floor_ratio:.2f}x). {cause}"
    )


def _layer(rows: dict[str, Row]) -> str | None:
    row = rows.get("layer")
    if not row:
        return None
    d = row.data
    return (
        f"**Dependencies layer.** {d['size'] / 1e6:.1f} MB unpacked, {d['zipped'] / 1e6:.1f} MB zipped: "
        f"{d['size'] / d['sdk_size']:.0%} of the {d['sdk_size'] / 1e6:.1f} MB it is with the openai SDK "
        f"({d['sdk_zipped'] / 1e6:.1f} MB zipped)."
    )


def findings(sections: list[Section]) -> str:
    """A summary of targets met and missed, then a paragraph per headline figure."""
    rows = rows_by_key(sections)
    targets = [r for s in sections for r in s.rows if r.met is not None]
    missed = [r for r in targets if not r.met]
    summary = f"{len(targets) - len(missed)} of {len(targets)} targets met."
    if missed:
        summary += " Missed: " + "; ".join(f"{r.metric} ({r.value}, target {r.target})" for r in missed) + "."
    paragraphs = [summary]
    for part in (_cold, _warm, _chunks, _ui_chunks, _lmi, _layer):
        text = part(rows)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)
