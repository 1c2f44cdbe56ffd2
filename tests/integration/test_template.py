"""template.yaml, offline: linters, a Docker-free `sam build` for arm64, the translated stack, a deploy rehearsal."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local.aws import MotoServer
from local.deploy_rehearsal import MOTO_UNSUPPORTED, rehearse, translate
from local.template import load_template
from tests.conftest import ROOT

TOOLS = ROOT / ".venv-tools" / "bin"
EM_AARCH64 = 183


def tool(name: str, *args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    path = TOOLS / name
    assert path.exists(), f"{path} missing: `make test` installs .venv-tools from requirements/tools.txt"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(
        [str(path), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_cfn_lint_with_serverless_rules_passes() -> None:
    result = tool("cfn-lint", "--append-rules", "cfn_lint_serverless.rules", "--", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes() -> None:
    result = tool("sam", "validate", "--lint", "--template", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_on_the_workflows() -> None:
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 4
    result = tool("actionlint", *workflows)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` on a copy of the repository, exactly as CI would run it (no Docker, no Python 3.12)."""
    out = tmp_path_factory.mktemp("sam") / "build"
    result = tool("sam", "build", "--template", "template.yaml", "--build-dir", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_sam_build_makes_an_arm64_python312_dependency_layer(built: Path) -> None:
    layer = built / "DependenciesLayer" / "python"
    extensions = list(layer.rglob("*.so"))
    assert extensions, "expected compiled extensions (pydantic-core, ada-url)"
    assert {p.name.split(".")[0] for p in extensions} >= {"_pydantic_core", "_ada_wrapper"}
    assert not (layer / "openai").exists() and not (layer / "httpx2").exists()  # the Stream path has no SDK
    assert all(_elf_machine(p) == EM_AARCH64 for p in extensions), "every extension must be built for aarch64"
    for wheel in layer.glob("*.dist-info/WHEEL"):
        tags = [line.split(": ", 1)[1] for line in wheel.read_text().splitlines() if line.startswith("Tag: ")]
        binary = [t for t in tags if not t.endswith("-none-any")]
        assert all(("cp312" in t or "abi3" in t) and "aarch64" in t for t in binary), (wheel, tags)
    assert (built / "StreamFunction" / "stream_handler.py").exists()
    assert (built / "StreamFunction" / "stream_app" / "chat_turn.py").exists()
    assert (built / "StreamFunction" / "stream_app" / "chat" / "request.py").exists()
    assert not list((built / "StreamFunction").rglob("__pycache__"))
    assert (built / "SignFunction" / "sign_handler.py").exists()


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    """The template as CloudFormation sees it after the Serverless transform."""
    template = load_template(ROOT / "template.yaml")
    for logical_id, resource in template["Resources"].items():  # as `sam package` leaves it
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = f"s3://artifacts/{logical_id}.zip"
    return translate(template)


def _of_type(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in cfn["Resources"].items() if v["Type"] == kind}


def test_function_urls(translated: dict[str, Any]) -> None:
    urls = _of_type(translated, "AWS::Lambda::Url")
    stream = next(p for p in urls.values() if p["TargetFunctionArn"] == {"Ref": "StreamFunction"})
    sign = next(p for p in urls.values() if p["TargetFunctionArn"] == {"Ref": "SignFunctionAliaslive"})
    assert stream["AuthType"] == "NONE" and stream["InvokeMode"] == "RESPONSE_STREAM"
    assert stream["Cors"]["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    assert sign["AuthType"] == "AWS_IAM" and sign.get("InvokeMode", "BUFFERED") == "BUFFERED"


def test_functions_run_python312_on_arm64_and_stream_through_the_layer(translated: dict[str, Any]) -> None:
    functions = _of_type(translated, "AWS::Lambda::Function")
    for props in functions.values():
        assert props["Runtime"] in ("python3.12", "python3.13") and props["Architectures"] == ["arm64"]
    stream = functions["StreamFunction"]
    assert stream["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/sigstream-runtime"
    layer_ids = {ref["Ref"] for ref in stream["Layers"]}
    assert any(i.startswith("StreamingRuntimeLayer") for i in layer_ids)
    assert (ROOT / "layers" / "streaming-runtime" / "sigstream-runtime").stat().st_mode & 0o111


def _statements(cfn: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for role in _of_type(cfn, "AWS::IAM::Role").values():
        for policy in role.get("Policies", []):
            out += policy["PolicyDocument"]["Statement"]
    return out


def test_no_wildcard_resource_in_data_plane_statements(translated: dict[str, Any]) -> None:
    statements = _statements(translated)
    data_plane = [
        s
        for s in statements
        if any(
            str(a).split(":")[0] in ("dynamodb", "secretsmanager")
            for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        )
    ]
    assert data_plane, "expected DynamoDB and Secrets Manager statements"
    for statement in data_plane:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources and all("*" not in json.dumps(r) for r in resources), statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith(":*") for a in actions), statement


def test_sign_function_reaches_only_the_signing_keys(translated: dict[str, Any]) -> None:
    role = translated["Resources"]["SignFunctionRole"]["Properties"]
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    assert statements == [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "SigningKeysSecret"}}
    ]


def _env_reads() -> dict[str, set[str]]:
    """SIGSTREAM_* names each function's code reads (config helpers and os.environ)."""
    core = ROOT / "layers" / "core" / "python" / "sigstream"
    config_names = {
        "SIGSTREAM_" + n
        for n in re.findall(r'_(?:get|int)\(env, "([A-Z0-9_]+)"', (core / "core" / "settings.py").read_text())
    }
    reads: dict[str, set[str]] = {}
    for function, folder in (("StreamFunction", "stream"), ("SignFunction", "sign")):
        names = set()
        for path in (ROOT / "functions" / folder).rglob("*.py"):
            names |= set(re.findall(r'os\.environ(?:\.get\(|\[)"(SIGSTREAM_[A-Z0-9_]+)"', path.read_text()))
            if "StreamSettings.from_env" in path.read_text():
                names |= config_names
        reads[function] = names
    return reads


def test_every_env_var_the_code_reads_is_set_by_the_template(translated: dict[str, Any]) -> None:
    functions = _of_type(translated, "AWS::Lambda::Function")
    reads = _env_reads()
    assert reads["StreamFunction"] >= {
        "SIGSTREAM_TABLE",
        "SIGSTREAM_PROVIDER_KEY_SECRET",
        "SIGSTREAM_UPSTREAM_BASE_URL",
    }
    assert reads["SignFunction"] >= {"SIGSTREAM_SIGNING_KEYS_SECRET", "SIGSTREAM_STREAM_URL"}
    for function, names in reads.items():
        defined = set(functions[function]["Environment"]["Variables"])
        assert names <= defined, f"{function} reads {sorted(names - defined)} which the template does not set"


def test_table_is_on_demand_with_ttl_pitr_and_encryption(translated: dict[str, Any]) -> None:
    (table,) = _of_type(translated, "AWS::DynamoDB::Table").values()
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["GSI1"]


def test_log_groups_have_retention_and_outputs_are_complete(translated: dict[str, Any]) -> None:
    groups = _of_type(translated, "AWS::Logs::LogGroup")
    assert len(groups) == 2 and all(g["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())
    assert set(translated["Outputs"]) >= {
        "StreamUrl",
        "SignUrl",
        "HistoryTableName",
        "SigningKeysSecretArn",
        "ProviderKeySecretArn",
    }


def test_samconfig_has_every_stage() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for stage in ("default", "dev", "staging", "prod"):
        deploy = config[stage]["deploy"]["parameters"]
        assert deploy["stack_name"].startswith("sigstream-")
        assert "CAPABILITY_IAM" in deploy["capabilities"]
        assert f"Stage={'dev' if stage == 'default' else stage}" in deploy["parameter_overrides"]


def test_deploy_rehearsal_against_moto_server(built: Path) -> None:
    moto = MotoServer.start()
    try:
        result = rehearse(built, moto)
        lambda_client = moto.client("lambda")
        functions = {f["FunctionName"]: f for f in lambda_client.list_functions()["Functions"]}
        layers = lambda_client.list_layers()["Layers"]
    finally:
        moto.stop()
    assert result.status == "CREATE_COMPLETE"
    expected = {k: v["Type"] for k, v in result.translated["Resources"].items() if v["Type"] not in MOTO_UNSUPPORTED}
    assert result.created == expected  # everything moto models was created
    # What moto cannot create is exactly what docs/deploy.md says (update both if moto gains support).
    assert set(result.skipped.values()) == MOTO_UNSUPPORTED
    stream = next(f for name, f in functions.items() if "StreamFunction" in name)
    assert stream["Runtime"] == "python3.12"  # (moto reports x86_64 whatever Architectures says)
    assert len(layers) == 3  # (moto does not attach them to the function, so they are checked by name)
