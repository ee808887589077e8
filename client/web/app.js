// The chat page. A person signs in (a password, or a one-time link: /#signin=TOKEN) and the server keeps their
// conversations (/v1/conversations), so that they follow the person from one browser to another; answers stream
// from /v1/chat/completions and the gestures people give (thumbs, regenerate and pick the better answer) go to
// /v1/feedback. The session is an HttpOnly cookie the page never sees: this browser keeps only the page's settings.
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
  account: null, // the signed-in account as /v1/auth/session describes it; null while signed out
  joining: "closed",
  conversations: [], // newest first: summaries ({id, title, updated}) until opened, then the whole conversation
  activeId: null,
  controller: null, // the AbortController of the answer streaming now
  writes: Promise.resolve(), // the server's copy is written in the order the page changed it
};

function active() { return state.conversations.find((c) => c.id === state.activeId); }

// ---- rendering -----------------------------------------------------------------------------------------------

// Answers are written by whoever steers the model, so beyond scripts they lose what could restyle the page, phish
// with a form (asking for the password), or tell another server who reads them and when (remote images and
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

// A tool call the model wrote in its own format (Hermes's <tool_call>, as the default model's family writes them)
// shown as a call: the function's name, then its arguments laid out. One that does not parse stays as written.
const TOOL_CALL = /<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g;

function readableToolCalls(text) {
  return text.replace(TOOL_CALL, (written, body) => {
    try {
      const call = JSON.parse(body);
      const name = String(call.name ?? "").replace(/[^\w.-]/g, "");
      const args = JSON.stringify(call.arguments ?? call.parameters ?? {}, null, 2).replaceAll("```", "`\u200b``");
      return `\n\n**Tool call: \`${name}\`**\n\n\`\`\`json\n${args}\n\`\`\`\n\n`;
    } catch {
      return written;
    }
  });
}

