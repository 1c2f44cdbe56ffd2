// Sigstream demo chat: signed URLs from the backend, answers streamed token by token, text-only rendering.
// The server's history is the truth: a reply is stored from its start, so a reload shows it and resumes it
// (GET …/stream); Stop asks the server to stop (POST …/stop) and the page then shows what was stored.
import { SseParser, codePoints } from "./sse.js";

const $ = (id) => document.getElementById(id);
const ui = {
  list: $("conversations"), messages: $("messages"), input: $("input"), send: $("send"), stop: $("stop"),
  status: $("status"), error: $("error"), newChat: $("new-chat"), form: $("composer"), upstream: $("upstream-note"),
};
const RETRY = { firstDelayMs: 1000, maxDelayMs: 8000, tries: 4 };
const ROLES = { user: "You", assistant: "Assistant" };
const NOTES = { stopped: "(stopped)", incomplete: "(incomplete)" };
// `live`: the reply on screen as it streams — {conversationId, el, controller, position (its characters shown,
// as event ids count them), question (the user text it answers, if this page sent it), stopping, stopped}.
const state = { conversationId: null, chatUrl: null, busy: false, live: null, pending: null };

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
  if (body.embedded_upstream) ui.upstream.hidden = false;  // the local stack answers with its echo upstream
  return body;
}

async function call(action, conversationId, init = {}) {
  const r = await fetch((await sign(action, conversationId)).url, init);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new HttpError(r.status, body, r.headers);
  return body;
}

// ---- rendering: textContent only, so model output can never become markup or script ----
function addMessage(role, text, stateName = "done") {
  const el = document.createElement("div");
  el.className = "message"; el.dataset.role = role; el.dataset.state = stateName; el.dataset.testid = "message";
  const label = document.createElement("span"); label.className = "role"; label.textContent = ROLES[role] || role;
  const body = document.createElement("span"); body.className = "text"; body.textContent = text || "";
  el.append(label, body);
  ui.messages.append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}
const textOf = (el) => el.querySelector(".text").textContent;
function appendText(el, delta) { el.querySelector(".text").textContent += delta; el.scrollIntoView({ block: "end" }); }
function markMessage(el, stateName, note) {
  el.dataset.state = stateName;
  el.querySelector(".note")?.remove();
  if (note) { const n = document.createElement("span"); n.className = "note"; n.textContent = note; el.append(n); }
}

/** Show stored messages; returns the element of a reply still in progress at the end (to resume), or null. */
function renderMessages(messages) {
  ui.messages.replaceChildren();
  let live = null;
  for (const m of messages) {
    if (!(m.role in ROLES) || m.status === "superseded") continue;
    const text = typeof m.content === "string" ? m.content : m.content == null ? "" : JSON.stringify(m.content);
    const el = addMessage(m.role, text, m.status === "in_progress" ? "streaming" : "done");
    if (NOTES[m.status]) markMessage(el, "stopped", NOTES[m.status]);
    else if (!text && m.tool_calls?.length) markMessage(el, "done", `(called ${m.tool_calls.map((c) => c.function?.name).join(", ")})`);
    live = m.role === "assistant" && m.status === "in_progress" ? el : null;
  }
  return live;
}

function conversationItem(c) {
  const li = document.createElement("li");
  li.dataset.id = c.id; li.dataset.testid = "conversation";
  li.setAttribute("aria-current", String(c.id === state.conversationId));
  const title = document.createElement("button");
  title.type = "button"; title.className = "title"; title.textContent = c.title || "New conversation";
  title.addEventListener("click", () => showConversation(c.id));
  const del = document.createElement("button");
  del.type = "button"; del.className = "delete"; del.dataset.testid = "delete-conversation"; del.textContent = "×";
  del.setAttribute("aria-label", `Delete conversation: ${title.textContent}`);
  del.addEventListener("click", () => deleteConversation(c.id));
  li.append(title, del);
  return li;
}

async function loadConversations() {
  const page = await call("list");
  const items = page.data;
  // A conversation whose first turn has just been sent is shown at once, before the server lists it.
  if (state.pending && !items.some((c) => c.id === state.pending.id)) items.unshift(state.pending);
  else state.pending = null;
  ui.list.replaceChildren(...items.map(conversationItem));
  lockLiveConversation();
  return items;
}

function showPending(id, title) {
  if ([...ui.list.children].some((li) => li.dataset.id === id)) return;
  state.pending = { id, title };
  ui.list.prepend(conversationItem(state.pending));
}

function select(id) {
  state.conversationId = id; state.chatUrl = null;
  history.replaceState(null, "", id ? `#${id}` : "#");
  for (const li of ui.list.children) li.setAttribute("aria-current", String(li.dataset.id === id));
}

async function openConversation(id) {
  const page = await call("messages", id);
  return { messages: page.data, live: state.conversationId === id ? renderMessages(page.data) : null };
}

