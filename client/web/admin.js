// The ops page: reads the admin API as an admin signed in on the chat page (the session cookie goes with each
// request), or with the admin key the operator types (kept in this tab's sessionStorage only), and draws the
// routing, the versions with their actions, feedback rates over time and training curves.
"use strict";

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e16f24", "#1b7c83"];
const Z95 = 1.959963984540054;
const $ = (selector) => document.querySelector(selector);

function adminKey() {
  return sessionStorage.getItem("chatloop-admin-key") || "";
}

async function api(method, path, body) {
  const response = await fetch(`/v1/admin${path}`, {
    method,
    headers: { ...(adminKey() ? { Authorization: `Bearer ${adminKey()}` } : {}), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json();
  if (response.status === 401 && !adminKey()) throw new Error("Sign in on the chat page as an admin, or enter the admin key.");
  if (!response.ok) throw new Error(payload.error ? payload.error.message : response.statusText);
  return payload;
}

function showError(error) {
  const banner = $("#banner");
  banner.textContent = error ? String(error.message || error) : "";
  banner.hidden = !error;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

// ---- routing and versions ------------------------------------------------------------------------------------

function renderRouting(routing) {
  const { active, canary, canary_percent: percent } = routing.stored;
  $("#routing").textContent = canary
    ? `Active ${active}; canary ${canary} for ${percent}% of users.`
    : `Active ${active} for every user.`;
  const split = $("#split");
  split.replaceChildren();
  const parts = canary ? [[active, 100 - percent, COLORS[0]], [canary, percent, COLORS[4]]] : [[active, 100, COLORS[0]]];
  for (const [name, share, color] of parts) {
    const bar = document.createElement("div");
    bar.style.width = `${share}%`;
    bar.style.background = color;
    bar.textContent = `${name} ${share}%`;
    split.append(bar);
  }
  $("#rollback").disabled = !canary && routing.stored.history.length === 0;
}

function actionButton(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}

async function change(method, path, body) {
  try {
    await api(method, path, body);
    await refresh();
  } catch (error) {
    showError(error);
  }
}

function renderVersions(listing) {
  const body = $("#versions tbody");
  body.replaceChildren();
  for (const version of [...listing.data].reverse()) {
    const row = body.insertRow();
    cell(row, version.id);
    const state = cell(row, "");
    const badge = document.createElement("span");
    badge.className = `state ${version.state}`;
    badge.textContent = version.state;
    state.append(badge);
    cell(row, version.lineage.join(" ← "));
    cell(row, when(version.created));
    const gate = version.gate.passed ? "passed" : (version.gate.reasons || []).join("; ") || "–";
    const erased = version.erased_pairs ? `; trained on ${version.erased_pairs} erased pairs` : "";
    const warned = version.load_errors || version.erased_pairs;
    const note = version.load_errors ? `load error: ${version.load_errors.error}` : gate + erased;
    cell(row, version.pinnable ? `${note}; pinnable by everyone` : note, warned ? "error" : "");
    const actions = row.insertCell();
    if (["candidate", "canary", "retired"].includes(version.state)) {
      actions.append(actionButton("Promote", () => change("POST", `/versions/${version.id}/promote`, {})));
      actions.append(actionButton("Canary…", () => {
        const percent = Number(prompt(`Share of users for ${version.id} (1-99)`, "10"));
        if (percent > 0 && percent < 100) change("POST", `/versions/${version.id}/promote`, { canary_percent: percent });
      }));
    }
    if (version.state !== "active" && version.state !== "rejected") {
      actions.append(actionButton("Retire", () => change("POST", `/versions/${version.id}/retire`, {})));
    }
  }
}

// ---- charts ---------------------------------------------------------------------------------------------------

function svgElement(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

// series: [{name, points: [{x, y, low?, high?}]}]; draws lines, interval bands and a legend.
function lineChart(container, series, formatX) {
  const width = 600, height = 220, left = 44, right = 100, top = 10, bottom = 24;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const points = series.flatMap((s) => s.points);
  container.replaceChildren(svg);
  if (points.length === 0) {
    svg.append(Object.assign(svgElement("text", { x: left, y: height / 2 }), { textContent: "no data yet" }));
    return;
  }
  const xs = points.map((p) => p.x), ys = points.flatMap((p) => [p.y, p.low ?? p.y, p.high ?? p.y]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys) || 1];
  const sx = (x) => left + ((x - x0) / (x1 - x0 || 1)) * (width - left - right);
  const sy = (y) => height - bottom - ((y - y0) / (y1 - y0 || 1)) * (height - top - bottom);
  svg.append(svgElement("line", { x1: left, y1: sy(y0), x2: width - right, y2: sy(y0), class: "axis" }));
  svg.append(svgElement("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (const [y, anchor] of [[y0, height - bottom], [y1, top + 8]]) {
    svg.append(Object.assign(svgElement("text", { x: 2, y: anchor }), { textContent: y.toFixed(2) }));
  }
  for (const [x, anchor, align] of [[x0, left, "start"], [x1, width - right, "end"]]) {
    const label = svgElement("text", { x: anchor, y: height - 6, "text-anchor": align });
    label.textContent = formatX(x);
    svg.append(label);
  }
  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length];
    const banded = s.points.filter((p) => p.low !== undefined);
    if (banded.length > 1) {
      const edge = banded.map((p) => `${sx(p.x)},${sy(p.high)}`).concat([...banded].reverse().map((p) => `${sx(p.x)},${sy(p.low)}`));
      svg.append(svgElement("polygon", { points: edge.join(" "), fill: color, "fill-opacity": 0.12 }));
    }
    const line = s.points.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ");
    svg.append(svgElement("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 2 }));
    for (const p of s.points) svg.append(svgElement("circle", { cx: sx(p.x), cy: sy(p.y), r: 2.5, fill: color }));
    const legend = svgElement("text", { x: width - right + 8, y: top + 12 + index * 14, fill: color });
    legend.textContent = s.name;
    svg.append(legend);
  });
}

function wilson(successes, trials) {
  if (trials <= 0) return [0, 1];
  const p = successes / trials, z2 = Z95 * Z95;
  const denominator = 1 + z2 / trials;
  const centre = (p + z2 / (2 * trials)) / denominator;
  const half = (Z95 * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials))) / denominator;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

function renderRates(snapshots) {
  const byVersion = new Map();
  for (const snapshot of snapshots) {
    for (const [version, counts] of Object.entries(snapshot.counters)) {
      if (counts.served === 0) continue;
      const [low, high] = wilson(counts.down, counts.served);
      if (!byVersion.has(version)) byVersion.set(version, []);
      byVersion.get(version).push({ x: snapshot.at, y: counts.down / counts.served, low, high });
    }
  }
  const series = [...byVersion].map(([name, points]) => ({ name, points }));
  lineChart($("#rates-chart"), series, (x) => new Date(x * 1000).toLocaleTimeString());
}

function renderRounds(rounds) {
  const body = $("#rounds tbody");
  body.replaceChildren();
  const figure = (value, digits) => (value == null ? "–" : value.toFixed(digits));
  const curves = { reward: [], kl: [], accuracy: [] };
  rounds.forEach((round, index) => {
    const rewardModel = round.metrics.reward_model || {};
    const gate = round.gate || {};
    const klToBase = (gate.candidate || {}).kl_to_base;
    const row = body.insertRow(0);
    cell(row, when(round.at));
    cell(row, round.id);
    cell(row, round.parent);
    cell(row, round.state);
    cell(row, `${rewardModel.train_pairs} (+${rewardModel.held_out_pairs} held out)`);
    cell(row, figure(rewardModel.held_out_accuracy, 2));
    cell(row, figure(gate.reward_gain, 3));
    cell(row, figure(klToBase, 2));
    if (gate.reward_gain != null) curves.reward.push({ x: index + 1, y: gate.reward_gain });
    if (klToBase != null) curves.kl.push({ x: index + 1, y: klToBase });
    if (rewardModel.held_out_accuracy != null) curves.accuracy.push({ x: index + 1, y: rewardModel.held_out_accuracy });
  });
  const byRound = (x) => `round ${x}`;
  lineChart($("#reward-chart"), [{ name: "reward", points: curves.reward }], byRound);
  lineChart($("#kl-chart"), [{ name: "KL", points: curves.kl }], byRound);
  lineChart($("#accuracy-chart"), [{ name: "accuracy", points: curves.accuracy }], byRound);
}

// ---- loading --------------------------------------------------------------------------------------------------

async function refresh() {
  try {
    const [listing, history, rounds] = await Promise.all([
      api("GET", "/versions"), api("GET", "/stats/history?hours=24"), api("GET", "/rounds?limit=100"),
    ]);
    showError(null);
    renderRouting(listing.routing);
    renderVersions(listing);
    renderRates(history.data);
    renderRounds(rounds.data);
  } catch (error) {
    showError(error);
  }
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("chatloop-admin-key", $("#admin-key").value.trim());
  refresh();
});
$("#rollback").addEventListener("click", () => change("POST", "/rollback", {}));
$("#admin-key").value = adminKey();
refresh();
setInterval(refresh, 10000);
