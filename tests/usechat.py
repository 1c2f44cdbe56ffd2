"""The web/examples/usechat npm package (the AI SDK, React, esbuild) for tests: installed on demand, driven via Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from stream_app.chat.sse import SseParser, event_data
from stream_app.chat.ui_stream import TextStreamEncoder, UiStreamEncoder
from tests.conftest import RECORDED, ROOT

USECHAT = ROOT / "web" / "examples" / "usechat"
OPENAI_SSE = RECORDED / "openai-sse"


def node() -> str:
    """Node.js with this package's npm dependencies installed (`npm ci` when node_modules is missing or stale)."""
    node_bin, npm = shutil.which("node"), shutil.which("npm")
    # Node.js and npm are part of this machine image (and CI's): their absence is a failure, never a skip.
    assert node_bin and npm, "Node.js and npm are required (apt-get install nodejs npm)"
    manifest = json.loads((USECHAT / "package.json").read_text())
    missing = [
        name for name in manifest["dependencies"] if not (USECHAT / "node_modules" / name / "package.json").exists()
    ]
    if missing:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=USECHAT, check=True, capture_output=True, timeout=600
        )
    return node_bin


def sdk_check(command: str, doc: Any) -> Any:
    """Run sdk-check.mjs (the AI SDK judging our output) and return its JSON answer."""
    result = subprocess.run(
        [node(), "sdk-check.mjs", command],
        cwd=USECHAT,
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def recorded_chunks(name: str) -> list[dict[str, Any]]:
    """The chat.completion.chunk documents of one recorded OpenAI stream, in order."""
    parser = SseParser()
    events = [*parser.feed((OPENAI_SSE / name).read_bytes()), *parser.flush()]
    data = [event_data(raw) for raw in events]
    return [json.loads(d) for d in data if d is not None and d != "[DONE]"]


def recorded_index() -> list[dict[str, Any]]:
    """index.json of the recorded streams."""
    index: list[dict[str, Any]] = json.loads((OPENAI_SSE / "index.json").read_text())
    return index


def encode_ui(chunks: list[dict[str, Any]], message_id: str = "msg-1", **metadata: Any) -> bytes:
    """A whole UI message stream for these upstream chunks, as the integrator's loop will produce it."""
    encoder = UiStreamEncoder(message_id, metadata=metadata or None)
    out = encoder.start()
    for chunk in chunks:
        out += encoder.feed(chunk)
    return out + encoder.finish()


def encode_text(chunks: list[dict[str, Any]]) -> bytes:
    """The plain-text answer for these chunks."""
    encoder = TextStreamEncoder()
    return b"".join(encoder.feed(chunk) for chunk in chunks)


def choice0(chunks: list[dict[str, Any]], key: str) -> str:
    """Concatenated choice-0 delta text under `key` (content or refusal)."""
    return "".join(
        choice["delta"].get(key) or ""
        for chunk in chunks
        for choice in chunk.get("choices") or []
        if choice.get("index", 0) == 0 and isinstance(choice.get("delta"), dict)
    )


def ui_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a UI message stream (asserting the framing: `data:` events, `[DONE]` last)."""
    assert body.endswith(b"data: [DONE]\n\n"), body[-80:]
    frames = body.split(b"\n\n")
    assert frames[-1] == b""
    out = []
    for raw in frames[:-2]:
        assert raw.startswith(b"data: ") and b"\n" not in raw, raw
        out.append(json.loads(raw[6:]))
    return out
