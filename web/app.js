// Sigstream demo chat: signed URLs from the backend, answers streamed token by token, text-only rendering.
import { SseParser } from "./sse.js";

const $ = (id) => document.getElementById(id);
const ui = {
  list: $("conversations"), messages: $("messages"), input: $("input"), send: $("send"),
  stop: $("stop"), status: $("status"), error: $("error"), newChat: $("new-chat"), form: $("composer"),
};
const RETRY = { firstDelayMs: 1000, maxDelayMs: 8000, tries: 4 };
const state = { conversationId: null, chatUrl: null, controller: null, busy: false };

class HttpError extends Error {
  constructor(status, body, headers) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status; this.code = body?.error?.code; this.retryAfter = headers?.get("retry-after");
  }
}

function setStatus(kind, text) { ui.status.dataset.state = kind; ui.status.textContent = text; }
function showError(text) { ui.error.hidden = !text; ui.error.textContent = text || ""; }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function describe(err) {
  if (err instanceof HttpError) {
    if (err.code === "expired") return "This link has expired.";
    if (err.status === 429) return `Rate limited — try again in ${err.retryAfter || "a few"} seconds.`;
    if (err.status === 403) return "The link is not valid for this request.";
    if (err.status >= 500) return "The AI provider is unavailable right now (upstream down). Try again shortly.";
    return `Request refused: ${err.message}`;
  }
  return "Connection lost.";
}

async function sign(action, conversationId) {
  const r = await fetch("/api/sign", {
    method: "POST", headers: { "content-type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ action, conversation_id: conversationId || undefined }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new HttpError(r.status, body, r.headers);
  return body;
}

async function getJson(signed, method = "GET") {
  const r = await fetch(signed.url, { method });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new HttpError(r.status, body, r.headers);
  return body;
}

// ---- rendering: textContent only, so model output can never become markup or script ----
function addMessage(role, text, stateName = "done") {
  const el = document.createElement("div");
  el.className = "message"; el.dataset.role = role; el.dataset.state = stateName; el.dataset.testid = "message";
  const body = document.createElement("span"); body.className = "text"; body.textContent = text || "";
  el.append(body);
  ui.messages.append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}
function appendText(el, delta) { el.querySelector(".text").textContent += delta; el.scrollIntoView({ block: "end" }); }
function markMessage(el, stateName, note) {
  el.dataset.state = stateName;
  el.querySelector(".note")?.remove();
  if (note) { const n = document.createElement("span"); n.className = "note"; n.textContent = note; el.append(n); }
}

async function loadConversations() {
  const page = await getJson(await sign("list"));
  ui.list.replaceChildren(...page.data.map((c) => {
    const li = document.createElement("li");
    li.textContent = c.title || "New conversation"; li.dataset.id = c.id; li.dataset.testid = "conversation";
    li.setAttribute("aria-current", String(c.id === state.conversationId));
    li.addEventListener("click", () => openConversation(c.id));
    return li;
  }));
  return page.data;
}

async function openConversation(id) {
  if (state.busy) return;
  state.conversationId = id; state.chatUrl = null;
  history.replaceState(null, "", `#${id}`);
  for (const li of ui.list.children) li.setAttribute("aria-current", String(li.dataset.id === id));
  const page = await getJson(await sign("messages", id));
  ui.messages.replaceChildren();
  for (const m of page.data) {
    if (m.role !== "user" && m.role !== "assistant") continue;
    const el = addMessage(m.role, typeof m.content === "string" ? m.content : JSON.stringify(m.content));
    if (m.status === "incomplete") markMessage(el, "stopped", "(incomplete)");
  }
  return page.data;
}

async function chatUrl(fresh) {
  // Reused until the gateway says it expired (the browser's clock may be wrong; the server's is not).
  if (fresh || !state.chatUrl) {
    const signed = await sign("chat", state.conversationId);
    state.conversationId = signed.conversation_id;
    history.replaceState(null, "", `#${signed.conversation_id}`);  // a reload reopens this conversation
    state.chatUrl = signed.url;
  }
  return state.chatUrl;
}

// One POST, streamed into `el`. Resolves "done" | "stopped"; throws HttpError or a network error.
async function streamOnce(text, el, fresh) {
  state.controller = new AbortController();
  const url = await chatUrl(fresh);
  setStatus("connecting", "Connecting…");
  const r = await fetch(url, {
    method: "POST", signal: state.controller.signal, headers: { "content-type": "application/json" },
    body: JSON.stringify({ stream: true, messages: [{ role: "user", content: text }] }),
  });
  if (!r.ok) throw new HttpError(r.status, await r.json().catch(() => ({})), r.headers);
  setStatus("streaming", "Streaming…");
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const data of parser.feed(value)) {
        if (data === "[DONE]") { finished = true; continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) { markMessage(el, "error", `The answer was cut off: ${chunk.error.message}`); return "error"; }
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) appendText(el, delta);
      }
    }
  } catch (err) {
    if (err.name === "AbortError") return "stopped";
    throw err;
  }
  if (!finished) throw new TypeError("stream ended early");
  return "done";
}

