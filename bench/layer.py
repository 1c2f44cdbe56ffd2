"""The dependencies layer as `sam build` makes it (arm64 wheels, no Docker), against the same layer with the SDK."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bench.harness import ROOT
from bench.report import Row, Section

SDK = "openai==3.54.0"  # what the layer carried before the Stream path dropped the SDK


def _build(source: Path, out: Path) -> tuple[int, int, list[str]]:
    """(unpacked bytes, zipped bytes, top-level entries) of the layer built by its own Makefile."""
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(source),
            "build-DependenciesLayer",
            f"ARTIFACTS_DIR={out}",
            f"PIP={sys.executable} -m pip",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    archive = out.parent / (out.name + ".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(out))
    packages = sorted({p.relative_to(out / "python").parts[0] for p in files if "dist-info" in str(p)})
    return sum(p.stat().st_size for p in files), archive.stat().st_size, packages


def _resolved(requirements: str, work: Path) -> str:
    """`name==version` lines for the requirements and all their dependencies, resolved for the layer's target."""
    wanted = work / "resolve.txt"
    wanted.write_text(requirements)
    report = work / "resolve.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--platform",
            "manylinux2014_aarch64",
            "--platform",
            "manylinux_2_28_aarch64",
            "--implementation",
            "cp",
            "--python-version",
            "3.12",
            "--only-binary=:all:",
            "--target",
            str(work / "unused"),
            "-r",
            str(wanted),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    installs = json.loads(report.read_text())["install"]
    return "".join(f"{i['metadata']['name']}=={i['metadata']['version']}\n" for i in installs)


def layer_size(quick: bool) -> Section:
    """Build the layer twice in a temporary directory: as it is, and with the openai SDK added back."""
    section = Section(
        "Dependencies layer",
        "`layers/dependencies` built by its own Makefile (the `sam build` path: arm64 / CPython 3.12 wheels fetched "
        f"with pip, nothing compiled), then the same with `{SDK}` added, as the layer was when the Stream function "
        "imported the SDK. Sizes are the unpacked files and a deflate zip of them (what Lambda stores).",
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        source = ROOT / "layers" / "dependencies"
        with_sdk = base / "with-sdk"
        shutil.copytree(source, with_sdk)
        # The Makefile installs requirements.lock only, hash-checked and without dependencies: the SDK and what it
        # needs go into that copy's lock as resolved pins (its own hashes are not at hand, so none are checked).
        try:
            pins = _resolved((source / "requirements.txt").read_text() + SDK + "\n", base)
            (with_sdk / "Makefile").write_text((source / "Makefile").read_text().replace("--require-hashes ", ""))
            (with_sdk / "requirements.lock").write_text(pins)
            size, zipped, packages = _build(source, base / "layer")
            sdk_size, sdk_zipped, _ = _build(with_sdk, base / "layer-sdk")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            section.rows.append(Row("layer", "dependencies layer size", f"not measured: {detail.strip()[-200:]}"))
            return section
    section.rows.append(
        Row(
            "layer",
            "dependencies layer, unpacked / zipped",
            f"{size / 1e6:.1f} MB / {zipped / 1e6:.1f} MB",
            f"{sdk_size / 1e6:.1f} MB / {sdk_zipped / 1e6:.1f} MB with the SDK",
            f"{size / sdk_size:.2f}x",
            key="layer",
            data={"size": size, "zipped": zipped, "sdk_size": sdk_size, "sdk_zipped": sdk_zipped},
            note="packages: " + ", ".join(p.split("-")[0] for p in packages),
        )
    )
    return section
