"""Deploy smoke test: call the Sign URL as a backend does, then stream one answer and read it back.

    smoke.py --stack sigstream-dev --region us-east-1 --role-arn <smoke role>   (CI, after each deploy)
    smoke.py --sign-url http://127.0.0.1:PORT/ --region us-east-1               (against `make dev`)

With --role-arn the Sign call uses that role's credentials: bootstrap's smoke role holds only the stack's
BackendSignPolicy, so a pass proves the policy backends attach (lambda:InvokeFunctionUrl and
lambda:InvokeFunction on the alias) is enough. Fails (exit 1) on anything a user would notice: a refused
Sign call, an unsigned Sign call that is *not* refused, any SSE error event, no text, no [DONE], a tampered
URL that is accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import Session


class SmokeError(Exception):
    """What went wrong, in a sentence."""


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SmokeError(f"not a Function URL: {url[:80]!r}")
    request = urllib.request.Request(url, body, headers, method=method)  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=90) as response:  # noqa: S310  # nosec B310
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def check_stream(text: str) -> str:
    """The streamed answer's text; SmokeError on an error event, no text or no final [DONE]."""
    answer = ""
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        if any(line.startswith("event:") and line.split(":", 1)[1].strip() == "error" for line in lines):
            raise SmokeError(f"the stream contains an error event: {block[:300]}")
        data = "\n".join(line.split(":", 1)[1].removeprefix(" ") for line in lines if line.startswith("data:"))
        if data.strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise SmokeError(f"the stream contains a malformed event: {block[:300]}") from exc
        if isinstance(chunk, dict) and chunk.get("error"):
            raise SmokeError(f"the stream contains an error event: {json.dumps(chunk['error'])[:300]}")
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:  # (n > 1 streams interleave their choices)
                answer += (choice.get("delta") or {}).get("content") or ""
    if not text.rstrip().endswith("data: [DONE]"):
        raise SmokeError(f"the stream did not end with [DONE]: {text[-300:]!r}")
    if not answer.strip():
        raise SmokeError("the stream carried no answer text")
    return answer


def _credentials(session: Session, role_arn: str | None, region: str) -> ReadOnlyCredentials:
    if not role_arn:
        found = session.get_credentials()
        if found is None:
            raise SmokeError("no AWS credentials")
        return found.get_frozen_credentials()
    sts = session.create_client("sts", region_name=region)
    assumed = sts.assume_role(RoleArn=role_arn, RoleSessionName="sigstream-smoke", DurationSeconds=900)["Credentials"]
    return Credentials(
        assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"]
    ).get_frozen_credentials()


def _stack_outputs(session: Session, stack: str, region: str) -> dict[str, str]:
    cloudformation = session.create_client("cloudformation", region_name=region)
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def _sign(sign_url: str, doc: dict[str, Any], credentials: ReadOnlyCredentials | None, region: str) -> tuple[int, Any]:
    body = json.dumps(doc)
    request = AWSRequest(
        "POST", sign_url.rstrip("/") + "/sign", data=body, headers={"content-type": "application/json"}
    )
    if credentials is not None:
        SigV4Auth(credentials, "lambda", region).add_auth(request)
    status, data = _http("POST", request.url, body.encode(), dict(request.headers.items()))
    try:
        return status, json.loads(data or b"{}")
    except ValueError:
        return status, {"raw": data[:200].decode("utf-8", "replace")}


def run(sign_url: str, credentials: ReadOnlyCredentials, region: str) -> str:
    """Every check, in order; returns the answer."""
    status, _ = _sign(sign_url, {"subject": "ci-smoke"}, None, region)
    if status not in (401, 403):
        raise SmokeError(f"an unsigned Sign call got {status}, expected 403: the Sign URL must use AWS_IAM")
    status, answer = _sign(sign_url, {"subject": "ci-smoke", "max_tokens": 32, "expires_in": 120}, credentials, region)
    if status != 200 or "url" not in answer:
        raise SmokeError(
            f"Sign answered {status}: {json.dumps(answer)[:300]} (a 403 here means the caller lacks "
            "lambda:InvokeFunctionUrl and lambda:InvokeFunction on the alias: attach BackendSignPolicyArn)"
        )
    chat = {"stream": True, "messages": [{"role": "user", "content": "Reply with the word ok."}]}
    headers = {"content-type": "application/json"}
    tampered = answer["url"][:-1] + ("B" if answer["url"].endswith("A") else "A")
    status, data = _http("POST", tampered, json.dumps(chat).encode(), headers)
    if status != 403:
        raise SmokeError(f"a tampered URL got {status}, expected 403")
    status, data = _http("POST", answer["url"], json.dumps(chat).encode(), headers)
    if status != 200:
        raise SmokeError(f"the stream answered {status}: {data[:300]!r}")
    text = check_stream(data.decode("utf-8", "replace"))
    messages_doc = {
        "subject": "ci-smoke",
        "method": "GET",
        "path": f"/v1/conversations/{answer['conversation_id']}/messages",
    }
    status, listing = _sign(sign_url, messages_doc, credentials, region)
    if status != 200:
        raise SmokeError(f"Sign (messages) answered {status}")
    status, data = _http("GET", listing["url"], None, {})
    stored = json.loads(data or b"{}").get("data") if status == 200 else None
    if not stored or stored[-1].get("role") != "assistant":
        raise SmokeError(f"the turn was not stored: {status} {data[:300]!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stack", help="read SignUrl from this stack's outputs")
    target.add_argument("--sign-url")
    parser.add_argument("--region", required=True)
    parser.add_argument("--role-arn", help="assume this role for the Sign calls (bootstrap's smoke role)")
    args = parser.parse_args(argv)
    session = Session()
    try:
        sign_url = args.sign_url or _stack_outputs(session, args.stack, args.region)["SignUrl"]
        answer = run(sign_url, _credentials(session, args.role_arn, args.region), args.region)
    except (SmokeError, KeyError) as exc:
        print(f"smoke test FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke test passed ({len(answer)} characters streamed and stored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
