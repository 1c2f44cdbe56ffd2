"""Issue 13 tried as its users and attackers would (an outside tester's round), over the local stack's real sockets.

Each test here failed before the fix committed with it; the ones that held are in test_conversation_turns.py.
"""

from __future__ import annotations

import json

from local.stack import LocalStack
from tests.helpers import new_subject, signed_url, upstream_control, upstream_requests
from tests.integration.test_conversation_turns import EXAMPLES, messages_of, node_run


def test_ai_sdk_tool_loop_survives_a_model_writing_a_float_argument(app_stack: LocalStack) -> None:
    # Models write `2.0`; the AI SDK resends JSON.stringify(JSON.parse(...)), i.e. `2`: the same call to any reader.
    arguments = '{"city": "Paris", "days": 2.0}'
    upstream_control(app_stack, delay_ms=5, tool_call={"name": "get_weather", "arguments": arguments})
    subject = new_subject()
    answer = signed_url(app_stack, subject=subject)
    out = node_run(EXAMPLES / "usechat" / "tool-loop.mjs", answer, "weather in Paris for two days?")
    assert out["steps"] == 2 and out["text"].startswith("Echo (3 messages)"), out
    steps = [r["body"]["messages"] for r in upstream_requests(app_stack)]
    assert [[m["role"] for m in s] for s in steps] == [["user"], ["user", "assistant", "tool"]]
    stored = messages_of(app_stack, subject, answer["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["arguments"] == arguments  # kept as the provider sent it
    assert json.loads(steps[1][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "days": 2}