// A click in the list, or the page (re)loading: show the conversation and follow a reply still being written.
async function showConversation(id) {
  if (state.busy) return;
  select(id); showError("");
  try {
    const { live } = await openConversation(id);
    if (live) await resume(id, live);
    else setStatus("idle", "Ready");
  } catch (err) { showError(describe(err)); setStatus("error", "Error"); }
}

async function deleteConversation(id) {
  if (state.live?.conversationId === id) return;  // stop the answer first
  try {
    await call("delete", id, { method: "DELETE" });
    if (state.pending?.id === id) state.pending = null;
    if (state.conversationId === id && !state.busy) newChat();
    await loadConversations();
  } catch (err) { showError(describe(err)); }
}

function newChat() {
  select(null); ui.messages.replaceChildren(); showError(""); setStatus("idle", "Ready");
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

// ---- a reply on screen while it streams ----
function beginLive(conversationId, el, position = 0, question = null) {
  state.live = { conversationId, el, position, question, controller: new AbortController(), stopping: false, stopped: null };
  state.busy = true; ui.send.disabled = true; ui.stop.disabled = false;
  lockLiveConversation();
  return state.live;
}
function endLive() {
  state.live = null; state.busy = false; ui.send.disabled = false; ui.stop.disabled = true;
  lockLiveConversation();
}
// The conversation whose answer is on screen cannot be deleted (stop it first).
function lockLiveConversation() {
  for (const li of ui.list.children) li.querySelector(".delete").disabled = li.dataset.id === state.live?.conversationId;
}

// Reads an OpenAI SSE body into live.el. Resolves "done" | "stopped" | "error"; throws on a network failure.
// Event ids count the reply's characters so far: `live.position` is how much of the reply is on screen.
async function readReply(response, live) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) {
        if (live.stopping) return "stopped";  // nothing arriving after Stop is shown
        if (event.data === "[DONE]") { finished = true; continue; }
        const chunk = JSON.parse(event.data);
        if (chunk.error) { markMessage(live.el, "error", `The answer was cut off: ${chunk.error.message}`); return "error"; }
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) appendText(live.el, delta);
        if (/^[0-9]+$/.test(event.id ?? "")) live.position = Number(event.id);
      }
    }
  } catch (err) {
    if (err.name === "AbortError" || live.stopping) return "stopped";
    throw err;
  }
  if (live.stopping) return "stopped";
  if (!finished) throw new TypeError("stream ended early");
  return "done";
}

// Stop: nothing more is shown, the fetch is aborted, and the server is asked to keep exactly what is on screen.
function stop() {
  const live = state.live;
  if (!live || live.stopping) return;
  live.stopping = true;
  live.controller.abort();
  ui.stop.disabled = true;
  setStatus("stopping", "Stopping…");
  live.stopped = live.conversationId ? requestStop(live) : Promise.resolve(null);
}

async function requestStop(live) {
  // Stop right after Send: the turn may not be stored yet. Ask again briefly, until it is stopped or has ended.
  const deadline = Date.now() + 3000;
  for (;;) {
    let body = { stopped: false, message: null };
    try {
      body = await call("stop", live.conversationId, { method: "POST", headers: { "last-event-id": String(live.position) } });
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 404)) throw err;  // a new conversation, not stored yet
    }
    if (body.stopped || Date.now() > deadline) return body.message;
    const stored = (await call("messages", live.conversationId).catch(() => null))?.data || [];
    const last = stored.at(-1);
    const asked = stored.at(-2);
    if (last?.role === "assistant" && last.status !== "in_progress" && (live.question == null || asked?.content === live.question)) return last;
    await sleep(250);
  }
}

// After a stop: the page shows what the server stored, so what the user saw is what the history holds.
async function afterStop(live) {
  try { await live.stopped; } catch (err) { showError(describe(err)); }
  if (state.conversationId !== live.conversationId) return;
  if (!live.conversationId) { ui.messages.replaceChildren(); setStatus("stopped", "Stopped"); return; }  // never sent
  try {
    const { live: still } = await openConversation(live.conversationId);
    if (still) { markMessage(still, "stopped", "(stop requested)"); }
  } catch (err) {
    if (!(err instanceof HttpError && err.status === 404)) { showError(describe(err)); setStatus("error", "Error"); return; }
    ui.messages.replaceChildren();  // the turn never reached the server: nothing is stored
    if (state.pending?.id === live.conversationId) state.pending = null;
  }
  setStatus("stopped", "Stopped");
}

