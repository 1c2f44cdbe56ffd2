"""Rehearse the CI deploy against moto server: bootstrap, package once, promote that package to every stage.

The same steps as .github/workflows (deploy.yml, deploy-stage.yml), in the same order: the bootstrap
stacks (bootstrap/shared.yaml once, bootstrap/stage.yaml per stage), the real `sam package` uploading the
`sam build` output to the artifacts bucket, then per stage: fetch the packaged template, check its sha256,
deploy it with that stage's samconfig parameters. `sam deploy` itself cannot run against moto (see
docs/deploy.md), so the deploy step translates the packaged template with the translator CloudFormation uses
and creates the stack through the CloudFormation API.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from local.aws import REGION, MotoServer
from local.pool import ACCOUNT_ID
from local.stack import parse_overrides
from local.template import load_template

STAGES = ("dev", "staging", "prod")
# Resource types moto's CloudFormation cannot create (checked by tests/integration/test_template.py).
MOTO_UNSUPPORTED = {"AWS::Lambda::Url", "AWS::Lambda::Alias", "AWS::SecretsManager::Secret", "AWS::CloudWatch::Alarm"}
BOOTSTRAP_MOTO_UNSUPPORTED = {"AWS::IAM::OIDCProvider", "AWS::S3::BucketPolicy"}


class PackageMismatchError(Exception):
    """The packaged template is not the one the build produced."""


@dataclass
class Rehearsal:
    """What happened to one stack."""

    status: str
    created: dict[str, str]  # logical id -> resource type
    skipped: dict[str, str]
    translated: dict[str, Any]
    outputs: dict[str, str]


@dataclass(frozen=True)
class Package:
    """What the build job hands to every stage."""

    path: Path
    sha256: str
    key: str  # where the packaged template lives in the artifacts bucket


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The Serverless transform, as CloudFormation applies it (region and account of the local stack).

    The template names no managed policies, so none are looked up in IAM.
    """
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws"}
    return dict(translator.translate(template, pseudo))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, as `sha256sum` prints it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def samconfig_stage(root: Path, stage: str) -> dict[str, Any]:
    """`[<stage>.deploy.parameters]` of samconfig.toml."""
    config = tomllib.loads((root / "samconfig.toml").read_text())
    return dict(config[stage]["deploy"]["parameters"])


def _wait(cloudformation: Any, stack_name: str) -> dict[str, Any]:
    for _ in range(240):
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            return stack
        time.sleep(0.5)
    raise TimeoutError(f"{stack_name} did not settle")


def _create(moto: MotoServer, stack_name: str, body: dict[str, Any], parameters: dict[str, str]) -> Rehearsal:
    cloudformation = moto.client("cloudformation")
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(body),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[{"Key": "project", "Value": "sigstream"}],
    )
    stack = _wait(cloudformation, stack_name)
    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    # moto lists each resource it cannot model as a blank entry; those are the `skipped` ones.
    created = {
        r["LogicalResourceId"]: r["ResourceType"]
        for r in summaries
        if r["ResourceStatus"] == "CREATE_COMPLETE" and r["LogicalResourceId"]
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return Rehearsal(stack["StackStatus"], created, {}, body, outputs)


def bootstrap(moto: MotoServer, root: Path, org: str = "acme", repo: str = "sigstream") -> dict[str, Rehearsal]:
    """bootstrap/shared.yaml, then bootstrap/stage.yaml for each stage (keys "shared", "dev", ...).

    moto models no OIDC provider resource, so the provider is created by API first, as in an account that
    already has one (the template's ExistingOidcProviderArn path).
    """
    provider = moto.client("iam").create_open_id_connect_provider(
        Url="https://token.actions.githubusercontent.com", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40]
    )["OpenIDConnectProviderArn"]
    common = {"GitHubOrg": org, "GitHubRepo": repo}
    out = {
        "shared": _create(
            moto,
            "sigstream-bootstrap",
            load_template(root / "bootstrap" / "shared.yaml"),
            {**common, "ExistingOidcProviderArn": provider},
        )
    }
    for stage in STAGES:
        body = load_template(root / "bootstrap" / "stage.yaml")
        out[stage] = _create(moto, f"sigstream-bootstrap-{stage}", body, {**common, "Stage": stage})
    return out


def package(built: Path, moto: MotoServer, sam: Path, bucket: str, sha: str, out_dir: Path) -> Package:
    """The build job: the real `sam package` into the artifacts bucket, the packaged template stored beside."""
    out_dir.mkdir(parents=True, exist_ok=True)
    packaged = out_dir / "packaged.yaml"
    env = {**os.environ, **moto.client_env(), "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(
        [
            str(sam),
            "package",
            "--template-file",
            str(built / "template.yaml"),
            "--s3-bucket",
            bucket,
            "--s3-prefix",
            f"sigstream/{sha}",
            "--output-template-file",
            str(packaged),
            "--no-progressbar",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sam package failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    key = f"sigstream/{sha}/packaged.yaml"
    moto.client("s3").put_object(Bucket=bucket, Key=key, Body=packaged.read_bytes())
    return Package(packaged, sha256_of(packaged), key)


def fetch_package(moto: MotoServer, bucket: str, key: str, expected_sha256: str, dest: Path) -> Path:
    """A deploy job's first step: download the packaged template and refuse it unless its hash matches."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "packaged.yaml"
    path.write_bytes(moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    if sha256_of(path) != expected_sha256:
        raise PackageMismatchError(f"{key}: sha256 {sha256_of(path)} is not the build's {expected_sha256}")
    return path


def _stand_ins(translated: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """The translated stack without what moto cannot create, references to it replaced by equivalents."""
    body = json.loads(json.dumps(translated))
    replacements = {}
    for logical_id, kind in skipped.items():
        if kind == "AWS::Lambda::Url":  # moto crashes on outputs/refs that read FunctionUrl
            body["Resources"].pop(logical_id)
            replacements[json.dumps({"Fn::GetAtt": [logical_id, "FunctionUrl"]})] = '"https://url-not-created-by-moto/"'
        elif kind == "AWS::Lambda::Alias":  # its Ref is the qualified ARN: built from the function's here
            props = body["Resources"].pop(logical_id)["Properties"]
            arn = {"Fn::Join": [":", [{"Fn::GetAtt": [props["FunctionName"]["Ref"], "Arn"]}, props["Name"]]]}
            replacements[json.dumps({"Ref": logical_id})] = json.dumps(arn)
    text = json.dumps(body)
    for old, new in replacements.items():
        text = text.replace(old, new)
    result: dict[str, Any] = json.loads(text)
    return result


def deploy(packaged: Path, moto: MotoServer, stack_name: str, parameters: dict[str, str]) -> Rehearsal:
    """One stage's `sam deploy --template-file packaged.yaml`: translate, then create the stack."""
    translated = translate(load_template(packaged))
    skipped = {k: v["Type"] for k, v in translated["Resources"].items() if v["Type"] in MOTO_UNSUPPORTED}
    result = _create(moto, stack_name, _stand_ins(translated, skipped), parameters)
    result.skipped, result.translated = skipped, translated
    return result


def stage_parameters(root: Path, stage: str) -> tuple[str, dict[str, str]]:
    """A stage's stack name and parameter overrides, from samconfig.toml."""
    config = samconfig_stage(root, stage)
    return config["stack_name"], parse_overrides(config.get("parameter_overrides", ""))