async function send(text) {
  state.busy = true; ui.send.disabled = true; ui.stop.disabled = false; showError("");
  addMessage("user", text);
  let el = addMessage("assistant", "", "streaming");
  let renewed = false;
  let delay = RETRY.firstDelayMs;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const outcome = await streamOnce(text, el, false);
        if (outcome === "stopped") { markMessage(el, "stopped", "(stopped)"); setStatus("stopped", "Stopped"); }
        else if (outcome === "error") setStatus("error", "Answer cut off");
        else { markMessage(el, "done"); setStatus("idle", renewed ? "Ready (link renewed)" : "Ready"); }
        break;
      } catch (err) {
        if (err instanceof HttpError && err.code === "expired" && !renewed) {
          renewed = true; state.chatUrl = null;  // ask for a fresh URL once, then retry
          setStatus("connecting", "Link expired — getting a fresh one…");
          continue;
        }
        if (err instanceof HttpError) { markMessage(el, "error", describe(err)); showError(describe(err)); setStatus("error", "Error"); break; }
        // Network failure: back off, then re-read history so nothing is shown twice or lost.
        if (attempt >= RETRY.tries) { markMessage(el, "error", "Connection lost."); showError("Connection lost — giving up for now."); setStatus("error", "Offline"); break; }
        setStatus("retrying", `Connection lost — retrying in ${delay / 1000} s`);
        await sleep(delay); delay = Math.min(delay * 2, RETRY.maxDelayMs);
        const stored = await openConversation(state.conversationId).catch(() => null);
        const last = stored?.filter((m) => m.role === "user").at(-1);
        if (stored && last?.content === text && stored.at(-1)?.role === "assistant") { setStatus("idle", "Ready (recovered)"); break; }
        if (stored) addMessage("user", text);  // history was re-rendered without this turn: send it again
        else el.remove();
        el = addMessage("assistant", "", "streaming");
      }
    }
  } finally {
    state.busy = false; ui.send.disabled = false; ui.stop.disabled = true; state.controller = null;
    loadConversations().catch(() => {});
  }
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text || state.busy) return;
  ui.input.value = "";
  send(text);
});
ui.input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ui.form.requestSubmit(); } });
ui.stop.addEventListener("click", () => state.controller?.abort());
ui.newChat.addEventListener("click", () => {
  if (state.busy) return;
  state.conversationId = null; state.chatUrl = null; history.replaceState(null, "", "#");
  ui.messages.replaceChildren(); showError(""); setStatus("idle", "Ready");
  for (const li of ui.list.children) li.setAttribute("aria-current", "false");
});

(async () => {
  try {
    const conversations = await loadConversations();
    const wanted = location.hash.slice(1);
    const pick = conversations.find((c) => c.id === wanted) || conversations[0];
    if (pick) await openConversation(pick.id);
    setStatus("idle", "Ready");
  } catch (err) { showError(describe(err)); setStatus("error", "Error"); }
})();