// Follow a reply the server is still writing (after a reload or a dropped connection), from what is on screen.
async function resume(id, el, round = 1) {
  const live = beginLive(id, el, codePoints(textOf(el)));
  setStatus("streaming", "Resuming the answer…");
  let delay = RETRY.firstDelayMs;
  let outcome = "done";
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const headers = live.position ? { "last-event-id": String(live.position) } : {};
        const r = await fetch((await sign("stream", id)).url, { signal: live.controller.signal, headers });
        if (r.status === 204) break;  // it ended between the two reads: the stored reply is shown below
        if (!r.ok) throw new HttpError(r.status, await r.json().catch(() => ({})), r.headers);
        outcome = await readReply(r, live);
        break;
      } catch (err) {
        if (err.name === "AbortError" || live.stopping) { outcome = "stopped"; break; }
        if (err instanceof HttpError || attempt >= RETRY.tries) throw err;
        setStatus("retrying", `Connection lost — retrying in ${delay / 1000} s`);
        await sleep(delay); delay = Math.min(delay * 2, RETRY.maxDelayMs);
      }
    }
  } catch (err) {
    markMessage(el, "error", describe(err)); showError(describe(err)); setStatus("error", "Error");
    endLive();
    return;
  }
  endLive();
  if (outcome === "stopped") { await afterStop(live); return; }
  // How it ended, as stored; a reply still being written (this stream gave up following it) is followed again.
  const stored = state.conversationId === id ? await openConversation(id).catch(() => null) : null;
  if (stored?.live && round < 3) { await resume(id, stored.live, round + 1); return; }
  setStatus(outcome === "error" ? "error" : "idle", outcome === "error" ? "Answer cut off" : "Ready");
}

// One POST, streamed into `live.el`. Resolves "done" | "stopped" | "error"; throws HttpError or a network error.
async function streamOnce(text, live, fresh) {
  const url = await chatUrl(fresh);
  live.conversationId = state.conversationId;
  showPending(state.conversationId, text);
  lockLiveConversation();
  setStatus("connecting", "Connecting…");
  const r = await fetch(url, {
    method: "POST", signal: live.controller.signal, headers: { "content-type": "application/json" },
    body: JSON.stringify({ stream: true, messages: [{ role: "user", content: text }] }),
  });
  if (!r.ok) throw new HttpError(r.status, await r.json().catch(() => ({})), r.headers);
  setStatus("streaming", "Streaming…");
  loadConversations().catch(() => {});  // the turn is stored from its start: the server lists it now
  return readReply(r, live);
}

async function send(text) {
  showError("");
  addMessage("user", text);
  const live = beginLive(state.conversationId, addMessage("assistant", "", "streaming"), 0, text);
  let renewed = false;
  let delay = RETRY.firstDelayMs;
  let follow = null;  // a reply the server kept writing after the connection dropped
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const outcome = await streamOnce(text, live, false);
        if (outcome === "stopped") follow = "stopped";
        else if (outcome === "error") setStatus("error", "Answer cut off");
        else {
          markMessage(live.el, "done"); setStatus("idle", renewed ? "Ready (link renewed)" : "Ready");
          // Shown as stored (e.g. stopped from another tab: the stream ends early with [DONE]); still busy, so
          // nothing typed meanwhile is wiped by the re-render.
          await openConversation(live.conversationId).catch(() => null);
        }
        break;
      } catch (err) {
        if (live.stopping || err.name === "AbortError") { follow = "stopped"; break; }
        if (err instanceof HttpError && err.code === "expired" && !renewed) {
          renewed = true; state.chatUrl = null;  // ask for a fresh URL once, then retry
          setStatus("connecting", "Link expired — getting a fresh one…");
          continue;
        }
        if (err instanceof HttpError) { markMessage(live.el, "error", describe(err)); showError(describe(err)); setStatus("error", "Error"); break; }
        // Network failure: back off, then re-read history so nothing is shown twice or lost.
        if (attempt >= RETRY.tries) { markMessage(live.el, "error", "Connection lost."); showError("Connection lost — giving up for now."); setStatus("error", "Offline"); break; }
        setStatus("retrying", `Connection lost — retrying in ${delay / 1000} s`);
        await sleep(delay); delay = Math.min(delay * 2, RETRY.maxDelayMs);
        if (live.stopping) { follow = "stopped"; break; }
        const stored = await openConversation(state.conversationId).catch(() => null);
        const users = stored?.messages.filter((m) => m.role === "user");
        if (stored && users.at(-1)?.content === text && stored.messages.at(-1)?.role === "assistant") {
          follow = stored.live;  // the server has the turn: show it (and follow it if still in progress)
          if (!follow) setStatus("idle", "Ready (recovered)");
          break;
        }
        if (stored) addMessage("user", text);  // history was re-rendered without this turn: send it again
        else live.el.remove();
        live.el = addMessage("assistant", "", "streaming");
        live.controller = new AbortController();
      }
    }
  } finally {
    endLive();
  }
  if (follow === "stopped") await afterStop(live);
  else if (follow) await resume(live.conversationId, follow);
  loadConversations().catch(() => {});
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text || state.busy) return;
  ui.input.value = "";
  send(text).catch((err) => { showError(describe(err)); setStatus("error", "Error"); });
});
ui.input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ui.form.requestSubmit(); } });
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  if (state.busy) return;
  newChat();
  for (const li of ui.list.children) li.setAttribute("aria-current", "false");
});

(async () => {
  try {
    const conversations = await loadConversations();
    const wanted = location.hash.slice(1);
    const pick = conversations.find((c) => c.id === wanted) || conversations[0];
    if (pick) await showConversation(pick.id);
    else setStatus("idle", "Ready");
  } catch (err) { showError(describe(err)); setStatus("error", "Error"); }
})();
