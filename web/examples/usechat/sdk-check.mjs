// Judge Sigstream's output with the AI SDK's own code (the installed `ai` 7 and `ai` 6 packages), for the Python tests.
//
//   node sdk-check.mjs streams  < {"cases": [{"name", "body", "format": "ui" | "text"}]}
//   node sdk-check.mjs convert  < {"cases": [{"name", "messages": UIMessage[]}]}
//   node sdk-check.mjs request  < {"messages": UIMessage[], "body": {...}}
//   node sdk-check.mjs live     < {"cases": [{"name", "api", "format", "chatId", "messages", "trigger", "messageId",
//                                  "body", "reconnect"}]}
//
// streams: every SSE event is parsed and validated by the SDK's parseJsonEventStream + uiMessageChunkSchema (both
// majors), the stream goes through DefaultChatTransport (or TextStreamChatTransport) with a fetch that returns it, and
// readUIMessageStream builds the final UIMessage. convert: what convertToModelMessages + @ai-sdk/openai would send
// OpenAI for those UI messages (captured from its fetch). request: what DefaultChatTransport POSTs and where it
// reconnects. Prints one JSON document.
import * as ai7 from "ai";
import * as ai6 from "ai-v6";
import { createOpenAI } from "@ai-sdk/openai";

const API = "https://fn.example/v1/chat";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function responseOf(body, format) {
  const headers =
    format === "text"
      ? { "content-type": "text/plain; charset=utf-8" }
      : { "content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1" };
  return new Response(new TextEncoder().encode(body), { status: 200, headers });
}

async function validateChunks(sdk, body) {
  const results = [];
  const stream = sdk.parseJsonEventStream({ stream: responseOf(body, "ui").body, schema: sdk.uiMessageChunkSchema });
  for await (const result of stream) {
    results.push(result.success ? { ok: true, type: result.value.type } : { ok: false, error: String(result.error) });
  }
  return results;
}

async function finalMessage(sdk, chunkStream) {
  let message = null;
  const errors = [];
  for await (const snapshot of sdk.readUIMessageStream({ stream: chunkStream, onError: (e) => errors.push(String(e)) })) {
    message = snapshot;
  }
  return { message, errors };
}

async function throughTransport(sdk, body, format) {
  const Transport = format === "text" ? sdk.TextStreamChatTransport : sdk.DefaultChatTransport;
  const transport = new Transport({ api: API, fetch: async () => responseOf(body, format) });
  const chunks = await transport.sendMessages({
    chatId: "chat-1",
    messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  const [forTypes, forMessage] = chunks.tee();
  const types = [];
  const typesDone = (async () => {
    for await (const chunk of forTypes) types.push(chunk.type);
  })().catch((e) => types.push(`THROWN: ${e}`));
  const { message, errors } = await finalMessage(sdk, forMessage);
  await typesDone;
  const text = (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
  return { types, message, errors, text };
}

async function streams({ cases }) {
  const out = [];
  for (const { name, body, format } of cases) {
    const result = { name };
    for (const [label, sdk] of [["v7", ai7], ["v6", ai6]]) {
      try {
        result[label] = {
          chunks: format === "text" ? [] : await validateChunks(sdk, body),
          ...(await throughTransport(sdk, body, format)),
        };
      } catch (error) {
        result[label] = { thrown: String(error?.stack ?? error) };
      }
    }
    out.push(result);
  }
  return out;
}

async function convert({ cases }) {
  const out = [];
  for (const { name, messages } of cases) {
    let sent = null;
    const provider = createOpenAI({
      apiKey: "test-key", // pragma: allowlist secret (a placeholder: the fetch is captured)
      fetch: async (_url, init) => {
        sent = JSON.parse(init.body);
        return new Response(JSON.stringify({ error: { message: "captured", type: "x", code: "x" } }), {
          status: 400,
          headers: { "content-type": "application/json" },
        });
      },
    });
    try {
      // ai 7 refuses system messages in `messages` ("use the instructions option"): pass them as instructions.
      const modelMessages = await ai7.convertToModelMessages(messages);
      const system = modelMessages.filter((m) => m.role === "system").map((m) => m.content);
      const rest = modelMessages.filter((m) => m.role !== "system");
      let failure = null;
      const instructions = system.length ? { instructions: system.join("\n") } : {};
      await ai7
        .generateText({ model: provider.chat("gpt-4o"), messages: rest, ...instructions, maxRetries: 0 })
        .catch((error) => (failure = String(error?.message ?? error)));
      out.push(sent ? { name, messages: sent.messages } : { name, thrown: failure });
    } catch (error) {
      out.push({ name, thrown: String(error?.message ?? error) });
    }
  }
  return out;
}

async function request({ messages, body }) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: String(url), method: init.method, headers: init.headers, body: init.body ? JSON.parse(init.body) : null });
    return new Response(null, { status: 204 });
  };
  const transport = new ai7.DefaultChatTransport({ api: API, fetch, body });
  await transport
    .sendMessages({ chatId: "chat-1", messages, trigger: "regenerate-message", messageId: "a1", abortSignal: undefined })
    .catch(() => {});
  const resumed = await transport.reconnectToStream({ chatId: "chat-1" });
  return { calls, reconnect204IsNull: resumed === null };
}