function markdown(text) {
  return DOMPurify.sanitize(marked.parse(readableToolCalls(text ?? "")), SANITIZE);
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
  const rate = (rating) => sendRating(conversation, message, message.rating === rating ? null : rating);
  const actions = element("div", { class: "actions" },
    element("button", { type: "button", class: "up", "aria-label": "Good answer", "aria-pressed": String(message.rating === "up"), onclick: () => rate("up") }, icon("up")),
    element("button", { type: "button", class: "down", "aria-label": "Bad answer", "aria-pressed": String(message.rating === "down"), onclick: () => rate("down") }, icon("down")),
    element("button", { type: "button", class: "copy", onclick: (e) => copy(message.content, e.target) }, "Copy"),
    last ? element("button", { type: "button", class: "regenerate", onclick: () => regenerate(conversation, index) }, "Regenerate") : "",
    element("span", { class: "version", title: "policy version that wrote this answer" }, message.version ?? ""),
  );
  if (message.rating !== "down" || message.reasonSent) return [actions];
  const input = element("input", { type: "text", placeholder: "What was wrong? (optional)", maxlength: "2000" });
  const send = () => { message.reasonSent = true; sendRating(conversation, message, "down", input.value.trim() || null); };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
  return [actions, element("div", { class: "reason" }, input,
    element("button", { type: "button", onclick: send }, "Send"),
    element("button", { type: "button", onclick: () => { message.reasonSent = true; save(conversation); render(); } }, "Skip"))];
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

function say(id, text) {
  $(id).textContent = text ?? "";
  $(id).hidden = !text;
}

// ---- talking to the server -----------------------------------------------------------------------------------

// The session cookie goes with every same-origin fetch, and the browser adds the Origin the server checks on writes.
const JSON_BODY = { "Content-Type": "application/json" };
const UNREACHABLE = "The server is unreachable. Is chatloop running?";

// What went wrong, in the page's words; a 401 while signed in means the session ended: back to the sign-in view.
async function failure(response) {
  let error = {};
  try { error = (await response.json()).error ?? {}; } catch { /* not JSON */ }
  const wait = response.headers.get("Retry-After");
  if (response.status === 401 && state.account) {
    signedOut("Your session has ended: sign in again.");
    return new Error("Signed out.");
  }
  if (error.code === "signin_rate_limited") return new Error(`Too many sign-in attempts: try again in ${wait ?? 60} s.`);
  if (response.status === 429) return new Error(`Rate limited${wait ? `: try again in ${wait} s` : ""}.`);
  if (error.code === "context_length_exceeded") return new Error("This conversation is too long for the model: start a new chat.");
  return new Error(error.message ?? `The server answered ${response.status}.`);
}

async function call(method, path, body, signal) {
  let response;
  try {
    response = await fetch(path, { method, signal, headers: body === undefined ? {} : JSON_BODY,
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw error.name === "AbortError" ? error : new Error(UNREACHABLE);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

async function json(method, path, body) {
  const response = await call(method, path, body);
  return response.status === 204 ? null : response.json();
}

// Streams one chat completion, calling onDelta(text so far, chunk) as pieces arrive; returns the final answer.
async function streamCompletion(messages, metadata, onDelta) {
  state.controller = new AbortController();
  updateControls();
  const answer = { content: "", completionId: null, version: null, finish: null };
  try {
    const response = await call("POST", "/v1/chat/completions", { model: $("model").value || "chatloop",
      temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value) || undefined, messages,
      stream: true, metadata }, state.controller.signal);
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
    throw error instanceof TypeError ? new Error(UNREACHABLE) : error;
  } finally {
    state.controller = null;
    updateControls();
  }
}

// Writes the server's copy after the ones before it, from a snapshot taken now; a failed write says so and leaves
// the next ones to go.
function persist(method, path, body) {
  if (!state.account) return state.writes;
  const snapshot = body === undefined ? undefined : structuredClone(body);
  state.writes = state.writes.then(() => json(method, path, snapshot))
    .catch((error) => { if (state.account) showError(`Not saved: ${error.message}`); });
  return state.writes;
}

function conversationPath(conversation) { return `/v1/conversations/${encodeURIComponent(conversation.id)}`; }

function toTop(conversation) {
  // The server lists the last changed first; so does the sidebar.
  state.conversations = [conversation, ...state.conversations.filter((c) => c !== conversation)];
}

function save(conversation) {
  if (!state.account) return;
  toTop(conversation);
  persist("PUT", conversationPath(conversation), conversation);
}

function transcript(conversation, upTo = conversation.messages.length) {
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
    const answer = await streamCompletion(transcript(conversation), undefined, (a) => live.update(a));
    if (answer.completionId) {
      conversation.messages.push({ role: "assistant", content: answer.content, completionId: answer.completionId,
        choiceIndex: 0, version: answer.version, rating: null, stopped: answer.stopped ?? false });
      save(conversation);
    }
  } catch (error) {
    if (state.account) showError(error.message, () => ask(conversation));
  }
  render();
}

async function send(event) {
  event?.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  if (!active()) newConversation();
  const conversation = active();
  if (!conversation.messages) return; // still opening
  if (conversation.messages.length === 0) conversation.title = text.slice(0, 40);
  conversation.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  save(conversation);
  render();
  await ask(conversation);
}

async function postFeedback(body) {
  return json("POST", "/v1/feedback", body);
}

async function sendRating(conversation, message, rating, reason = null) {
  try {
    await postFeedback({ completion_id: message.completionId, choice_index: message.choiceIndex, rating, reason });
    message.rating = rating;
    if (rating !== "down") message.reasonSent = false;
    hideError();
  } catch (error) {
    showError(`Feedback not saved: ${error.message}`);
  }
  save(conversation);
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
    const answer = await streamCompletion(transcript(conversation, index), metadata, (a) => {
      conversation.pending.fresh.content = a.content;
      updateComparison(conversation);
    });
    conversation.pending.fresh = { role: "assistant", content: answer.content, completionId: answer.completionId,
      choiceIndex: 0, version: answer.version, rating: null };
    conversation.pending.streaming = false;
    if (!answer.completionId) delete conversation.pending;
  } catch (error) {
    delete conversation.pending;
    if (state.account) showError(error.message, () => regenerate(conversation, index));
  }
  save(conversation);
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
  save(conversation);
  render();
}

// ---- conversations -------------------------------------------------------------------------------------------

function newConversation() {
  const conversation = { id: crypto.randomUUID(), title: "New chat", messages: [] };
  state.activeId = conversation.id;
  save(conversation);
  render();
  $("prompt").focus();
}

async function loadConversations() {
  try {
    state.conversations = (await json("GET", "/v1/conversations")).data;
  } catch (error) {
    if (state.account) showError(`Conversations not loaded: ${error.message}`, loadConversations);
    return;
  }
  state.activeId = null;
  if (state.conversations.length) await open(state.conversations[0].id);
  else render();
}

async function open(id) {
  state.activeId = id;
  document.body.classList.remove("sidebar-open");
  render();
  const conversation = active();
  if (!conversation || conversation.messages) return;
  try {
    Object.assign(conversation, await json("GET", conversationPath(conversation)));
  } catch (error) {
    if (state.account) showError(`Conversation not loaded: ${error.message}`, () => open(id));
    return;
  }
  if (conversation.pending?.streaming) delete conversation.pending; // the page that streamed it is gone
  if (state.activeId === id) render();
}

function rename(conversation) {
  const title = prompt("Rename conversation", conversation.title)?.trim().slice(0, 80);
  if (!title) return;
  conversation.title = title;
  toTop(conversation);
  persist("PATCH", conversationPath(conversation), { title });
  render();
}

function remove(conversation) {
  if (!confirm(`Delete "${conversation.title}"?`)) return;
  state.conversations = state.conversations.filter((c) => c.id !== conversation.id);
  persist("DELETE", conversationPath(conversation));
  if (state.activeId === conversation.id) {
    state.activeId = null;
    if (state.conversations.length) { open(state.conversations[0].id); return; }
  }
  render();
}

async function copy(text, button) {
  const label = button.textContent;
  try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; } catch { button.textContent = "Copy failed"; }
  setTimeout(() => { button.textContent = label; }, 1500);
}

// ---- signing in and out --------------------------------------------------------------------------------------

// tone: "error" for what went wrong, "info" for what merely happened (signed out, account requested).
function showSignin(message, tone = "error") {
  document.body.dataset.view = "signin";
  $("signin-message").dataset.tone = tone;
  $("signup").hidden = state.joining === "closed";
  say("joining-note", state.joining === "approval" ? "A new account waits for an admin's approval." : null);
  say("signin-message", message);
  $("signin-name").focus();
}

function signedIn(account) {
  state.account = account;
  document.body.dataset.view = "chat";
  $("signin-password").value = "";
  say("signin-message", null);
  renderAccount();
  if ($("settings").open) loadKeys();
  loadConversations();
}

function signedOut(message, tone) {
  state.account = null;
  state.controller?.abort();
  Object.assign(state, { conversations: [], activeId: null });
  hideError();
  render();
  $("keys").replaceChildren();
  $("new-key").hidden = true;
  showSignin(message, tone);
}

function enter(session) {
  state.joining = session.joining;
  if (session.account) signedIn(session.account);
  else showSignin();
}

async function signin(event) {
  event.preventDefault();
  const body = { name: $("signin-name").value.trim().toLowerCase(), password: $("signin-password").value };
  await signinWith("/v1/auth/signin", body);
}

async function signup() {
  if (!$("signin-form").reportValidity()) return;
  const body = { name: $("signin-name").value.trim().toLowerCase(), password: $("signin-password").value };
  const response = await signinWith("/v1/auth/signup", body);
  if (response?.status === 202) showSignin("Account requested: sign in once an admin has approved it.", "info");
}

async function signinWith(path, body) {
  $("signin-message").dataset.tone = "error";
  say("signin-message", null);
  try {
    const response = await call("POST", path, body);
    const session = await response.json();
    if (response.status === 200) enter(session);
    return response;
  } catch (error) {
    say("signin-message", error.message);
    return null;
  }
}

async function signout() {
  try { await call("POST", "/v1/auth/signout"); } catch { /* signed out here either way */ }
  signedOut("Signed out.", "info");
}

async function eraseAll() {
  if (!confirm("Delete all your conversations, answers and feedback? This cannot be undone.")) return;
  try {
    await json("POST", "/v1/account/erase");
    signedOut("Your data was deleted, and you were signed out everywhere.", "info");
  } catch (error) {
    showError(error.message);
  }
}

// A one-time link (/#signin=TOKEN) signs its holder in; the token leaves the address at once, used or not.
async function redeemLink() {
  const token = new URLSearchParams(location.hash.slice(1)).get("signin");
  if (!token) return null;
  try {
    return await json("POST", "/v1/auth/link", { token });
  } catch (error) {
    return { error: error.message };
  } finally {
    history.replaceState(null, "", location.pathname + location.search);
  }
}

// ---- account settings: password and personal API keys ------------------------------------------------------------

function renderAccount() {
  const { name, role, has_password: hasPassword } = state.account;
  $("account-name").value = name; // for password managers
  $("who").textContent = `Signed in as ${name}${role === "admin" ? " (admin)" : ""}`;
  $("current-password-label").hidden = !hasPassword;
  $("current-password").required = hasPassword;
  $("password-title").textContent = hasPassword ? "Change password" : "Set a password";
  $("password-submit").textContent = hasPassword ? "Change password" : "Set password";
}

async function changePassword(event) {
  event.preventDefault();
  const body = { new_password: $("new-password").value };
  if (state.account.has_password) body.current_password = $("current-password").value;
  try {
    state.account = await json("POST", "/v1/account/password", body);
    $("current-password").value = "";
    $("new-password").value = "";
    renderAccount();
    say("password-message", "Password saved.");
  } catch (error) {
    say("password-message", error.message);
  }
}

function keyNode(key) {
  return element("li", {}, element("span", { class: "key-name", title: `made ${new Date(key.created * 1000).toLocaleString()}` }, key.name),
    element("button", { type: "button", class: "revoke", "aria-label": `Revoke ${key.name}`, onclick: () => revokeKey(key) }, "Revoke"));
}

async function loadKeys() {
  try {
    const keys = (await json("GET", "/v1/account/keys")).data;
    $("keys").replaceChildren(...keys.map(keyNode));
    say("keys-message", keys.length ? null : "No API keys yet: make one to call the API from a program.");
  } catch (error) {
    say("keys-message", error.message);
  }
}

async function createKey(event) {
  event.preventDefault();
  try {
    const made = await json("POST", "/v1/account/keys", { name: $("key-name").value.trim() });
    $("key-name").value = "";
    $("new-key-secret").value = made.key;
    $("new-key").hidden = false;
    await loadKeys();
  } catch (error) {
    say("keys-message", error.message);
  }
}

async function revokeKey(key) {
  if (!confirm(`Revoke the API key "${key.name}"? Programs using it stop working.`)) return;
  try {
    await json("DELETE", `/v1/account/keys/${encodeURIComponent(key.name)}`);
    $("new-key").hidden = true;
    await loadKeys();
  } catch (error) {
    say("keys-message", error.message);
  }
}

// ---- start -----------------------------------------------------------------------------------------------------

function listen() {
  for (const [field, fallback] of [["model", "chatloop"], ["temperature", "0.7"], ["max-tokens", ""]]) {
    $(field).value = store.get(field, fallback);
    $(field).addEventListener("change", (e) => store.set(field, e.target.value.trim()));
  }
  $("signin-form").addEventListener("submit", signin);
  $("signup").addEventListener("click", signup);
  $("signout").addEventListener("click", signout);
  $("erase").addEventListener("click", eraseAll);
  $("password-form").addEventListener("submit", changePassword);
  $("key-form").addEventListener("submit", createKey);
  $("copy-key").addEventListener("click", (e) => copy($("new-key-secret").value, e.target));
  $("settings").addEventListener("toggle", () => { if ($("settings").open && state.account) loadKeys(); });
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", newConversation);
  $("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
}

async function init() {
  listen();
  const linked = await redeemLink();
  if (linked?.account) { enter(linked); return; }
  try {
    enter(await json("GET", "/v1/auth/session"));
  } catch (error) {
    showSignin(error.message);
    return;
  }
  if (linked?.error && state.account) showError(linked.error);
  else if (linked?.error) say("signin-message", linked.error);
}

init();
