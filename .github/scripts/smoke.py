"""Deploy smoke test: sign a URL with SigV4 (the deploy role), then stream one answer through it."""

import json
import sys
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.session import Session

sign_url = sys.argv[1]
if not sign_url.startswith("https://"):
    sys.exit(f"not a Function URL: {sign_url!r}")
session = Session()
body = json.dumps({"subject": "ci-smoke", "stateless": True, "max_tokens": 16, "expires_in": 120})
request = AWSRequest("POST", sign_url.rstrip("/") + "/sign", data=body, headers={"content-type": "application/json"})
SigV4Auth(session.get_credentials(), "lambda", session.get_config_variable("region")).add_auth(request)
sign_request = urllib.request.Request(request.url, body.encode(), dict(request.headers))  # noqa: S310
with urllib.request.urlopen(sign_request, timeout=30) as r:  # noqa: S310 - https checked above
    answer = json.load(r)
chat = json.dumps({"stream": True, "messages": [{"role": "user", "content": "Reply with the word ok."}]}).encode()
chat_request = urllib.request.Request(answer["url"], chat, {"content-type": "application/json"})  # noqa: S310
with urllib.request.urlopen(chat_request, timeout=60) as r:  # noqa: S310 - https checked above
    text = r.read().decode()
if not text.rstrip().endswith("data: [DONE]"):
    sys.exit(f"stream did not finish: {text[-300:]}")
print("smoke test passed")
