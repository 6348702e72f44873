// The demo page: plain JS, no build step, no external assets.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const text = $("text");
const buttons = [$("analyze"), $("chat"), $("send")];
const SESSION_KEY = "allinone.session";
let controller = null; // aborts the running request (the server then stops generating)

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
}

let sessionId = localStorage.getItem(SESSION_KEY) || newId();
localStorage.setItem(SESSION_KEY, sessionId);
showSession();

function showSession() {
  $("session").textContent = `会话 session: ${sessionId.slice(0, 8)}`;
}

function el(tag, cls, content) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (content !== undefined) node.textContent = content;
  return node;
}

function scrollDown() {
  log.scrollTop = log.scrollHeight;
}

function addTurn(userText) {
  $("empty").hidden = true;
  const turn = el("div", "turn");
  turn.appendChild(el("div", "bubble user", userText));
  log.appendChild(turn);
  scrollDown();
  return turn;
}

function addSentiment(turn, s) {
  const line = el("div", `sentiment ${s.label}`, s.display);
  line.dataset.label = s.label;
  const p = s.probabilities && s.probabilities[s.label];
  if (p !== undefined) line.appendChild(el("span", "prob", `${Math.round(p * 100)}%`));
  turn.appendChild(line);
  scrollDown();
}

function addReply(turn) {
  const bubble = el("div", "bubble assistant waiting");
  turn.appendChild(bubble);
  scrollDown();
  return bubble;
}

function ms(v) {
  if (v === null || v === undefined) return null;
  return v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
}

function addMeta(turn, timing, usage, right) {
  const parts = [];
  if (timing.sentiment_ms) parts.push(`情感 ${ms(timing.sentiment_ms)}`);
  if (timing.first_token_ms) parts.push(`首字 ${ms(timing.first_token_ms)}`);
  parts.push(`共 ${ms(timing.total_ms)}`);
  let tokens = `提示 ${usage.prompt_tokens} tokens（缓存 ${usage.cached_tokens}）`;
  if (usage.completion_tokens) tokens += ` · 生成 ${usage.completion_tokens}`;
  parts.push(tokens);
  turn.appendChild(el("div", right ? "meta right" : "meta", "⏱ " + parts.join(" · ")));
  scrollDown();
}

function addError(turn, err) {
  const e = (err && err.error) || { message: String(err) };
  const msg = e.message_zh && !e.message.includes(e.message_zh) ? `${e.message_zh} · ${e.message}` : e.message;
  turn.appendChild(el("div", "error", `出错了 Error: ${msg}`));
  scrollDown();
}

// API key (only when the server asks for one): kept in localStorage, sent as a Bearer token.
const API_KEY = "allinone.apiKey";
function authHeaders(extra = {}) {
  const key = localStorage.getItem(API_KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}
function askForKey() {
  $("keybox").hidden = false;
  $("apikey").focus();
}
$("apikey").value = localStorage.getItem(API_KEY) || "";
$("apikey").addEventListener("input", () => {
  const key = $("apikey").value.trim();
  if (key) localStorage.setItem(API_KEY, key); else localStorage.removeItem(API_KEY);
});

async function post(path, body, signal) {
  const res = await fetch(path, {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
    signal,
  });
  if (res.status === 401) askForKey();
  if (!res.ok) {
    let err;
    try { err = await res.json(); } catch { err = { error: { message: `HTTP ${res.status}` } }; }
    throw err;
  }
  return res;
}

// Server-sent events from a POST: yields {event, data} as they arrive.
async function* events(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function busy(on) {
  buttons.forEach((b) => { b.disabled = on; });
  $("stop").hidden = !on;
  if (!on) controller = null;
}

async function run(action) {
  const value = text.value;
  text.value = "";
  const turn = addTurn(value.trim() ? value : "（空 empty）"); // the server answers 400 请输入文本
  controller = new AbortController();
  busy(true);
  try {
    await action(turn, value, controller.signal);
  } catch (err) {
    if (err && err.name === "AbortError") {
      turn.appendChild(el("div", "meta", "已停止 stopped"));
    } else {
      addError(turn, err);
    }
  } finally {
    turn.querySelectorAll(".waiting").forEach((b) => b.classList.remove("waiting"));
    busy(false);
    text.focus();
  }
}

async function analyze(turn, value, signal) {
  const res = await post("/v1/tasks/sentiment", { text: value }, signal);
  const r = await res.json();
  addSentiment(turn, r);
  addMeta(turn, r.timing, r.usage, true);
}

async function stream(turn, res) {
  let bubble = null;
  for await (const { event, data } of events(res)) {
    if (event === "sentiment") {
      addSentiment(turn, data);
    } else if (event === "token") {
      bubble = bubble || addReply(turn);
      bubble.textContent += data.text;
      scrollDown();
    } else if (event === "done") {
      bubble = bubble || addReply(turn);
      if (!bubble.textContent) bubble.textContent = "（空回复 empty reply）";
      bubble.classList.remove("waiting");
      addMeta(turn, data.timing, data.usage, false);
    } else if (event === "error") {
      addError(turn, data);
    }
  }
}

async function chat(turn, value, signal) {
  const res = await post("/v1/tasks/chat", { text: value, session_id: sessionId, stream: true }, signal);
  await stream(turn, res);
}

async function send(turn, value, signal) {
  const res = await post("/v1/analyze_and_reply", { text: value, session_id: sessionId, stream: true }, signal);
  await stream(turn, res);
}

async function restore() {
  const res = await fetch(`/v1/sessions/${sessionId}`, { headers: authHeaders() });
  if (res.status === 401) askForKey();
  if (!res.ok) return;
  const s = await res.json();
  let turn = null;
  for (const t of s.turns) {
    if (t.role === "user") {
      turn = addTurn(t.content);
      if (t.sentiment) turn.appendChild(el("div", "sentiment", `LLM 情感判断: ${t.sentiment}`));
    } else if (turn) {
      turn.appendChild(el("div", "bubble assistant", t.content));
    }
  }
}

async function health() {
  const badge = $("health");
  try {
    const res = await fetch("/health");
    const h = await res.json();
    badge.textContent = h.ready ? "模型就绪 ready" : "模型加载中… loading";
    if (h.ready) badge.appendChild(el("span", "model", ` · ${h.model}`));
    badge.title = h.model || "";
    badge.className = h.ready ? "badge ok" : "badge";
  } catch {
    badge.textContent = "未连接 offline";
    badge.className = "badge bad";
  }
}

$("analyze").addEventListener("click", () => run(analyze));
$("chat").addEventListener("click", () => run(chat));
$("composer").addEventListener("submit", (e) => { e.preventDefault(); run(send); });
$("stop").addEventListener("click", () => controller && controller.abort());
text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!$("send").disabled) run(send);
  }
});
$("reset").addEventListener("click", async () => {
  if (controller) controller.abort();
  fetch(`/v1/sessions/${sessionId}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  sessionId = newId();
  localStorage.setItem(SESSION_KEY, sessionId);
  showSession();
  log.querySelectorAll(".turn").forEach((t) => t.remove());
  $("empty").hidden = false;
  text.focus();
});

health();
restore().catch(() => {});
text.focus();
