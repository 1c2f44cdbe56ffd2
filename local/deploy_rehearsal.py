"""Rehearse a deploy against moto server: the `sam build` output, translated, created as a stack.

`sam deploy` itself cannot run against moto (see docs/deploy.md), so this does what it does in the
order it does it: upload each built artifact to S3, translate the SAM template with the same
translator CloudFormation uses, and create the stack through the CloudFormation API.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from local.aws import REGION, MotoServer
from local.pool import ACCOUNT_ID
from local.template import load_template

# Resource types moto's CloudFormation cannot create (checked by tests/integration/test_template.py).
MOTO_UNSUPPORTED = {"AWS::Lambda::Url", "AWS::Lambda::Alias", "AWS::SecretsManager::Secret"}


@dataclass
class Rehearsal:
    """What happened."""

    status: str
    created: dict[str, str]  # logical id -> resource type
    skipped: dict[str, str]
    translated: dict[str, Any]


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The Serverless transform, as CloudFormation applies it (region and account of the local stack).

    The template names no managed policies, so none are looked up in IAM.
    """
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws"}
    return dict(translator.translate(template, pseudo))


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(folder))
    return buf.getvalue()


def rehearse(built: Path, moto: MotoServer, stack_name: str = "sigstream-rehearsal") -> Rehearsal:
    """Upload, translate, create; wait for the stack to settle."""
    template = load_template(built / "template.yaml")
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="sigstream-artifacts")
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                folder = (built / props[key]).resolve()
                s3.put_object(Bucket="sigstream-artifacts", Key=f"{logical_id}.zip", Body=_zip(folder))
                props[key] = {"Bucket": "sigstream-artifacts", "Key": f"{logical_id}.zip"}
    translated = translate(template)
    skipped = {k: v["Type"] for k, v in translated["Resources"].items() if v["Type"] in MOTO_UNSUPPORTED}
    body = json.loads(json.dumps(translated))
    for logical_id, kind in skipped.items():
        if kind in ("AWS::Lambda::Url", "AWS::Lambda::Alias"):  # moto crashes on outputs/refs that read them
            body["Resources"].pop(logical_id)
    text = json.dumps(body)
    for logical_id in [k for k, v in skipped.items() if v == "AWS::Lambda::Url"]:
        text = text.replace(
            json.dumps({"Fn::GetAtt": [logical_id, "FunctionUrl"]}), '"https://url-not-created-by-moto/"'
        )
    body = json.loads(text)
    cloudformation = moto.client("cloudformation")
    cloudformation.create_stack(StackName=stack_name, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"])
    for _ in range(120):
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            break
        time.sleep(0.5)
    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    # moto lists each resource it cannot model as a blank entry; those are the `skipped` ones.
    created = {
        r["LogicalResourceId"]: r["ResourceType"]
        for r in summaries
        if r["ResourceStatus"] == "CREATE_COMPLETE" and r["LogicalResourceId"]
    }
    return Rehearsal(stack["StackStatus"], created, skipped, translated)
