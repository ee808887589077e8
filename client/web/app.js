// The chat page: conversations kept in this browser, answers streamed from /v1/chat/completions, and the
// gestures people give (thumbs, regenerate and pick the better answer) sent to /v1/feedback.
// Model output is Markdown rendered by marked and sanitized by DOMPurify before it touches the page.
"use strict";

const store = {
  get(name, fallback) {
    try { return JSON.parse(localStorage.getItem(`chatloop.${name}`)) ?? fallback; } catch { return fallback; }
  },
  set(name, value) { localStorage.setItem(`chatloop.${name}`, JSON.stringify(value)); },
};

const $ = (id) => document.getElementById(id);
const state = {
  conversations: store.get("conversations", []),
  activeId: store.get("active", null),
  controller: null, // the AbortController of the answer streaming now
};

function endUser() {
  // One anonymous id per browser: the `user` the server records, so that only this browser may rate its answers.
  let id = store.get("user", null);
  if (!id) { id = `web-${crypto.randomUUID()}`; store.set("user", id); }
  return id;
}

function save() {
  store.set("conversations", state.conversations);
  store.set("active", state.activeId);
}

function active() { return state.conversations.find((c) => c.id === state.activeId); }

function newConversation() {
  const conversation = { id: crypto.randomUUID(), title: "New chat", messages: [] };
  state.conversations.unshift(conversation);
  state.activeId = conversation.id;
  save();
  render();
  $("prompt").focus();
}

// ---- rendering -----------------------------------------------------------------------------------------------

// Answers are written by whoever steers the model, so beyond scripts they lose what could restyle the page, phish
// with a form (the key is on this page), or tell another server who reads them and when (remote images and
// media); the page's Content-Security-Policy blocks the same things again.
const SANITIZE = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option", "iframe", "object", "embed",
    "link", "meta", "base"],
  FORBID_ATTR: ["style", "action", "formaction", "srcset", "background"],
};
const EMBEDS = new Set(["img", "video", "audio", "source", "track", "image"]);
const EMBED_URLS = ["src", "poster", "href", "xlink:href"];

function servedHere(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "data:" || parsed.origin === location.origin;
  } catch {
    return false;
  }
}

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (!EMBEDS.has(node.nodeName.toLowerCase())) return;
  const urls = EMBED_URLS.map((name) => node.getAttribute(name)).filter((url) => url !== null);
  if (!urls.every(servedHere)) node.remove();
});

// A task list's boxes as characters: form inputs never reach the page.
marked.use({ renderer: { checkbox: ({ checked }) => (checked ? "☑ " : "☐ ") } });

function markdown(text) {
  return DOMPurify.sanitize(marked.parse(text ?? ""), SANITIZE);
}

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// Icons drawn inline (Feather icons' paths, MIT): emoji fonts are missing on many Linux machines.
const ICONS = {
  up: '<path d="M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3"/>',
  down: '<path d="M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17"/>',
  trash: '<polyline points="3 6 5 6 21 6"/><path d="M19 6v14a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V6m3 0V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2"/>',
  edit: '<path d="M12 20h9"/><path d="M16.5 3.5a2.12 2.12 0 0 1 3 3L7 19l-4 1 1-4z"/>',
};

function icon(name) {
  const span = document.createElement("span");
  span.className = "icon";
  span.innerHTML = `<svg viewBox="0 0 24 24" width="15" height="15" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${ICONS[name]}</svg>`;
  return span;
}

function renderSidebar() {
  const list = $("conversations");
  list.replaceChildren(...state.conversations.map((c) => element("li", { class: c.id === state.activeId ? "active" : "" },
    element("button", { class: "open", type: "button", title: c.title, onclick: () => open(c.id) }, c.title),
    element("button", { class: "rename", type: "button", "aria-label": "Rename", onclick: () => rename(c) }, icon("edit")),
    element("button", { class: "delete", type: "button", "aria-label": "Delete", onclick: () => remove(c) }, icon("trash")),
  )));
}

function answerActions(conversation, message, index) {
  const last = index === conversation.messages.length - 1;
  const rate = (rating) => sendRating(message, message.rating === rating ? null : rating);
  const actions = element("div", { class: "actions" },
    element("button", { type: "button", class: "up", "aria-label": "Good answer", "aria-pressed": String(message.rating === "up"), onclick: () => rate("up") }, icon("up")),
    element("button", { type: "button", class: "down", "aria-label": "Bad answer", "aria-pressed": String(message.rating === "down"), onclick: () => rate("down") }, icon("down")),
    element("button", { type: "button", class: "copy", onclick: (e) => copy(message.content, e.target) }, "Copy"),
    last ? element("button", { type: "button", class: "regenerate", onclick: () => regenerate(conversation, index) }, "Regenerate") : "",
    element("span", { class: "version", title: "policy version that wrote this answer" }, message.version ?? ""),
  );
  if (message.rating !== "down" || message.reasonSent) return [actions];
  const input = element("input", { type: "text", placeholder: "What was wrong? (optional)", maxlength: "2000" });
  const send = () => { message.reasonSent = true; sendRating(message, "down", input.value.trim() || null); };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
  return [actions, element("div", { class: "reason" }, input,
    element("button", { type: "button", onclick: send }, "Send"),
    element("button", { type: "button", onclick: () => { message.reasonSent = true; save(); render(); } }, "Skip"))];
}

