// The stored history (GET /v1/conversations/{id}/messages) as useChat's UIMessage[], so a reloaded page shows the
// conversation and useChat resends exactly what the gateway stored (it compares the resent history with its own).
//
// One UI assistant message per reply block, as the AI SDK builds it: an assistant message, its tool results, and the
// assistant messages that continue it (after client-side tool results) until the next user message; its id is the
// first stored reply's id, which is also the `messageId` of the live stream's `start` chunk. A reply still
// `in_progress` that starts a block is included: useChat({resume: true}) replays it under the same id and replaces it.

function toolPart(call, result) {
  let input = {};
  try {
    input = JSON.parse(call.function.arguments || "{}");
  } catch {
    input = {};
  }
  const part = { type: `tool-${call.function.name}`, toolCallId: call.id, input };
  // The output stays the stored string: resent as is, it matches the stored tool message byte for byte.
  return result ? { ...part, state: "output-available", output: result.content } : { ...part, state: "input-available" };
}

export function toUiMessages(stored) {
  const out = [];
  let current = null; // the assistant UI message being built
  for (let i = 0; i < stored.length; i += 1) {
    const m = stored[i];
    if (m.role === "tool") continue; // attached to its call below
    if (m.role !== "assistant") {
      current = null;
      const text = typeof m.content === "string" ? m.content : (m.content ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
      out.push({ id: m.id, role: m.role === "developer" ? "system" : m.role, parts: [{ type: "text", text }] });
      continue;
    }
    if (current !== null && m.status === "in_progress") {
      // A continuation still being written resumes under its own stored id (the reconnect stream's messageId), so
      // it is left to `resume` as a message of its own; resent later, the two still match the stored history.
      current = null;
      continue;
    }
    if (current === null) {
      current = { id: m.id, role: "assistant", metadata: { status: m.status }, parts: [] };
      out.push(current);
    }
    current.metadata = { status: m.status };
    current.parts.push({ type: "step-start" });
    if (m.content) current.parts.push({ type: "text", text: m.content, state: "done" });
    for (const call of m.tool_calls ?? []) {
      const result = stored.slice(i + 1).find((r) => r.role === "tool" && r.tool_call_id === call.id);
      current.parts.push(toolPart(call, result));
    }
  }
  return out;
}

// The characters of the reply being streamed that this page shows (the text after the message's last step start):
// sent as Last-Event-ID to the stop route, so the stored reply keeps exactly what the user saw.
export function shownCharacters(message) {
  if (!message || message.role !== "assistant") return 0;
  const last = message.parts.map((p) => p.type).lastIndexOf("step-start");
  const text = message.parts.slice(last + 1).filter((p) => p.type === "text").map((p) => p.text).join("");
  return [...text].length; // code points, as the gateway counts them
}
