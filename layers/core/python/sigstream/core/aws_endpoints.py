"""Where an AWS service lives (pure): partition DNS suffixes, the SDKs' endpoint variables, the signed host."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

# botocore's partitions.json (id, region pattern, DNS suffix); tests compare this table with it.
PARTITIONS = (
    ("aws", re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$"), "amazonaws.com"),
    ("aws-cn", re.compile(r"^cn\-\w+\-\d+$"), "amazonaws.com.cn"),
    ("aws-eusc", re.compile(r"^eusc\-(de)\-\w+\-\d+$"), "amazonaws.eu"),
    ("aws-iso", re.compile(r"^us\-iso\-\w+\-\d+$"), "c2s.ic.gov"),
    ("aws-iso-b", re.compile(r"^us\-isob\-\w+\-\d+$"), "sc2s.sgov.gov"),
    ("aws-iso-e", re.compile(r"^eu\-isoe\-\w+\-\d+$"), "cloud.adc-e.uk"),
    ("aws-iso-f", re.compile(r"^us\-isof\-\w+\-\d+$"), "csp.hci.ic.gov"),
    ("aws-us-gov", re.compile(r"^us\-gov\-\w+\-\d+$"), "amazonaws.com"),
)
DEFAULT_PORTS = {"http": 80, "https": 443}


def partition(region: str) -> tuple[str, str]:
    """(partition id, DNS suffix) of a region; an unknown region is taken to be in `aws`, as the SDKs do."""
    for name, pattern, suffix in PARTITIONS:
        if pattern.match(region):
            return name, suffix
    return "aws", "amazonaws.com"


def default_endpoint(endpoint_prefix: str, region: str) -> str:
    """https://<service>.<region>.<partition DNS suffix>."""
    return f"https://{endpoint_prefix}.{region}.{partition(region)[1]}"


def configured_endpoint(env: Mapping[str, str], service_env_id: str) -> str | None:
    """The endpoint the SDKs' variables set: AWS_ENDPOINT_URL_<SERVICE_ID>, then AWS_ENDPOINT_URL.

    `service_env_id` is the service id as boto3 spells it in the variable (e.g. SECRETS_MANAGER, DYNAMODB).
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true turns both off, as in boto3.
    """
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return env.get(f"AWS_ENDPOINT_URL_{service_env_id}") or env.get("AWS_ENDPOINT_URL") or None


def signing_host(url: str) -> str:
    """The Host header an HTTP client sends for the URL (the port only when it is not the default)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{parts.port}"
    return host
