"""The prose of docs/benchmarks.md, written from this run's numbers (no sentence is fixed text about results)."""

from __future__ import annotations

from bench.contenders import IMPORT_TOTALS
from bench.cpu_bound import first_byte_bound
from bench.lmi import GROUPS, SERIAL
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


def _lmi_cpu(cpu: dict[str, float], ttfb: dict[str, float]) -> str:
    """What the CPU each stream needs says about the four-at-once first byte (the numbers of bench/lmi.py)."""
    cores, streams = int(cpu["cores"]), int(cpu["streams"])

    def part(prefix: str, phase: str) -> dict[str, float]:
        return {g: cpu[f"{prefix}{phase}_{g}"] for g in GROUPS}

    def serial(prefix: str) -> dict[str, float]:
        return {g: cpu[f"{prefix}serial_{g}"] for g in SERIAL}

    ours, floor = part("", "before"), part("floor_", "before")
    bound = first_byte_bound(ours, serial(""), cores, streams)
    f_bound = first_byte_bound(floor, serial("floor_"), cores, streams)
    limit = "all of it over the cores" if bound.limited_by == "cores" else f"the {GROUPS[bound.limited_by]}'s share"
    text = (
        f"Alone, a stream needed {_ms(sum(ours.values()))} of CPU (median) until the upstream had its request: "
        + ", ".join(f"{_ms(ours[g])} in the {name}" for g, name in GROUPS.items())
        + f"; the floor {_ms(sum(floor.values()))} ("
        + ", ".join(f"{_ms(floor[g])}" for g in GROUPS)
        + f"). With {streams} at once on {cores} cores the k-th first byte cannot come before k x the larger of "
        f"all that CPU over the cores and the user-mode part of the moto server's or the bench process's share "
        f"(one Python process each for all streams; in ours' run {serial('')['moto']:.0%} and "
        f"{serial('')['bench']:.0%} of their CPU was user-mode): here {limit}, {_ms(bound.step)}. So the median first byte is at least "
        f"{_ms(bound.median)}, {bound.median / ttfb['single']:.2f}x the lone first byte (the floor: at least "
        f"{_ms(f_bound.median)}, {f_bound.median / ttfb['floor_single']:.2f}x; from the core count alone "
        f"{_ms(bound.cores_only)} and {_ms(f_bound.cores_only)})."
    )
    for name, least, single, together in (
        ("ours", bound.median, ttfb["single"], ttfb["together"]),
        ("the floor", f_bound.median, ttfb["floor_single"], ttfb["floor_together"]),
    ):
        if least > 1.5 * single:
            text += (
                f" For {name} that is more than 1.5x: on this machine, with this stack, the CPU a stream needs before "
                f"its first byte puts the target out of reach; the measured {_ms(together)} is "
                f"{_ms(together - least)} later than that least."
            )
        else:
            text += (
                f" For {name} that is not more than 1.5x: the CPU a stream needs before its first byte does not rule "
                f"the target out here, and the measured {_ms(together)} is {_ms(together - least)} later than CPU "
                "alone requires."
            )
    after = {
        name: cpu[f"{p}alone_moto"] - cpu[f"{p}before_mean_moto"] for name, p in (("ours", ""), ("the floor", "floor_"))
    }
    heavy = [f"{_ms(v)} for {name}" for name, v in after.items() if v > 0.5 * ours["moto"]]
    if heavy:
        text += (
            f" After the upstream had its request a lone stream still cost moto {' and '.join(heavy)} (means per "
            f"stream); {streams} at once, that work competes, in the same moto "
            "(DynamoDB requests one at a time), with the other streams' calls before their first byte."
        )
    text += (
        f" Whole streams cost {_ms(sum(part('', 'alone').values()))} of CPU alone and "
        f"{_ms(sum(part('', 'at_once').values()))} each {streams} at once (the floor: "
        f"{_ms(sum(part('floor_', 'alone').values()))} and {_ms(sum(part('floor_', 'at_once').values()))}). "
        f"The machine is shared: outside these processes it kept {cpu['others_alone']:.2f} of its {cores} cores "
        f"busy during ours' lone streams and {cpu['others']:.2f} during ours' batches (the floor's: "
        f"{cpu['floor_others_alone']:.2f} and {cpu['floor_others']:.2f})."
    )
    free, f_free = cores - cpu["others"], cores - cpu["floor_others"]
    if min(free, f_free) >= 0.1 and max(cpu["others"], cpu["floor_others"]) >= 0.05:
        held = first_byte_bound(ours, serial(""), free, streams)
        f_held = first_byte_bound(floor, serial("floor_"), f_free, streams)
        text += (
            f" Had that other work kept its cores throughout (a condition, not a measurement: the scheduler need "
            f"not give it them), the least median first byte would be {_ms(held.median)}, "
            f"{held.median / ttfb['single']:.2f}x (the floor: {_ms(f_held.median)}, "
            f"{f_held.median / ttfb['floor_single']:.2f}x)."
        )
    return text


def _lmi(rows: dict[str, Row]) -> str | None:
    done, ttfb = rows.get("lmi_complete"), rows.get("lmi_ttfb")
    if not done or not ttfb:
        return None
    d = ttfb.data
    ratio, floor_ratio = d["together"] / d["single"], d["floor_together"] / d["floor_single"]
    text = (
        f"**AWS_LAMBDA_MAX_CONCURRENCY=4.** {int(done.data['complete'])} of {int(done.data['total'])} concurrent "
        f"streams completed in {int(done.data['environments'])} environment(s) ({_verdict(done)}); with four at "
        f"once the first byte came after {_ms(d['together'])} p50 against {_ms(d['single'])} one at a time, "
        f"{ratio:.2f}x ({_verdict(ttfb)}; worst {_ms(d['worst'])}). The floor, under the "
        f"same setting on the same machine, went from {_ms(d['floor_single'])} to {_ms(d['floor_together'])} "
        f"({floor_ratio:.2f}x)."
    )
    cpu = rows.get("lmi_cpu")
    if cpu:
        text += " " + _lmi_cpu(cpu.data, d)
    return text


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
