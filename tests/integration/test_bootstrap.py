"""bootstrap/: the deploy role can do what deploying the stack takes, and nothing else.

"What it takes" comes from CloudFormation's own resource schemas (the `handlers` permissions cfn-lint ships):
every action a resource type's create/read/update/delete handler may call is either granted or listed
below as withheld, with the reason. Every granted action is needed by some handler or by SAM CLI itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local.template import load_template
from tests.conftest import ROOT
from tests.integration.test_template import translate

STAGE = ROOT / "bootstrap" / "stage.yaml"
SHARED = ROOT / "bootstrap" / "shared.yaml"

# Handler permissions deliberately not granted: the feature is not used, or CI must never have the right.
WITHHELD = {
    "ec2:": "no VPC (Function URLs do not stream from inside one)",
    "elasticfilesystem:": "no EFS",
    "s3files:": "no S3 Files mounts",
    # (SSEEnabled: true is the AWS *managed* key aws/dynamodb, not an AWS-owned one: its key policy already
    # lets DynamoDB use it for any principal of the account, as aws/secretsmanager does for the secrets.)
    "kms:": "AWS managed keys only (aws/dynamodb, aws/secretsmanager); no customer-managed KMS key",
    "kinesis:": "no DynamoDB streams to Kinesis",
    "codedeploy:": "no gradual (CodeDeploy) alias shifting",
    "firehose:": "no log delivery to Firehose",
    "iam:createservicelinkedrole": "no global-table replicas",
    "iam:attachgrouppolicy": "the backend policy attaches to roles only",
    "iam:detachgrouppolicy": "the backend policy attaches to roles only",
    "iam:attachuserpolicy": "the backend policy attaches to roles only",
    "iam:detachuserpolicy": "the backend policy attaches to roles only",
    "iam:deleterolepermissionsboundary": "never: the boundary is what contains the roles CI creates",
    "secretsmanager:getsecretvalue": "never: CI reads no secret (values are set by people, docs/deploy.md)",
    "secretsmanager:replicatesecrettoregions": "single region",
    "secretsmanager:removeregionsfromreplication": "single region",
    "dynamodb:associatetablereplica": "no global-table replicas",
    "dynamodb:createtablereplica": "no global-table replicas",
    "dynamodb:importtable": "no imports from S3",
    "dynamodb:describeimport": "no imports from S3",
    "dynamodb:batchwriteitem": "data plane (imports only): CI reads and writes no conversation",
    "dynamodb:putitem": "data plane (imports only)",
    "dynamodb:getitem": "data plane (imports only)",
    "dynamodb:updateitem": "data plane (imports only)",
    "dynamodb:deleteitem": "data plane (imports only)",
    "dynamodb:query": "data plane (imports only)",
    "dynamodb:scan": "data plane (imports only)",
    "dynamodb:putresourcepolicy": "no table resource policy",
    "dynamodb:deleteresourcepolicy": "no table resource policy",
    "dynamodb:updatecontributorinsights": "contributor insights off",
    "dynamodb:enablekinesisstreamingdestination": "no Kinesis destination",
    "dynamodb:disablekinesisstreamingdestination": "no Kinesis destination",
    "dynamodb:updatekinesisstreamingdestination": "no Kinesis destination",
    "lambda:passcapacityprovider": "no Lambda managed instances",
    "lambda:associateruntimealias": "no runtime alias",
    "lambda:getcodesigningconfig": "no code signing",
    "lambda:putfunctioncodesigningconfig": "no code signing",
    "lambda:deletefunctioncodesigningconfig": "no code signing",
    "lambda:putprovisionedconcurrencyconfig": "no provisioned concurrency",
    "lambda:deleteprovisionedconcurrencyconfig": "no provisioned concurrency",
    "logs:associatekmskey": "no KMS key on log groups",
    "logs:disassociatekmskey": "no KMS key on log groups",
    "logs:createlogdelivery": "no vended log delivery",
    "logs:putresourcepolicy": "no log resource policy",
    "logs:deleteresourcepolicy": "no log resource policy",
    "logs:describeresourcepolicies": "no log resource policy",
    "logs:putdataprotectionpolicy": "no data protection policy",
    "logs:deletedataprotectionpolicy": "no data protection policy",
    "logs:putindexpolicy": "no field index policy",
    "logs:deleteindexpolicy": "no field index policy",
    "logs:putbearertokenauthentication": "no bearer-token log ingestion",
    "logs:putloggroupdeletionprotection": "no deletion protection",
    "logs:createlogstream": "the functions write their own logs",
    "logs:putlogevents": "the functions write their own logs",
    "logs:describelogstreams": "the functions write their own logs",
    "s3:getobjectmetadata": "(listed by the table's import handler only)",
    "s3:rest.put.object": "(not an IAM action)",
    "cloudfront:createdistributionwithtags": "(not an IAM action: CreateDistribution with tags)",
    "cloudfront:createconnectiongroup": "no Anycast connection groups",
    "cloudfront:getconnectiongroup": "no Anycast connection groups",
    "cloudfront:getvpcorigin": "no VPC origins",
    "cloudfront:updatedistributionwithstagingconfig": "no continuous deployment",
}
# Granted for SAM CLI itself (it drives a change set and uploads the template) and the smoke test.
SAM_CLI = {
    "cloudformation:createchangeset",
    "cloudformation:describechangeset",
    "cloudformation:executechangeset",
    "cloudformation:deletechangeset",
    "cloudformation:listchangesets",
    "cloudformation:describestacks",
    "cloudformation:describestackevents",
    "cloudformation:describestackresource",
    "cloudformation:describestackresources",
    "cloudformation:liststackresources",
    "cloudformation:gettemplate",
    "cloudformation:gettemplatesummary",
    "s3:putobject",
    "s3:getbucketlocation",
    "sts:assumerole",
}


# Statements that cannot name a stage's resources, and the only actions they may hold.
ACCOUNT_WIDE = {
    "TheSamTransform": ["cloudformation:CreateChangeSet"],  # AWS's transform, shared by every stack
    "FindLogGroups": ["logs:DescribeLogGroups"],  # authorised on the account's log-group space
}


def _handler_permissions(resource_type: str) -> set[str]:
    import cfnlint  # the same pinned version as .venv-tools' (requirements/dev.txt)

    data = Path(cfnlint.__file__).parent / "data" / "schemas"
    providers = json.loads((data / "providers" / "us-east-1.json").read_text())
    schema = json.loads((data / "resources" / f"{providers[resource_type]}.json").read_text())
    return {
        p.lower()
        for name, handler in schema["handlers"].items()
        if name in ("create", "read", "update", "delete")
        for p in handler.get("permissions", [])
    }


def _statements(template: dict[str, Any], *policies: str) -> list[dict[str, Any]]:
    return [s for p in policies for s in template["Resources"][p]["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a.lower() for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}


def _app_resource_types() -> set[str]:
    template = load_template(ROOT / "template.yaml")
    for logical_id, resource in template["Resources"].items():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = f"s3://artifacts/{logical_id}.zip"
    return {r["Type"] for r in translate(template)["Resources"].values()}


def test_deploy_role_can_do_what_every_resource_of_the_stack_needs_and_nothing_more() -> None:
    stage = load_template(STAGE)
    granted = _actions(_statements(stage, "DeployPolicy", "CustomDomainPolicy"))
    types = _app_resource_types()
    assert "AWS::CloudFront::Distribution" in types  # (with its condition on: CustomDomainPolicy covers it)
    needed = set().union(*(_handler_permissions(t) for t in types))

    def withheld(action: str) -> bool:
        return any(action == w or (w.endswith(":") and action.startswith(w)) for w in WITHHELD)

    missing = sorted(a for a in needed - granted if not withheld(a))
    assert not missing, f"CloudFormation needs these for the stack's resources: {missing}"
    assert not (granted & {w for w in WITHHELD if not w.endswith(":")}), "a withheld action is granted"
    unexplained = sorted(granted - needed - SAM_CLI)
    assert not unexplained, f"granted but needed by no resource handler nor SAM CLI: {unexplained}"


def test_deploy_role_never_reads_data_and_scopes_everything_to_its_stage() -> None:
    stage = load_template(STAGE)
    for statement in _statements(stage, "DeployPolicy", "CustomDomainPolicy"):
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        text = json.dumps(resources)
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith("*") for a in actions), statement["Sid"]
        if resources == ["*"]:
            assert actions == ["secretsmanager:GetRandomPassword"], statement["Sid"]  # no resource type exists
            continue
        if statement["Sid"] in ACCOUNT_WIDE:
            assert actions == ACCOUNT_WIDE[statement["Sid"]], statement["Sid"]
            continue
        scoped = "${Stage}" in text or "Condition" in statement or "SharedStackName" in text
        assert scoped, f"{statement['Sid']} is not limited to the stage"
    granted = _actions(_statements(stage, "DeployPolicy"))
    assert not granted & {"secretsmanager:getsecretvalue", "secretsmanager:putsecretvalue", "dynamodb:getitem"}
    assert "iam:deleterolepermissionsboundary" not in granted


def test_roles_ci_creates_are_bounded_and_the_smoke_role_can_only_call_urls() -> None:
    stage = load_template(STAGE)
    create = next(
        s for s in _statements(stage, "DeployPolicy") if "iam:CreateRole" in s["Action"]
    )  # creating or widening a role requires the boundary
    assert set(create["Action"]) == {
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:PutRolePermissionsBoundary",
    }
    assert create["Condition"] == {"StringEquals": {"iam:PermissionsBoundary": {"Ref": "FunctionBoundary"}}}
    smoke = stage["Resources"]["SmokeRole"]["Properties"]
    assert smoke["PermissionsBoundary"] == {"Ref": "SmokeBoundary"}
    (only,) = stage["Resources"]["SmokeBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    assert set(only["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    trust = stage["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == {
        "Fn::Sub": "repo:${GitHubOrg}/${GitHubRepo}:environment:${Stage}"
    }
    shared = load_template(SHARED)
    package_trust = shared["Resources"]["PackageRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert package_trust["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == {
        "Fn::Sub": "repo:${GitHubOrg}/${GitHubRepo}:ref:refs/heads/main"
    }


def test_the_stack_uses_the_names_the_deploy_role_is_scoped_to() -> None:
    """Layer names, alarm and dashboard names, and the boundary parameter, as stage.yaml expects them."""
    app = load_template(ROOT / "template.yaml")
    layers = [v["Properties"] for v in app["Resources"].values() if v["Type"] == "AWS::Serverless::LayerVersion"]
    # Named per stack (SAM's default, the logical id, is account-wide: dev's role could delete prod's versions).
    assert layers and all(p["LayerName"]["Fn::Sub"].startswith("${AWS::StackName}-") for p in layers)
    (statement,) = [s for s in _statements(load_template(STAGE), "DeployPolicy") if s["Sid"] == "Layers"]
    assert [_sub(r) for r in _list(statement["Resource"])] == [
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:layer:sigstream-${Stage}-*"
    ]
    globals_boundary = app["Globals"]["Function"]["PermissionsBoundary"]["Fn::If"][1]["Fn::Sub"]
    assert globals_boundary.endswith(":policy/${PermissionsBoundaryPolicyName}")
    assert app["Resources"]["OperationsDashboard"]["Properties"]["DashboardName"] == {
        "Fn::Sub": "${AWS::StackName}-operations"
    }
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for stage in ("dev", "staging", "prod"):
        overrides = config[stage]["deploy"]["parameters"]["parameter_overrides"]
        assert f"PermissionsBoundaryPolicyName=sigstream-boundary-{stage}" in overrides
        assert f"BackendRoleNames=sigstream-smoke-{stage}" in overrides
        assert config[stage]["deploy"]["parameters"]["s3_prefix"].startswith("sigstream/")


def _sub(resource: Any) -> str:
    """The ARN pattern of a Resource entry (a plain string or a Fn::Sub, with or without variables)."""
    if isinstance(resource, str):
        return resource
    sub = resource["Fn::Sub"]
    return sub if isinstance(sub, str) else sub[0]


def test_only_the_package_role_writes_builds_so_no_stage_can_swap_what_the_next_one_deploys() -> None:
    """The sha256 check covers packaged.yaml only: the code zips it names must be writable by the build alone.

    A deploy role that could write sigstream/<sha>/ could replace the zips of a build already tested, and the
    next stage (prod, after its approval) would deploy them under the same, still matching, sha256.
    """
    import tomllib

    stage = load_template(STAGE)
    writes = [
        _sub(r)
        for s in _statements(stage, "DeployPolicy", "CustomDomainPolicy")
        if {"s3:putobject", "s3:*"} & _actions([s])
        for r in _list(s["Resource"])
    ]
    assert writes == ["arn:${AWS::Partition}:s3:::${Bucket}/sigstream/${Stage}/*"], writes
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for name in ("dev", "staging", "prod"):  # where `sam deploy --config-env <stage>` uploads the template
        assert config[name]["deploy"]["parameters"]["s3_prefix"] == f"sigstream/{name}", name
    shared = load_template(SHARED)
    (policy,) = shared["Resources"]["PackageRole"]["Properties"]["Policies"]
    package_writes = [
        _sub(r)
        for s in policy["PolicyDocument"]["Statement"]
        if "s3:PutObject" in s["Action"]
        for r in _list(s["Resource"])
    ]
    assert package_writes == ["${ArtifactsBucket.Arn}/sigstream/*"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_role_a_stage_lists_in_backend_role_names_is_one_its_deploy_role_may_attach_to() -> None:
    """The stack attaches BackendSignPolicy with the deploy role's rights: a role it may not touch fails the deploy."""
    import fnmatch
    import tomllib

    stage = load_template(STAGE)
    attachable = [
        _sub(r)
        for s in _statements(stage, "DeployPolicy")
        if "iam:attachrolepolicy" in _actions([s]) and "iam:PermissionsBoundary" not in json.dumps(s.get("Condition"))
        for r in _list(s["Resource"])
    ]
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for name in ("dev", "staging", "prod"):
        overrides = config[name]["deploy"]["parameters"]["parameter_overrides"]
        (value,) = [o.split("=", 1)[1] for o in overrides.split() if o.startswith("BackendRoleNames=")]
        patterns = [p.replace("${Stage}", name).replace("${AWS::Partition}", "aws") for p in attachable]
        for role in filter(None, value.split(",")):
            arn = f"arn:aws:iam::${{AWS::AccountId}}:role/{role}"
            assert any(fnmatch.fnmatchcase(arn, p) for p in patterns), (
                f"{name}: the deploy role cannot attach to {role}"
            )
