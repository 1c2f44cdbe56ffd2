// The AI SDK's multi-step tool loop (streamText with stopWhen) through @ai-sdk/openai on a Sigstream
// conversation URL: each step resends the history the SDK holds (assistant tool calls and tool results included).
// Usage: node tool-loop.mjs '<JSON returned by POST /sign>' "your question"   -> one JSON line on stdout
import { jsonSchema, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const signed = JSON.parse(process.argv[2]);
const question = process.argv[3] ?? "What is the weather in Paris?";
// The signature travels as query parameters on every request the provider package makes.
const signedFetch = (input, init) => {
  const url = new URL(typeof input === "string" ? input : input.url);
  for (const [name, value] of Object.entries(signed.query)) url.searchParams.set(name, value);
  return fetch(url, init);
};
const NOT_THE_PROVIDER_KEY = "unused"; // required by the package, ignored by the gateway
const openai = createOpenAI({ baseURL: signed.base_url, apiKey: NOT_THE_PROVIDER_KEY, fetch: signedFetch });

const calls = [];
const result = streamText({
  model: openai.chat("local-echo-1"),
  prompt: question,
  stopWhen: stepCountIs(2),
  tools: {
    get_weather: tool({
      description: "The weather in a city",
      inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
      execute: async ({ city }) => {
        calls.push({ city });
        return { city, sky: "sunny" };
      },
    }),
  },
});
let text = "";
for await (const delta of result.textStream) text += delta;
const steps = await result.steps;
process.stdout.write(JSON.stringify({ text, calls, steps: steps.length }) + "\n");
