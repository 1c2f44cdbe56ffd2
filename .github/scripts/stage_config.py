"""Deploy settings from samconfig.toml, the one place a stage's region and stack are set.

`stage_config.py region` prints the region every stage deploys to and fails if the stages disagree (the
artifacts bucket is regional, so one build is promoted within one region) or if the GitHub variable
AWS_REGION, when set, names another. `stage_config.py stack <stage>` prints the stage's stack name.
"""

from __future__ import annotations

import os
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


def main(argv: list[str]) -> int:
    """CLI."""
    config = tomllib.loads(SAMCONFIG.read_text())
    if argv[:1] == ["region"]:
        print(region(config, os.environ.get("AWS_REGION_VARIABLE", "")))
        return 0
    if len(argv) == 2 and argv[0] == "stack" and argv[1] in STAGES:
        print(config[argv[1]]["deploy"]["parameters"]["stack_name"])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
