// Every browser request the AI SDK transports and openai-node's helpers make, each to its own path under `api`, so a
// test server can record the CORS preflight (Access-Control-Request-Headers) each one needs.
import { DefaultChatTransport, TextStreamChatTransport } from "ai";
import OpenAI from "openai";

const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text: "hi" }] }];

async function drain(stream) {
  const reader = stream.getReader();
  while (!(await reader.read()).done);
}

function openai(api, name, options = {}) {
  const baseURL = `${api}/${name}/v1`;
  const apiKey = "unused-the-url-is-signed"; // pragma: allowlist secret (the signed URL is the credential)
  return new OpenAI({ apiKey, baseURL, dangerouslyAllowBrowser: true, maxRetries: 0, ...options });
}

const request = { model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] };
const tools = [
  { type: "function", function: { name: "noop", function: () => "done", parameters: { type: "object", properties: {} } } },
];

export const PROBES = {
  "ai-default-send": async (api) =>
    drain(await new DefaultChatTransport({ api: `${api}/ai-default-send` }).sendMessages({ chatId: "c1", messages, trigger: "submit-message" })),
  "ai-default-reconnect": async (api) =>
    new DefaultChatTransport({ api: `${api}/ai-default-reconnect` }).reconnectToStream({ chatId: "c1" }),
  "ai-text-send": async (api) =>
    drain(
      await new TextStreamChatTransport({ api: `${api}/ai-text-send`, headers: { accept: "text/plain" } }).sendMessages({
        chatId: "c1",
        messages,
        trigger: "submit-message",
      }),
    ),
  "openai-create-stream": async (api) => {
    for await (const _ of await openai(api, "openai-create-stream").chat.completions.create({ ...request, stream: true }));
  },
  // organization / project (client) and a per-request timeout add OpenAI-Organization, OpenAI-Project and X-Stainless-Timeout.
  "openai-configured-client": async (api) => {
    const client = openai(api, "openai-configured-client", { organization: "org-x", project: "proj-x" });
    for await (const _ of await client.chat.completions.create({ ...request, stream: true }, { timeout: 30_000 }));
  },
  "openai-stream-helper": async (api) => openai(api, "openai-stream-helper").chat.completions.stream(request).finalChatCompletion(),
  "openai-parse": async (api) => openai(api, "openai-parse").chat.completions.parse(request),
  "openai-run-tools": async (api) => openai(api, "openai-run-tools").chat.completions.runTools({ ...request, tools }).finalContent(),
  "openai-run-tools-stream": async (api) =>
    openai(api, "openai-run-tools-stream").chat.completions.runTools({ ...request, tools, stream: true }).finalContent(),
};

window.runProbes = async (api) => {
  const results = {};
  for (const [name, probe] of Object.entries(PROBES)) {
    try {
      await probe(api);
      results[name] = "ok";
    } catch (error) {
      results[name] = `failed: ${error?.message ?? error}`;
    }
  }
  return results;
};

// openai-node's helpers against a real gateway from this (other) origin: a signed base_url + query as the Sign
// function returns them. Each result is the helper's final answer, or why it failed (a CORS refusal shows here).
window.runHelpers = async ({ baseURL, query }) => {
  const apiKey = "unused-the-url-is-signed"; // pragma: allowlist secret (the signed URL is the credential)
  const client = new OpenAI({ apiKey, baseURL, defaultQuery: query, dangerouslyAllowBrowser: true, maxRetries: 0 });
  const ask = (content) => ({ model: "local-echo-1", messages: [{ role: "user", content }] });
  const lookup = {
    type: "function",
    function: {
      name: "getLocation",
      function: () => ({ city: "Paris" }),
      parse: JSON.parse,
      parameters: { type: "object", properties: {} },
    },
  };
  const helpers = {
    stream: async () => (await client.chat.completions.stream(ask("via stream()")).finalChatCompletion()).choices[0].message.content,
    parse: async () => (await client.chat.completions.parse(ask("via parse()"))).choices[0].message.content,
    runTools: async () => {
      const runner = client.chat.completions.runTools({ ...ask("via runTools()"), tools: [lookup], stream: true });
      return { content: await runner.finalContent(), messages: runner.messages.map((m) => m.role) };
    },
  };
  const results = {};
  for (const [name, helper] of Object.entries(helpers)) {
    try {
      results[name] = { ok: await helper() };
    } catch (error) {
      results[name] = { failed: String(error?.message ?? error) };
    }
  }
  return results;
};
