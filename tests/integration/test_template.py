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
from local.deploy_rehearsal import (
    BOOTSTRAP_MOTO_UNSUPPORTED,
    MOTO_UNSUPPORTED,
    STAGES,
    PackageMismatchError,
    bootstrap,
    deploy,
    fetch_package,
    package,
    stage_parameters,
    translate,
)
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


def test_cfn_lint_passes_on_the_bootstrap_templates() -> None:
    result = tool("cfn-lint", "--", "bootstrap/shared.yaml", "bootstrap/stage.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes() -> None:
    result = tool("sam", "validate", "--lint", "--template", "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_on_the_workflows() -> None:
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) == 4  # ci, deploy, deploy-stage, rollback
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
    installed = {
        re.sub(r"[-_.]+", "-", d.name.removesuffix(".dist-info").rsplit("-", 1)[0]).lower()
        + "=="
        + d.name.removesuffix(".dist-info").rsplit("-", 1)[1]
        for d in layer.glob("*.dist-info")
    }
    assert installed == set(_locked()), "the layer holds exactly what requirements.lock pins"
    assert (built / "StreamFunction" / "stream_handler.py").exists()
    assert (built / "StreamFunction" / "stream_app" / "chat_turn.py").exists()
    assert (built / "StreamFunction" / "stream_app" / "chat" / "request.py").exists()
    assert not list((built / "StreamFunction").rglob("__pycache__"))
    assert (built / "SignFunction" / "sign_handler.py").exists()


LAYER = ROOT / "layers" / "dependencies"


def _locked() -> dict[str, list[str]]:
    """requirements.lock: `name==version` -> its hashes."""
    locked: dict[str, list[str]] = {}
    current = ""
    for line in (LAYER / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==([^ \\;]+)", line):
            current = f"{re.sub(r'[-_.]+', '-', match[1]).lower()}=={match[2]}"
            locked[current] = []
        locked_hash = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
        if locked_hash and current:
            locked[current].append(locked_hash[1])
    return locked


def test_dependency_lock_pins_every_package_with_hashes_and_the_layer_requires_them() -> None:
    locked = _locked()
    assert locked and all(hashes for hashes in locked.values()), "every locked package carries its hashes"
    top_level = [
        line.split("#")[0].strip()
        for line in (LAYER / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    for requirement in top_level:
        name, version = requirement.split("==")
        assert f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}" in locked, (
            f"{requirement} is not in requirements.lock: run `make lock`"
        )
    text = (LAYER / "requirements.lock").read_text()
    assert "make lock" in text.splitlines()[1], "the lock says how to regenerate it"
    # The lock's roots are exactly today's requirements.txt (a removed package must not linger): uv notes
    # each package's origin in a "# via" comment block after it.
    roots = set()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if "-r layers/dependencies/requirements.txt" in block:
            roots.add(re.sub(r"[-_.]+", "-", block.split("==", 1)[0]).lower())
    wanted = {re.sub(r"[-_.]+", "-", r.split("==")[0]).lower() for r in top_level}
    assert roots == wanted, f"requirements.lock is stale (roots {sorted(roots)}): run `make lock`"
    makefile = (LAYER / "Makefile").read_text()
    assert "--require-hashes" in makefile and "-r requirements.lock" in makefile
    root_makefile = (ROOT / "Makefile").read_text()
    assert "--python-platform aarch64-manylinux_2_28" in root_makefile and "--python-version 3.12" in root_makefile


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
    for policy in _of_type(cfn, "AWS::IAM::ManagedPolicy").values():
        out += policy["PolicyDocument"]["Statement"]
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_wildcard_resource_in_data_plane_statements(translated: dict[str, Any]) -> None:
    statements = _statements(translated)
    data_plane = [
        s
        for s in statements
        if any(
            str(a).split(":")[0] in ("dynamodb", "secretsmanager", "lambda")
            for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        )
    ]
    services = {str(a).split(":")[0] for s in data_plane for a in _list(s["Action"])}
    assert services == {"dynamodb", "secretsmanager", "lambda"}, "expected DynamoDB, Secrets Manager and Lambda"
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


def test_backend_policy_grants_both_invoke_actions_on_the_sign_alias_only(translated: dict[str, Any]) -> None:
    policy = translated["Resources"]["BackendSignPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_action = {a: st for st in statements for a in _list(st["Action"])}
    # Since October 2025 a Function URL caller needs both (AWS docs, "Control access to Lambda function URLs").
    assert set(by_action) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    alias = {"Ref": "SignFunctionAliaslive"}
    assert all(st["Effect"] == "Allow" and st["Resource"] == alias for st in statements)
    assert by_action["lambda:InvokeFunctionUrl"]["Condition"] == {
        "StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}
    }
    sign_url = next(p for p in _of_type(translated, "AWS::Lambda::Url").values() if p["AuthType"] == "AWS_IAM")
    assert sign_url["TargetFunctionArn"] == alias, "the policy names the very alias the Sign URL serves"
    assert translated["Outputs"]["BackendSignPolicyArn"]["Value"] == {"Ref": "BackendSignPolicy"}
    roles = policy["Properties"]["Roles"]
    assert roles == {"Fn::If": ["HasBackendRoles", {"Ref": "BackendRoleNames"}, {"Ref": "AWS::NoValue"}]}


def test_the_public_stream_url_allows_both_invoke_actions(translated: dict[str, Any]) -> None:
    permissions = [
        p
        for p in _of_type(translated, "AWS::Lambda::Permission").values()
        if p["FunctionName"] == {"Ref": "StreamFunction"}
    ]
    actions = {p["Action"]: p for p in permissions}
    assert set(actions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert actions["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert actions["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True  # only through the URL
    assert all(p["Principal"] == "*" for p in permissions)


ALARMS = {
    # metric (namespace, name, service or function) -> what the on-call engineer is told
    ("Sigstream", "ServerErrors", "sigstream-stream"): "StreamServerErrorRateAlarm",
    ("Sigstream", "ServerErrors", "sigstream-sign"): "SignServerErrorRateAlarm",
    ("Sigstream", "ProviderErrors", "sigstream-stream"): "ProviderErrorRateAlarm",
    ("Sigstream", "HistoryWriteFailures", "sigstream-stream"): "HistoryWriteFailuresAlarm",
    ("Sigstream", "TimeToFirstToken", "sigstream-stream"): "TimeToFirstTokenAlarm",
    ("AWS/Lambda", "Throttles", "StreamFunction"): "ThrottlesAlarm",
    ("AWS/Lambda", "Throttles", "SignFunction"): "ThrottlesAlarm",
    ("AWS/Lambda", "Errors", "StreamFunction"): "StreamFunctionErrorsAlarm",
    ("AWS/Lambda", "Errors", "SignFunction"): "SignFunctionErrorsAlarm",
}


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(namespace, metric, dimension value, statistic) of an alarm, plain or metric math."""
    plain = [
        (
            alarm.get("Namespace"),
            alarm.get("MetricName"),
            alarm.get("Dimensions"),
            alarm.get("Statistic") or alarm.get("ExtendedStatistic"),
        )
    ]
    stats = [
        (
            m["MetricStat"]["Metric"]["Namespace"],
            m["MetricStat"]["Metric"]["MetricName"],
            m["MetricStat"]["Metric"]["Dimensions"],
            m["MetricStat"]["Stat"],
        )
        for m in alarm.get("Metrics", [])
        if "MetricStat" in m
    ]
    out = []
    for namespace, name, dimensions, stat in stats or plain:
        (dimension,) = dimensions
        value = dimension["Value"]
        out.append((namespace, name, value["Ref"] if isinstance(value, dict) else value, stat))
    return out


def test_alarms_cover_5xx_provider_errors_throttles_history_and_p95_ttft(translated: dict[str, Any]) -> None:
    alarms = _of_type(translated, "AWS::CloudWatch::Alarm")
    found = {(ns, name, dim): logical_id for logical_id, a in alarms.items() for ns, name, dim, _ in _alarm_metrics(a)}
    assert found == ALARMS
    stats = {name: stat for a in alarms.values() for _, name, _, stat in _alarm_metrics(a)}
    assert stats["TimeToFirstToken"] == "p95"
    assert stats["ServerErrors"] == stats["ProviderErrors"] == "Average"  # 0/1 per request: the average is a rate
    for logical_id, alarm in alarms.items():
        assert alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), logical_id  # the deploy role's scope
        assert alarm["TreatMissingData"] == "notBreaching", logical_id
        topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert alarm["AlarmActions"] == alarm["OKActions"] == topic, logical_id
    assert translated["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_metrics_the_alarms_and_dashboard_read_are_the_ones_the_functions_emit(translated: dict[str, Any]) -> None:
    emitted = set()
    for path in (ROOT / "functions").rglob("*.py"):
        emitted |= set(re.findall(r'(?:record\(|name=|\()"([A-Z][A-Za-z0-9]+)"', path.read_text()))
    read = {
        name
        for a in _of_type(translated, "AWS::CloudWatch::Alarm").values()
        for ns, name, _, _ in _alarm_metrics(a)
        if ns == "Sigstream"
    }
    (dashboard,) = _of_type(translated, "AWS::CloudWatch::Dashboard").values()
    body_text = dashboard["DashboardBody"]["Fn::Sub"]
    read |= set(re.findall(r'"Sigstream", "([A-Za-z0-9]+)"', body_text)) | set(
        re.findall(r'MetricName=\\"([A-Za-z0-9]+)\\"', body_text)
    )
    read |= set(re.findall(r'\[".", "([A-Za-z0-9]+)"', body_text)) - {"Throttles", "Errors"}
    assert read and read <= emitted, f"read but never emitted: {sorted(read - emitted)}"
    values = {
        "AWS::Region": "us-east-1",
        "StreamFunction": "fn",
        "StreamLogGroup": "/aws/lambda/fn",
        "TimeToFirstTokenThreshold": "5000",
    }
    body = json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: values[m[1]], body_text))
    assert len(body["widgets"]) >= 6


def test_reserved_concurrency_is_a_parameter_set_per_stage(translated: dict[str, Any]) -> None:
    import tomllib

    stream = translated["Resources"]["StreamFunction"]["Properties"]
    assert stream["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasStreamReservedConcurrency", {"Ref": "StreamReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for stage in ("dev", "staging", "prod"):
        assert "StreamReservedConcurrency=" in config[stage]["deploy"]["parameters"]["parameter_overrides"], stage


def test_custom_domain_is_off_by_default_and_keeps_streaming_and_cors() -> None:
    template = load_template(ROOT / "template.yaml")
    for logical_id, resource in template["Resources"].items():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = f"s3://artifacts/{logical_id}.zip"
    cfn = translate(template)
    assert template["Parameters"]["CustomDomainName"]["Default"] == ""
    distribution = cfn["Resources"]["StreamDistribution"]
    assert distribution["Condition"] == "UseCustomDomain"
    config = distribution["Properties"]["DistributionConfig"]
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # Managed-CachingDisabled
    assert behaviour["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"  # AllViewerExceptHostHeader
    assert behaviour["Compress"] is False and "ResponseHeadersPolicyId" not in behaviour  # CORS stays the URL's
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= set(behaviour["AllowedMethods"])
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {
        "Fn::Select": [2, {"Fn::Split": ["/", {"Fn::GetAtt": ["StreamFunctionUrl", "FunctionUrl"]}]}]
    }
    assert config["ViewerCertificate"]["AcmCertificateArn"] == {"Ref": "CustomDomainCertificateArn"}
    sign_env = cfn["Resources"]["SignFunction"]["Properties"]["Environment"]["Variables"]
    assert sign_env["SIGSTREAM_STREAM_URL"]["Fn::If"][0] == "UseCustomDomain"  # signed URLs name the domain
    assert cfn["Outputs"]["StreamCustomDomainUrl"]["Condition"] == "UseCustomDomain"


def _env_reads() -> dict[str, set[str]]:
    """SIGSTREAM_* names each function's code reads (its settings class and os.environ)."""
    settings = (ROOT / "layers" / "core" / "python" / "sigstream" / "core" / "settings.py").read_text()
    by_class = {
        name: {"SIGSTREAM_" + n for n in re.findall(r'_(?:get|int|url)\(env, "([A-Z0-9_]+)"', body)}
        for name, body in re.findall(r"^class (\w+Settings)\b(.*?)(?=^\S)", settings, re.S | re.M)
    }
    reads: dict[str, set[str]] = {}
    for function, folder in (("StreamFunction", "stream"), ("SignFunction", "sign")):
        names = set()
        for path in (ROOT / "functions" / folder).rglob("*.py"):
            text = path.read_text()
            names |= set(re.findall(r'os\.environ(?:\.get\(|\[)"(SIGSTREAM_[A-Z0-9_]+)"', text))
            for settings_class in re.findall(r"(\w+Settings)\.from_env", text):
                names |= by_class[settings_class]
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


def test_lambda_writes_its_own_platform_lines_as_json_too(translated: dict[str, Any]) -> None:
    """Without LogFormat JSON, Lambda adds text lines (START, END, REPORT, crash reports) to every log group."""
    for logical_id, props in _of_type(translated, "AWS::Lambda::Function").items():
        assert props.get("LoggingConfig", {}).get("LogFormat") == "JSON", logical_id


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


def test_deploy_rehearsal_promotes_one_package_through_every_stage(built: Path, tmp_path: Path) -> None:
    """As deploy.yml does it: bootstrap, `sam package` once, then dev -> staging -> prod from that package."""
    moto = MotoServer.start()
    try:
        boot = bootstrap(moto, ROOT)
        bucket = boot["shared"].outputs["ArtifactsBucketName"]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        built_once = package(built, moto, TOOLS / "sam", bucket, sha or "0" * 40, tmp_path / "build")
        deployed = {}
        for stage in STAGES:
            packaged = fetch_package(moto, bucket, built_once.key, built_once.sha256, tmp_path / stage)
            stack_name, parameters = stage_parameters(ROOT, stage)
            deployed[stage] = (packaged, deploy(packaged, moto, stack_name, parameters))
        with pytest.raises(PackageMismatchError):  # a package that is not the build's is refused
            moto.client("s3").put_object(Bucket=bucket, Key=built_once.key, Body=b"# not the build\n")
            fetch_package(moto, bucket, built_once.key, built_once.sha256, tmp_path / "tampered")
        lambda_client, iam = moto.client("lambda"), moto.client("iam")
        functions = lambda_client.list_functions()["Functions"]
        concurrency = {
            f["FunctionName"]: lambda_client.get_function_concurrency(FunctionName=f["FunctionName"]).get(
                "ReservedConcurrentExecutions"
            )
            for f in functions
        }
        smoke_policies = {
            stage: [
                p["PolicyArn"]
                for p in iam.list_attached_role_policies(RoleName=f"sigstream-smoke-{stage}")["AttachedPolicies"]
            ]
            for stage in STAGES
        }
        boundaries = {
            r["RoleName"]: (r.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
            for r in (iam.get_role(RoleName=f["Role"].rsplit("/", 1)[1])["Role"] for f in functions)
        }
        layers = lambda_client.list_layers()["Layers"]
    finally:
        moto.stop()
    assert {k: v.status for k, v in boot.items()} == dict.fromkeys(("shared", *STAGES), "CREATE_COMPLETE")
    assert set(boot["shared"].created.values()) | BOOTSTRAP_MOTO_UNSUPPORTED >= {"AWS::S3::Bucket", "AWS::IAM::Role"}
    # The same bytes everywhere: each stage deployed the package with the build's hash ...
    assert {p.read_bytes() for p, _ in deployed.values()} == {built_once.path.read_bytes()}
    for stage, (_, result) in deployed.items():
        assert result.status == "CREATE_COMPLETE", stage
        conditional = {k for k, v in result.translated["Resources"].items() if "Condition" in v}
        assert conditional == {"StreamDistribution"}  # no stage sets CustomDomainName: off, so not created
        expected = {
            k: v["Type"]
            for k, v in result.translated["Resources"].items()
            if v["Type"] not in MOTO_UNSUPPORTED and k not in conditional
        }
        assert result.created == expected, stage  # everything moto models was created
        # What moto cannot create is exactly what docs/deploy.md says (update both if moto gains support).
        assert set(result.skipped.values()) == MOTO_UNSUPPORTED, stage
        # ... so every stage runs the same code (and the code came from the artifacts bucket).
        code = {
            k: v["Properties"].get("Code") or v["Properties"].get("Content")
            for k, v in result.translated["Resources"].items()
            if v["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion")
        }
        assert all(c["S3Bucket"] == bucket and c["S3Key"].startswith(f"sigstream/{sha}/") for c in code.values())
        assert smoke_policies[stage] == [result.outputs["BackendSignPolicyArn"]], (
            "the smoke role gets the backend policy"
        )
    code_by_stage = {
        stage: sorted(f["CodeSha256"] for f in functions if f["FunctionName"].startswith(f"sigstream-{stage}-"))
        for stage in STAGES
    }
    assert len({tuple(v) for v in code_by_stage.values()}) == 1 and len(code_by_stage["prod"]) == 2
    stream_concurrency = {n.split("-")[1]: v for n, v in concurrency.items() if "StreamFunction" in n}
    assert stream_concurrency == {"dev": None, "staging": 20, "prod": 200}  # samconfig per stage; 0 = unreserved
    for role, boundary in boundaries.items():
        stage = role.split("-")[1]
        assert boundary == f"arn:aws:iam::123456789012:policy/sigstream-boundary-{stage}", role
    # Three layers per stage (moto names them per stack and does not attach them to the functions).
    assert len({layer["LayerName"] for layer in layers}) == 3 * len(STAGES)


# Lambda's reserved variable names (configuration-envvars-runtime): a function may not set these.
LAMBDA_RESERVED = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ",
}  # fmt: skip


def test_endpoint_overrides_are_declared_empty_for_sam_local_and_none_is_reserved(translated: dict[str, Any]) -> None:
    """`sam local invoke --env-vars` sets only declared variables; deployed, the empty values are ignored."""
    for props in _of_type(translated, "AWS::Lambda::Function").values():
        variables = props["Environment"]["Variables"]
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
            assert variables[name] == "", name
        assert not set(variables) & LAMBDA_RESERVED
