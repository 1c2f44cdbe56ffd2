"""`make bench`: run every benchmark against its same-run baseline; write docs/benchmarks.md and a plot."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import chunks, contenders, gateway, layer, lmi, runtime, signing
from bench.findings import findings
from bench.harness import ROOT, empty_table
from bench.report import Section, render
from bench.stats import median
from local.stack import LocalStack, StackOptions


def machine() -> str:
    """What ran it."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        // 1024
    )
    return f"{os.cpu_count()} x {cpu}, {mem} MB RAM, Linux {platform.release()}, Python {platform.python_version()} (functions run on the same interpreter)"


def plot(cold: list[float], warm: list[float], path: Path) -> None:
    """Time-to-first-byte distributions, cold vs warm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    ax.boxplot([[c * 1000 for c in cold], [w * 1000 for w in warm]], vert=False, widths=0.5)
    ax.set_yticks([1, 2], ["cold start\n(fresh process)", "warm\n(50 concurrent)"])
    ax.set_xscale("log")
    ax.set_xlabel("time to first byte at the client (ms, log scale)")
    ax.set_title(f"Stream function TTFB: cold p50 {median(cold) * 1000:.0f} ms, warm p50 {median(warm) * 1000:.0f} ms")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    """Run, then write the report."""
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sample sizes (checks the suite runs; numbers meaningless)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated step names to run (e.g. 'cost,first write'); prints, writes no file"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks.md and the plot go")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    # Changes to the report itself do not make the measured code different.
    dirty = subprocess.run(
        [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!docs/benchmarks.md",
            ":!docs/bench-ttfb.png",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    changes = " plus uncommitted changes (these numbers are not reproducible from the commit)" if dirty else ""
    run_id = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from commit `{commit or 'unknown'}`{changes}"
    logs = ROOT / ".local" / "bench-logs"
    stack = LocalStack(StackOptions(root=ROOT, template=ROOT / "template.yaml", log_dir=logs))
    # The AWS-request counter is a proxy in this process: only the cost section runs behind it, on its own stack.
    counted = LocalStack(StackOptions(root=ROOT, template=ROOT / "template.yaml", log_dir=logs, aws_proxy=True))
    started = time.time()
    try:
        stack.start()
        counted.start()
        signer = gateway.Signer(stack)
        sections: list[Section] = []
        steps: list[tuple[str, Callable[[], Section | tuple[Section, list[float]]]]] = [
            ("runtime", lambda: runtime.run(stack, args.quick)),
            ("signing", lambda: signing.run(args.quick)),
            ("cold start", lambda: contenders.cold_start(stack, signer, gateway.http_first_byte, args.quick)),
            ("warm", lambda: contenders.warm(stack, signer, gateway.chat_event, args.quick)),
            ("per chunk", lambda: chunks.per_chunk(stack, signer, gateway.chat_event, args.quick)),
            (
                "ui per chunk",
                lambda: chunks.ui_per_chunk(stack, signer, gateway.chat_event, gateway.ui_chat_event, args.quick),
            ),
            ("memory", lambda: gateway.memory(stack, signer, args.quick)),
            ("max concurrency", lambda: lmi.max_concurrency(stack, signer, gateway.http_first_byte, args.quick)),
            ("concurrency", lambda: gateway.concurrency(stack, signer, args.quick)),
            ("cost", lambda: gateway.cost(counted, gateway.Signer(counted), args.quick)),
            ("first write", lambda: gateway.first_write(counted, gateway.Signer(counted), args.quick)),
            ("layer", lambda: layer.layer_size(args.quick)),
        ]
        only = {n.strip() for n in args.only.split(",") if n.strip()}
        for name, step in steps:
            if only and name not in only:
                continue
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            empty_table(stack)
            empty_table(counted)
            result = step()
            if isinstance(result, tuple):
                section, series = result
                if name == "cold start":
                    cold = series
                else:
                    warm = series
            else:
                section = result
            sections.append(section)
    finally:
        stack.stop()
        counted.stop()
    if only:  # a partial run: the report would lose the other sections
        print(render(sections, "# Benchmarks (partial: " + ", ".join(sorted(only)) + ")", findings(sections)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    plot(cold, warm, args.out / "bench-ttfb.png")
    header = "\n".join(
        [
            "# Benchmarks",
            "",
            f"Produced by `make bench` ({'--quick, not for reading' if args.quick else 'full run'}) on {run_id}; "
            f"took {time.time() - started:.0f} s. Every ratio compares against a baseline measured in the same run: "
            "the tutorial reference (`bench/handlers/reference_handler.py`: openai SDK, boto3, Powertools, on "
            "awslambdaric), the floor (`bench/handlers/floor_handler.py`: the same AWS calls and upstream request, "
            "stdlib only, nothing else) or, per chunk, a stdlib byte relay. All prose below is generated from the "
            "numbers of this run. Each section starts from an empty DynamoDB table: moto copies the whole table "
            "for every item of a transaction, so its writes slow down as the table grows, which DynamoDB's do not. "
            "Machine: "
            + machine()
            + ". This machine is shared and noisy: read medians and ratios, not single numbers.",
            "",
            "![time to first byte, cold vs warm](bench-ttfb.png)",
        ]
    )
    (args.out / "benchmarks.md").write_text(render(sections, header, findings(sections)))
    print((args.out / "benchmarks.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