function messageNode(conversation, message, index) {
  const bubble = element("div", { class: "bubble" });
  if (message.role === "assistant") bubble.innerHTML = markdown(message.content);
  else bubble.textContent = message.content;
  const node = element("div", { class: `message ${message.role}` }, bubble);
  if (message.role === "assistant" && message.completionId) node.append(...answerActions(conversation, message, index));
  return node;
}

function render() {
  renderSidebar();
  const conversation = active();
  $("title").textContent = conversation?.title ?? "chatloop";
  const nodes = (conversation?.messages ?? []).map((m, i) => messageNode(conversation, m, i));
  if (conversation?.pending) nodes.push(comparisonNode(conversation));
  $("messages").replaceChildren(...nodes);
  $("messages").scrollTop = $("messages").scrollHeight;
  updateControls();
}

function updateControls() {
  $("send").hidden = Boolean(state.controller);
  $("stop").hidden = !state.controller;
  for (const button of document.querySelectorAll(".regenerate")) button.disabled = Boolean(state.controller);
}

function showError(text, retry) {
  const banner = $("banner");
  banner.replaceChildren(text, retry ? element("button", { type: "button", onclick: () => { hideError(); retry(); } }, "Retry") : "");
  banner.hidden = false;
}

function hideError() { $("banner").hidden = true; }

// ---- talking to the server -----------------------------------------------------------------------------------

function headers() {
  const key = $("api-key").value.trim();
  return { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
}

async function errorText(response) {
  let error = {};
  try { error = (await response.json()).error ?? {}; } catch { /* not JSON */ }
  if (response.status === 401) return "This server needs an API key: enter it under Settings.";
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return `Rate limited${wait ? `: try again in ${wait} s` : ""}.`;
  }
  if (error.code === "context_length_exceeded") return "This conversation is too long for the model: start a new chat.";
  return error.message ?? `The server answered ${response.status}.`;
}

// Streams one chat completion, calling onDelta(text so far, chunk) as pieces arrive; returns the final answer.
async function streamCompletion(messages, metadata, onDelta) {
  state.controller = new AbortController();
  updateControls();
  const answer = { content: "", completionId: null, version: null, finish: null };
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ model: $("model").value || "chatloop", temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value) || undefined, messages, stream: true, user: endUser(), metadata }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        answer.completionId = chunk.id;
        answer.version = chunk.system_fingerprint;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        answer.content += choice.delta?.content ?? "";
        answer.finish = choice.finish_reason ?? answer.finish;
        onDelta(answer);
      }
    }
    return answer;
  } catch (error) {
    if (error.name === "AbortError") return { ...answer, stopped: true };
    throw error instanceof TypeError ? new Error("The server is unreachable. Is chatloop running?") : error;
  } finally {
    state.controller = null;
    updateControls();
  }
}

function history(conversation, upTo = conversation.messages.length) {
  return conversation.messages.slice(0, upTo).map(({ role, content }) => ({ role, content }));
}

function liveBubble() {
  // The answer being streamed, rendered at most once a frame.
  const bubble = element("div", { class: "bubble" });
  const node = element("div", { class: "message assistant streaming" }, bubble);
  $("messages").append(node);
  let scheduled = false;
  return {
    node,
    update(answer) {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        bubble.innerHTML = markdown(answer.content);
        $("messages").scrollTop = $("messages").scrollHeight;
      });
    },
  };
}

async function ask(conversation) {
  hideError();
  const live = liveBubble();
  try {
    const answer = await streamCompletion(history(conversation), undefined, (a) => live.update(a));
    if (answer.completionId) {
      conversation.messages.push({ role: "assistant", content: answer.content, completionId: answer.completionId,
        choiceIndex: 0, version: answer.version, rating: null, stopped: answer.stopped ?? false });
    }
  } catch (error) {
    showError(error.message, () => ask(conversation));
  }
  save();
  render();
}

async function send(event) {
  event?.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  if (!active()) newConversation();
  const conversation = active();
  if (conversation.messages.length === 0) conversation.title = text.slice(0, 40);
  conversation.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  save();
  render();
  await ask(conversation);
}

