// openai-node's runTools tool loop on a Sigstream conversation URL: the SDK resends the whole history each step
// (assistant tool_calls and tool results included); the gateway stores each message once.
// Usage: node run-tools.mjs '<JSON returned by POST /sign>' "your question"
import OpenAI from "openai";

const signed = JSON.parse(process.argv[2]);
const question = process.argv[3] ?? "What is the weather in Paris?";
// The SDK requires an apiKey; the gateway ignores it (the provider key never leaves the Stream function).
const NOT_THE_PROVIDER_KEY = "unused";
const client = new OpenAI({ baseURL: signed.base_url, defaultQuery: signed.query, apiKey: NOT_THE_PROVIDER_KEY, maxRetries: 0 });

const calls = [];
const runner = client.chat.completions.runTools({
  model: "local-echo-1",
  stream: true,
  messages: [{ role: "user", content: question }],
  tools: [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather in a city",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        parse: JSON.parse,
        function: (args) => {
          calls.push(args);
          return { city: args.city, sky: "sunny" };
        },
      },
    },
  ],
});
const content = await runner.finalContent();
process.stdout.write(JSON.stringify({ content, calls, messages: runner.messages.length }) + "\n");
