// useChat from @ai-sdk/react against a Sigstream Function URL: the UI message stream, resume on load, Stop through the
// stop route, regenerate, a client-side tool, and errors. Configured by window.SIGSTREAM_USECHAT (see README.md).
import { Chat, useChat } from "@ai-sdk/react";
import { DefaultChatTransport, TextStreamChatTransport, lastAssistantMessageIsCompleteWithToolCalls } from "ai";
import { StrictMode, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import { signedUrlSource } from "./signed-urls.js";
import { shownCharacters, toUiMessages } from "./stored-messages.js";

const config = window.SIGSTREAM_USECHAT ?? {};
const signedUrl = signedUrlSource(config.backend ?? "/backend/signed-url");
const textMode = new URLSearchParams(location.search).get("transport") === "text";

// The stored history, so a reload shows the conversation (and a reply in progress, which `resume` then follows).
async function storedHistory() {
  const response = await fetch(`${await signedUrl("messages", config.chatId)}&limit=100`);
  if (response.status === 404) return []; // a new conversation: nothing stored yet
  if (!response.ok) throw new Error(`could not load the history (${response.status})`);
  return toUiMessages((await response.json()).data);
}
const history = config.messages ?? (await storedHistory());

// Tools the model may call; they run here in the browser (onToolCall), and their definitions go to the provider.
const TOOLS = [
  {
    type: "function",
    function: {
      name: "getLocation",
      description: "The user's current city.",
      parameters: { type: "object", properties: {}, additionalProperties: false },
    },
  },
];

function makeTransport() {
  const options = {
    body: { tools: TOOLS },
    // Async: a fresh signed URL per request. The body is what DefaultChatTransport would send by default.
    prepareSendMessagesRequest: async ({ id, messages, trigger, messageId, body, headers }) => ({
      api: await signedUrl("chat", id),
      headers,
      body: { ...body, id, messages, trigger, messageId },
    }),
    prepareReconnectToStreamRequest: async ({ id, headers }) => ({ api: await signedUrl("stream", id), headers }),
  };
  return textMode
    ? new TextStreamChatTransport({ ...options, headers: { accept: "text/plain" } })
    : new DefaultChatTransport(options);
}

function Part({ part }) {
  if (part.type === "text") return <span data-testid="text">{part.text}</span>;
  if (part.type === "dynamic-tool" || part.type.startsWith("tool-")) {
    const name = part.type === "dynamic-tool" ? part.toolName : part.type.slice(5);
    return (
      <span data-testid="tool" data-tool={name} data-state={part.state}>
        [{name}: {part.state}
        {part.output !== undefined ? ` → ${JSON.stringify(part.output)}` : ""}]
      </span>
    );
  }
  return null;
}

function ChatView() {
  const [input, setInput] = useState("");
  const chat = useMemo(() => {
    const instance = new Chat({
      id: config.chatId, // the conversation id the signed URLs are issued for (another id is refused with a 400)
      messages: history,
      transport: makeTransport(),
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
      onToolCall({ toolCall }) {
        if (toolCall.dynamic) return;
        if (toolCall.toolName === "getLocation") {
          // Not awaited: addToolResult inside onToolCall must not wait for the chat it is part of.
          instance.addToolResult({ tool: "getLocation", toolCallId: toolCall.toolCallId, output: { city: "Paris" } });
        }
      },
    });
    return instance;
  }, []);
  const { messages, sendMessage, status, error, stop, regenerate, clearError } = useChat({
    chat,
    resume: config.resume !== false, // reload mid-answer: GET {api}/{id}/stream replays the reply in progress
  });

  async function stopBoth() {
    // stop() only aborts this fetch; AWS keeps the function (and the provider) running unless asked to stop.
    // Last-Event-ID: how much of the reply this page shows, so the stored reply is exactly that.
    const shown = shownCharacters(chat.messages.at(-1));
    await stop();
    const url = await signedUrl("stop", config.chatId);
    const answer = await fetch(url, { method: "POST", headers: { "last-event-id": String(shown) } })
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null);
    // The reply had already ended (`stopped: false`: stored whole): show what is stored, which the next request
    // resends; a page showing less would no longer match the history.
    if (answer && !answer.stopped) chat.messages = await storedHistory();
    // The stop request failed: the turn runs on and is stored whole, so follow it to its end (a replay of the reply
    // in progress), then show what is stored.
    if (!answer) {
      await chat.resumeStream();
      chat.messages = await storedHistory();
    }
  }

  return (
    <main>
      <h1>useChat → Sigstream {textMode ? "(text stream)" : "(UI message stream)"}</h1>
      <ol data-testid="messages">
        {messages.map((m) => (
          <li key={m.id} data-testid="message" data-role={m.role} data-id={m.id}>
            <b>{m.role}:</b> {m.parts.map((part, i) => <Part key={i} part={part} />)}
          </li>
        ))}
      </ol>
      {error && (
        <div data-testid="error" role="alert">
          {error.message} <button onClick={clearError}>Dismiss</button>
        </div>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (!input.trim()) return;
          sendMessage({ text: input });
          setInput("");
        }}
      >
        <input data-testid="input" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Say something" />
        <button type="submit" data-testid="send" disabled={status !== "ready" && status !== "error"}>Send</button>
        <button type="button" data-testid="stop" onClick={stopBoth} disabled={status !== "streaming" && status !== "submitted"}>Stop</button>
        <button type="button" data-testid="regenerate" onClick={() => regenerate()} disabled={status !== "ready" && status !== "error"}>Regenerate</button>
      </form>
      <p data-testid="status" data-state={status}>{status}</p>
    </main>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <ChatView />
  </StrictMode>,
);
