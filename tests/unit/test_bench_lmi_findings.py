"""The max-concurrency prose of docs/benchmarks.md comes from the measured numbers (bench/findings.py)."""

from __future__ import annotations

from bench.findings import findings
from bench.lmi import GROUPS, PHASES, SERIAL
from bench.report import Row, Section


def _section(single: float, before: dict[str, float], others: float = 0.0) -> Section:
    """A max-concurrency section as bench/lmi.py makes it, with chosen numbers (seconds)."""
    data: dict[str, float] = {"cores": 2, "streams": 4}
    for prefix in ("", "floor_"):
        for phase in (*PHASES, "before_mean"):
            for g in GROUPS:
                data[f"{prefix}{phase}_{g}"] = before[g] * (4 if phase in ("alone", "at_once") else 1)
        for g in SERIAL:
            data[f"{prefix}serial_{g}"] = 1.0
        data[f"{prefix}others"] = data[f"{prefix}others_alone"] = others
    return Section(
        "AWS_LAMBDA_MAX_CONCURRENCY=4",
        "",
        [
            Row("", "", "", key="lmi_complete", met=True, data={"complete": 24, "total": 24, "environments": 1}),
            Row(
                "",
                "",
                "",
                key="lmi_ttfb",
                met=False,
                data={
                    "together": 0.090,
                    "single": single,
                    "worst": 0.2,
                    "floor_together": 0.070,
                    "floor_single": single,
                },
            ),
            Row("", "", "", key="lmi_cpu", data=data),
        ],
    )


def test_a_bound_above_one_and_a_half_says_the_target_is_out_of_reach() -> None:
    # moto 15 ms on one core: the median of four is at least 2.5 x 15 = 37.5 ms, 1.88x a lone 20 ms.
    text = findings([_section(0.020, {"workers": 0.004, "moto": 0.015, "bench": 0.002})])
    assert "at least 37.5 ms, 1.88x the lone first byte" in text
    assert "the moto server's share, 15.0 ms" in text
    assert "out of reach" in text
    assert "does not rule the target out" not in text


def test_a_bound_below_one_and_a_half_says_the_target_is_not_ruled_out() -> None:
    # The cores set the step: (10 + 4 + 2) / 2 = 8 ms; 2.5 x 8 = 20 ms, 0.50x a lone 40 ms.
    text = findings([_section(0.040, {"workers": 0.010, "moto": 0.004, "bench": 0.002})])
    assert "at least 20.0 ms, 0.50x the lone first byte" in text
    assert "all of it over the cores, 8.0 ms" in text
    assert "does not rule the target out here, and the measured 90.0 ms is 70.0 ms later" in text
    assert "out of reach" not in text


def test_other_work_on_the_machine_is_a_stated_condition_not_the_bound() -> None:
    text = findings([_section(0.040, {"workers": 0.010, "moto": 0.004, "bench": 0.002}, others=1.0)])
    assert "kept 1.00 of its 2 cores busy" in text
    # One core left: 16 ms per step, 40 ms at the median; the bound itself stays 20 ms.
    assert "would be 40.0 ms, 1.00x" in text
    assert "at least 20.0 ms" in text
