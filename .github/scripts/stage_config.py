"""Deploy settings from samconfig.toml, the one place a stage's region and stack are set.

`stage_config.py region` prints the region every stage deploys to and fails if the stages disagree (the
artifacts bucket is regional, so one build is promoted within one region) or if the GitHub variable
AWS_REGION, when set, names another. `stage_config.py stack <stage>` prints the stage's stack name.
`stage_config.py deployed-commit < get-template.json` prints the commit whose package a stack runs (from the
`sigstream/<sha>/` keys its packaged template names), or nothing for a stack not deployed from a build.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from pathlib import Path

STAGES = ("dev", "staging", "prod")
SAMCONFIG = Path(__file__).resolve().parents[2] / "samconfig.toml"


def regions(config: dict) -> dict[str, str]:
    """Each stage's region, as `sam deploy --config-env <stage>` reads it."""
    out = {}
    for stage in STAGES:
        env = config.get(stage, {})
        region = env.get("deploy", {}).get("parameters", {}).get("region") or env.get("global", {}).get(
            "parameters", {}
        ).get("region")
        if not region:
            raise SystemExit(f"samconfig.toml: [{stage}.deploy.parameters] has no region")
        out[stage] = region
    return out


def region(config: dict, variable: str) -> str:
    """The one region, checked against the stages and the AWS_REGION variable."""
    found = regions(config)
    if len(set(found.values())) != 1:
        raise SystemExit(f"samconfig.toml: stages deploy to different regions {found}; one build needs one region")
    (value,) = set(found.values())
    if variable and variable != value:
        raise SystemExit(
            f"the GitHub variable AWS_REGION={variable} disagrees with samconfig.toml ({value}): "
            "samconfig.toml is the source; delete the variable or make it match"
        )
    return value


BUILD_KEY = re.compile(r"/sigstream/([0-9a-f]{40})/")


def deployed_commit(get_template_output: str) -> str:
    """The commit of the build a stack runs, from `aws cloudformation get-template` output ("" if none)."""
    try:
        body = json.loads(get_template_output).get("TemplateBody", "")
    except (ValueError, AttributeError):
        return ""  # no stack yet (get-template failed) or not its output
    text = body if isinstance(body, str) else json.dumps(body)
    commits = set(BUILD_KEY.findall(text))
    return commits.pop() if len(commits) == 1 else ""


def main(argv: list[str]) -> int:
    """CLI."""
    config = tomllib.loads(SAMCONFIG.read_text())
    if argv[:1] == ["region"]:
        print(region(config, os.environ.get("AWS_REGION_VARIABLE", "")))
        return 0
    if argv == ["deployed-commit"]:
        print(deployed_commit(sys.stdin.read()))
        return 0
    if len(argv) == 2 and argv[0] == "stack" and argv[1] in STAGES:
        print(config[argv[1]]["deploy"]["parameters"]["stack_name"])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
