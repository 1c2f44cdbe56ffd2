"""CPU per 1,000 streamed chunks, measured inside each function process over 20,000+ chunks."""

from __future__ import annotations

from typing import Any

from bench.contenders import floor_pool, reference_pool, stream_probe_pool
from bench.harness import BENCH, invoke, probe_reports, variant
from bench.report import Row, Section
from bench.stats import median, ms
from local.stack import LocalStack


def _relay_pool(stack: LocalStack, name: str) -> Any:
    return variant(
        stack,
        "StreamFunction",
        name,
        layer_dirs=(BENCH / "relay",),
        env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/relay-wrapper", "RELAY_API_KEY": stack.secret_values()["provider-key"]},
    )


def _run(stack: LocalStack, pools: dict[str, Any], event: Any, reps: int, events: int) -> dict[str, float]:
    """Median CPU per 1,000 upstream events of each pool, from its probe reports."""
    since = len(stack.logs.lines)
    for pool in pools.values():
        invoke(pool, event())  # warm-up: cold start and connections
    for _ in range(reps):
        for pool in pools.values():
            invoke(pool, event())
    per_thousand = {}
    for name, pool in pools.items():
        reports = probe_reports(stack, pool.spec.logical_id, since, reps + 1)[1:]
        # Streaming functions: from the first chunk to the end; the buffered reference: its whole invocation.
        spent = [r["cpu_total"] if name == "reference" else r["cpu_stream"] for r in reports]
        per_thousand[name] = median(spent) / events * 1000
    return per_thousand


def per_chunk(stack: LocalStack, signer: Any, chat_event: Any, quick: bool) -> Section:
    """Ours vs the stdlib relay (the target's baseline), the floor and the tutorial reference."""
    assert stack.upstream is not None
    words = 4000 if quick else 20000
    events = words + 3  # role chunk, one per word, finish chunk, then [DONE] (usage is not requested here)
    reps = 2 if quick else 4
    pools = {
        "ours": stream_probe_pool(stack, "ChunkStream"),
        "relay": _relay_pool(stack, "ChunkRelay"),
        "floor": floor_pool(stack, "ChunkFloor", "cpu_probe.floor"),
        "reference": reference_pool(stack, "ChunkReference", "cpu_probe.reference"),
    }
    try:
        # Paced so that each event arrives in a read of its own, as a provider sends tokens.
        stack.upstream.control.update({"reset": True, "reply": " ".join(["token"] * words), "delay_ms": 0.05})
        paced = _run(stack, pools, lambda: chat_event(signer.url(stateless=True)), reps, events)
        # Unpaced: events arrive in bursts, several per read (the relay's cost is per read, ours per event).
        stack.upstream.control.update({"reset": True, "reply": " ".join(["token"] * words)})
        burst_pools = {k: pools[k] for k in ("ours", "relay")}
        burst = _run(stack, burst_pools, lambda: chat_event(signer.url(stateless=True)), reps, events)
    finally:
        stack.upstream.control.update({"reset": True})
        for pool in pools.values():
            pool.close()
    ratio = paced["ours"] / paced["relay"]
    section = Section(
        "Per-chunk cost",
        f"A {words}-token answer ({events} SSE events) streamed through each function in the local stack, "
        f"{reps} times each after a warm-up, interleaved. CPU is `time.process_time()` of the function process, "
        "measured inside it (`bench/probe`; the relay measures itself the same way) from the first body chunk to the "
        "end, divided by the number of upstream events; the buffered reference is measured over its whole "
        "invocation. The stdlib relay (`bench/relay/relay.py`) copies the upstream's bytes to the Runtime API and "
        "does nothing else. Paced: the upstream sends one event every 0.05 ms, so events arrive one per read, as "
        "from a provider; burst: unpaced, several events per read.",
    )
    section.rows += [
        Row(
            "per chunk",
            "CPU per 1,000 chunks (paced)",
            f"{ms(paced['ours'])} ours",
            f"{ms(paced['relay'])} relay; {ms(paced['floor'])} floor; {ms(paced['reference'])} reference",
            f"{ratio:.2f}x relay; {paced['ours'] / paced['floor']:.2f}x floor; "
            f"{paced['ours'] / paced['reference']:.2f}x reference",
            "<= 2x relay",
            ratio <= 2.0,
            key="per_chunk",
            data=paced,
        ),
        Row(
            "per chunk",
            "CPU per 1,000 chunks (burst)",
            f"{ms(burst['ours'])} ours",
            f"{ms(burst['relay'])} relay",
            f"{burst['ours'] / burst['relay']:.2f}x relay",
            key="per_chunk_burst",
            data=burst,
        ),
    ]
    return section


def ui_per_chunk(stack: LocalStack, signer: Any, chat_event: Any, ui_chat_event: Any, quick: bool) -> Section:
    """The AI SDK's UI message stream (POST /v1/chat, each chunk re-encoded) against the relayed OpenAI stream."""
    assert stack.upstream is not None
    words = 4000 if quick else 20000
    events = words + 4  # role chunk, one per word, finish chunk, usage chunk (always requested on /v1/chat)
    reps = 2 if quick else 4
    pool = stream_probe_pool(stack, "ChunkUiStream")
    try:
        stack.upstream.control.update({"reset": True, "reply": " ".join(["token"] * words), "delay_ms": 0.05})
        openai, ui = [], []
        for _ in range(reps):  # interleaved, one pool: the same process measures both formats
            openai.append(_run(stack, {"ours": pool}, lambda: chat_event(signer.url(stateless=True)), 1, events))
            ui.append(
                _run(
                    stack,
                    {"ours": pool},
                    lambda: ui_chat_event(signer.url(stateless=True, path="/v1/chat")),
                    1,
                    events,
                )
            )
    finally:
        stack.upstream.control.update({"reset": True})
        pool.close()
    data = {"openai": median([r["ours"] for r in openai]), "ui": median([r["ours"] for r in ui])}
    section = Section(
        "UI message stream per chunk",
        f"The same {words}-token answer through the Stream function as OpenAI SSE (`/v1/chat/completions`, the "
        "provider's bytes relayed) and as the AI SDK's UI message stream (`/v1/chat`, each chunk parsed and "
        f"re-encoded by `UiStreamEncoder`), {reps} interleaved rounds of one warm-up and one measured stream each, "
        "paced one event per read. CPU as in the per-chunk section (inside the function, first body chunk to end).",
    )
    section.rows.append(
        Row(
            "ui per chunk",
            "CPU per 1,000 chunks, UI message stream",
            f"{ms(data['ui'])} /v1/chat",
            f"{ms(data['openai'])} /v1/chat/completions",
            f"{data['ui'] / data['openai']:.2f}x",
            key="ui_per_chunk",
            data=data,
        )
    )
    return section
