// The official `openai` npm package streaming through a Sigstream signed URL (Node 18+ or a browser).
// Usage: node stream-chat.mjs '<JSON returned by POST /sign>' "your question"
import OpenAI from "openai";

const signed = JSON.parse(process.argv[2]);
const question = process.argv[3] ?? "Say hello.";

// The SDK appends /chat/completions to baseURL; the signature travels as default query parameters.
// The provider key is never here: apiKey is required by the SDK but unused by the gateway.
const client = new OpenAI({ baseURL: signed.base_url, defaultQuery: signed.query, apiKey: "unused", maxRetries: 0 });

const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  stream: true,
  messages: [{ role: "user", content: question }],
});
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
}
process.stdout.write("\n");
