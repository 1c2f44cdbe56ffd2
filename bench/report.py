"""Rows of results and the markdown they become."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured figure, its baseline (same run) and its target."""

    group: str
    metric: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    key: str = ""  # names the figure for the generated findings
    data: dict[str, float] = field(default_factory=dict)  # the numbers behind it, in seconds or counts


@dataclass
class Section:
    """A benchmark's rows plus its method text."""

    title: str
    method: str
    rows: list[Row] = field(default_factory=list)
    extra: str = ""


def rows_by_key(sections: list[Section]) -> dict[str, Row]:
    """Every keyed row."""
    return {r.key: r for s in sections for r in s.rows if r.key}


def render(sections: list[Section], header: str, findings: str = "") -> str:
    """docs/benchmarks.md."""
    out = [
        header,
        "",
        "## Summary",
        "",
        "| group | metric | value | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for section in sections:
        for r in section.rows:
            met = "" if r.met is None else ("yes" if r.met else "**no**")
            out.append(f"| {r.group} | {r.metric} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {met} |")
    if findings:
        out += ["", "## Findings", "", findings.strip()]
    for section in sections:
        out += ["", f"## {section.title}", "", section.method.strip()]
        notes = [f"* {r.metric}: {r.note}" for r in section.rows if r.note]
        if notes:
            out += ["", *notes]
        if section.extra:
            out += ["", section.extra.strip()]
    return "\n".join(out) + "\n"