async function postFeedback(body) {
  const response = await fetch("/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify({ ...body, user: endUser() }) });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

async function sendRating(message, rating, reason = null) {
  try {
    await postFeedback({ completion_id: message.completionId, choice_index: message.choiceIndex, rating, reason });
    message.rating = rating;
    if (rating !== "down") message.reasonSent = false;
    hideError();
  } catch (error) {
    showError(`Feedback not saved: ${error.message}`);
  }
  save();
  render();
}

// ---- regenerate and compare ----------------------------------------------------------------------------------

async function regenerate(conversation, index) {
  if (state.controller) return;
  hideError();
  const old = conversation.messages[index];
  const metadata = { regenerate_of: old.completionId, regenerate_choice: String(old.choiceIndex) };
  conversation.pending = { index, old, fresh: { role: "assistant", content: "" }, streaming: true };
  render();
  try {
    const answer = await streamCompletion(history(conversation, index), metadata, (a) => {
      conversation.pending.fresh.content = a.content;
      updateComparison(conversation);
    });
    conversation.pending.fresh = { role: "assistant", content: answer.content, completionId: answer.completionId,
      choiceIndex: 0, version: answer.version, rating: null };
    conversation.pending.streaming = false;
    if (!answer.completionId) delete conversation.pending;
  } catch (error) {
    delete conversation.pending;
    showError(error.message, () => regenerate(conversation, index));
  }
  save();
  render();
}

function comparisonNode(conversation) {
  const { old, fresh, streaming } = conversation.pending;
  const option = (label, cls) => element("div", { class: `option ${cls}` },
    element("strong", {}, label), element("div", { class: "bubble" }));
  const node = element("div", { class: "compare" },
    element("h2", {}, streaming ? "Regenerating…" : "Which answer is better?"),
    element("div", { class: "options" }, option("First", "first"), option("Second", "second")),
    streaming ? "" : element("div", { class: "choose" },
      element("button", { type: "button", class: "pick-first", onclick: () => choose(conversation, "first") }, "First is better"),
      element("button", { type: "button", class: "pick-second", onclick: () => choose(conversation, "second") }, "Second is better"),
      element("button", { type: "button", class: "pick-same", onclick: () => choose(conversation, "same") }, "About the same")));
  node.querySelector(".first .bubble").innerHTML = markdown(old.content);
  node.querySelector(".second .bubble").innerHTML = markdown(fresh.content);
  return node;
}

function updateComparison(conversation) {
  const bubble = document.querySelector(".compare .second .bubble");
  if (bubble) bubble.innerHTML = markdown(conversation.pending.fresh.content);
}

async function choose(conversation, pick) {
  const { index, old, fresh } = conversation.pending;
  const pointer = (m) => ({ completion_id: m.completionId, choice_index: m.choiceIndex });
  try {
    if (pick !== "same") {
      const [chosen, rejected] = pick === "first" ? [old, fresh] : [fresh, old];
      await postFeedback({ chosen: pointer(chosen), rejected: pointer(rejected) });
    }
  } catch (error) {
    showError(`Choice not saved: ${error.message}`);
    return;
  }
  conversation.messages[index] = pick === "first" ? old : fresh; // the chosen answer continues the conversation
  delete conversation.pending;
  save();
  render();
}

// ---- conversations and small things --------------------------------------------------------------------------

function open(id) {
  state.activeId = id;
  document.body.classList.remove("sidebar-open");
  save();
  render();
}

function rename(conversation) {
  const title = prompt("Rename conversation", conversation.title);
  if (title && title.trim()) { conversation.title = title.trim().slice(0, 80); save(); render(); }
}

function remove(conversation) {
  if (!confirm(`Delete "${conversation.title}"?`)) return;
  state.conversations = state.conversations.filter((c) => c.id !== conversation.id);
  if (state.activeId === conversation.id) state.activeId = state.conversations[0]?.id ?? null;
  save();
  render();
}

async function copy(text, button) {
  try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; } catch { button.textContent = "Copy failed"; }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function init() {
  $("api-key").value = store.get("key", "");
  $("api-key").addEventListener("change", (e) => store.set("key", e.target.value.trim()));
  for (const [field, fallback] of [["model", "chatloop"], ["temperature", "0.7"], ["max-tokens", ""]]) {
    $(field).value = store.get(field, fallback);
    $(field).addEventListener("change", (e) => store.set(field, e.target.value.trim()));
  }
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", newConversation);
  $("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  for (const conversation of state.conversations) if (conversation.pending?.streaming) delete conversation.pending;
  if (!active()) state.activeId = state.conversations[0]?.id ?? null;
  render();
}

init();