// live: real requests to a running gateway through the SDK's own transports (ai 7: DefaultChatTransport or
// TextStreamChatTransport, with async prepare* hooks returning the signed URL as useChat apps do); the body the
// gateway sent is then judged chunk by chunk by both majors' schema, and readUIMessageStream builds the message.
async function live({ cases }) {
  const out = [];
  for (const c of cases) {
    const result = { name: c.name };
    let captured = null;
    const fetchAndKeep = async (url, init) => {
      const response = await globalThis.fetch(url, init);
      const text = response.status === 204 ? null : await response.text();
      captured = { status: response.status, headers: Object.fromEntries(response.headers), body: text };
      return new Response(text, { status: response.status, headers: response.headers });
    };
    const Transport = c.format === "text" ? ai7.TextStreamChatTransport : ai7.DefaultChatTransport;
    const transport = new Transport({
      api: "https://unused.example/api/chat",
      fetch: fetchAndKeep,
      body: c.body ?? {},
      headers: c.format === "text" ? { accept: "text/plain" } : {},
      prepareSendMessagesRequest: async ({ id, messages, trigger, messageId, body, headers }) => ({
        api: c.api,
        headers,
        body: { ...body, id, messages, trigger, messageId },
      }),
      prepareReconnectToStreamRequest: async ({ headers }) => ({ api: c.api, headers }),
    });
    try {
      const stream = c.reconnect
        ? await transport.reconnectToStream({ chatId: c.chatId })
        : await transport.sendMessages({
            chatId: c.chatId,
            messages: c.messages,
            trigger: c.trigger ?? "submit-message",
            messageId: c.messageId,
            abortSignal: undefined,
          });
      if (stream === null) {
        result.transport = { none: true };
      } else {
        const types = [];
        for await (const chunk of stream) types.push(chunk.type);
        result.transport = { types };
      }
    } catch (error) {
      result.transport = { thrown: String(error?.message ?? error), statusCode: error?.statusCode ?? null };
    }
    result.response = captured;
    if (captured?.body && captured.status === 200) {
      for (const [label, sdk] of [["v7", ai7], ["v6", ai6]]) {
        if (c.format === "text") {
          result[label] = await throughTransport(sdk, captured.body, "text");
        } else {
          const chunks = await validateChunks(sdk, captured.body);
          const parsed = sdk.parseJsonEventStream({ stream: responseOf(captured.body, "ui").body, schema: sdk.uiMessageChunkSchema });
          const values = parsed.pipeThrough(new TransformStream({ transform: (r, ctl) => r.success && ctl.enqueue(r.value) }));
          result[label] = { chunks, ...(await finalMessage(sdk, values)) };
        }
      }
    }
    out.push(result);
  }
  return out;
}

const command = process.argv[2];
const handlers = { streams, convert, request, live };
if (!handlers[command]) {
  console.error(`usage: node sdk-check.mjs ${Object.keys(handlers).join("|")} < input.json`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(await handlers[command](await readStdin())));
