// The portal: the functions through the gateway's own API (/system/*), and
// their events through the hub's (/ui/hub/*, which the gateway forwards).
// Same origin; the browser sends the credentials it was asked for when it
// opened /ui/.
"use strict";

const $ = (id) => document.getElementById(id);
// Against the origin, never the page's URL: a page opened as
// http://user:password@host/ui/ would hand its credentials to fetch, which refuses them.
const api = (path, init) => fetch(new URL(path, location.origin), init);
const post = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// How often the events' view reads the hub's metrics while the page is shown.
const REFRESH_MS = 5000;
// Environment variables whose values are never shown.
const SECRET_NAME = /pass|secret|token|key|credential|auth|private/i;

let chosen = null; // the function shown in detail: "name.namespace"
let functions = [];
let paused = new Set(); // "name.namespace" of paused functions, as the hub says
let previous = null; // the last metrics sample: { at, totals }

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = content;
  return td;
}

function button(text, onClick, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function empty(body, columns, text) {
  body.replaceChildren();
  cell(body.insertRow(), text).colSpan = columns;
}

function problem(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function json(res, what) {
  if (!res.ok) throw new Error(`${what}: ${res.status} ${(await res.text()).trim()}`);
  return res.json();
}

const qualified = (f) => `${f.name}.${f.namespace || "openfaas-fn"}`;

async function loadFunctions() {
  try {
    functions = await json(await api("/system/functions"), "GET /system/functions");
    const body = $("functions");
    body.replaceChildren();
    if (functions.length === 0) empty(body, 5, "No functions yet: deploy one below.");
    for (const f of functions.sort((a, b) => a.name.localeCompare(b.name))) {
      const row = body.insertRow();
      row.dataset.name = f.name;
      cell(row, button(f.name, () => choose(qualified(f)), `Show ${f.name}`));
      cell(row, f.image && f.image !== "local" ? f.image : (f.envProcess || f.image || ""));
      // A replica that keeps exiting as it starts: say so, and why.
      const crash = f.annotations && f.annotations["com.switchboard.crash-looping"];
      const replicas = cell(row, `${f.availableReplicas}/${f.replicas}` + (crash ? " crash-looping" : ""));
      if (crash) {
        replicas.className = "crash";
        replicas.title = crash;
      }
      cell(row, String(f.invocationCount));
      cell(row, (f.annotations && f.annotations.topic) || "");
      if (qualified(f) === chosen) row.className = "chosen";
    }
    problem("");
    if (chosen) showDetail();
  } catch (e) {
    problem(e.message);
  }
}

function choose(name) {
  chosen = name;
  $("detail").hidden = false;
  $("response").textContent = "";
  $("status").textContent = "";
  showDetail();
  loadLogs();
  $("detail").scrollIntoView();
  $("request").focus();
}

function field(list, term, value, className) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (className) dd.className = className;
  list.append(dt, dd);
}

const pairs = (map, mask) =>
  Object.entries(map || {})
    .sort()
    .map(([k, v]) => `${k}=${mask && SECRET_NAME.test(k) ? "••••••" : v}`)
    .join("\n") || "none";

function showDetail() {
  const f = functions.find((f) => qualified(f) === chosen);
  for (const row of $("functions").rows) row.className = row.dataset.name && f && row.dataset.name === f.name ? "chosen" : "";
  if (!f) {
    $("detail-name").textContent = `${chosen} (removed)`;
    return;
  }
  $("detail-name").textContent = f.name;
  const crash = f.annotations && f.annotations["com.switchboard.crash-looping"];
  const isPaused = paused.has(chosen);
  const state = crash ? "Crash-looping" : f.availableReplicas > 0 ? "Ready" : "Not ready";
  $("detail-state").textContent = `${state}${isPaused ? ", events paused" : ""}`;
  $("detail-state").className = crash ? "crash" : "";
  const topics = f.annotations && f.annotations.topic;
  $("pause").hidden = !topics;
  $("pause").textContent = isPaused ? "Resume events" : "Pause events";
  const list = $("detail-fields");
  list.replaceChildren();
  field(list, "Namespace", f.namespace || "");
  field(list, "Replicas", `${f.availableReplicas} of ${f.replicas} available`);
  field(list, "Invocations", String(f.invocationCount));
  field(list, "Image or command", f.envProcess || f.image || "");
  if (crash) field(list, "Why it keeps exiting", crash, "crash");
  field(list, "Topics", topics || "none");
  field(list, "Annotations", pairs(f.annotations), "pre");
  field(list, "Labels", pairs(f.labels), "pre");
  field(list, "Environment", pairs(f.envVars, true), "pre");
}

async function invoke() {
  const started = performance.now();
  $("status").textContent = "…";
  try {
    const res = await api(`/function/${encodeURIComponent(chosen)}`, { method: "POST", body: $("request").value });
    const text = await res.text();
    const ms = Math.round(performance.now() - started);
    $("status").textContent = `${res.status} ${res.statusText} in ${ms} ms`;
    $("response").textContent = text;
  } catch (e) {
    $("status").textContent = e.message;
  }
  loadFunctions();
  loadLogs();
}

async function loadLogs() {
  const [name, namespace] = [chosen.slice(0, chosen.indexOf(".")), chosen.slice(chosen.indexOf(".") + 1)];
  const query = new URLSearchParams({ name, namespace, tail: "50", follow: "false" });
  try {
    const res = await api(`/system/logs?${query}`);
    if (!res.ok) throw new Error(`${res.status} ${(await res.text()).trim()}`);
    const lines = (await res.text()).split("\n").filter(Boolean).map((l) => {
      try {
        const e = JSON.parse(l);
        return `${e.timestamp} ${e.text}`;
      } catch {
        return l;
      }
    });
    $("logs").textContent = lines.join("\n") || "no logs yet";
  } catch (e) {
    $("logs").textContent = `cannot read the logs: ${e.message}`;
  }
}

async function togglePause() {
  const action = paused.has(chosen) ? "resume" : "pause";
  try {
    await json(await api(`/ui/hub/functions/${encodeURIComponent(chosen)}/${action}`, { method: "POST" }), action);
    if (action === "pause") paused.add(chosen);
    else paused.delete(chosen);
    problem("");
  } catch (e) {
    problem(e.message);
  }
  showDetail();
  loadEvents();
}

// The hub's Prometheus text, summed by source: { source: { metric: total } }.
function bySource(text) {
  const totals = {};
  for (const line of text.split("\n")) {
    const m = /^(switchboard_[a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    const source = m && /source="([^"]*)"/.exec(m[2]);
    if (!source) continue;
    const t = (totals[source[1]] ||= {});
    t[m[1]] = (t[m[1]] || 0) + Number(m[3]);
  }
  return totals;
}

const COUNTERS = ["received", "delivered", "retried", "dead_lettered"].map((c) => `switchboard_events_${c}_total`);

async function loadEvents() {
  try {
    const [topics, metrics] = await Promise.all([
      json(await api("/ui/hub/topics"), "the hub's topics"),
      api("/ui/hub/metrics").then((r) => (r.ok ? r.text() : "")),
    ]);
    $("hub-note").hidden = true;
    paused = new Set(topics.topics.flatMap((t) => t.functions.filter((f) => f.paused).map((f) => f.function)));
    showTopics(topics.topics);
    showSources(topics.topics, metrics);
    if (chosen) showDetail();
  } catch (e) {
    $("hub-note").textContent = `The hub is not reachable from this gateway (${e.message}).`;
    $("hub-note").hidden = false;
  }
}

function showTopics(topics) {
  const body = $("topics");
  body.replaceChildren();
  if (topics.length === 0) empty(body, 3, "No function subscribes to a topic.");
  for (const t of topics) {
    const row = body.insertRow();
    cell(row, t.topic);
    cell(row, t.functions.map((f) => f.function.split(".")[0] + (f.paused ? " (paused)" : "")).join(", ") || "none");
    const served = t.sources.map((s) => s.source + (s.connected === false ? " (not connected)" : ""));
    cell(row, served.join(", ") || "no source here");
  }
}

function showSources(topics, metrics) {
  const now = performance.now();
  const totals = bySource(metrics);
  const connected = {};
  for (const t of topics) for (const s of t.sources) connected[s.source] = s.connected;
  const sources = [...new Set([...Object.keys(totals), ...Object.keys(connected)])].sort();
  const body = $("sources");
  body.replaceChildren();
  if (sources.length === 0) empty(body, 8, "No source has received an event yet.");
  for (const source of sources) {
    const t = totals[source] || {};
    const before = previous && previous.totals[source];
    const row = body.insertRow();
    row.dataset.source = source;
    cell(row, source);
    const state = cell(row, connected[source] === false ? "not connected" : connected[source] ? "connected" : "—");
    if (connected[source] === false) state.className = "crash";
    for (const c of COUNTERS) {
      const rate = before ? ((t[c] || 0) - (before[c] || 0)) / ((now - previous.at) / 1000) : 0;
      cell(row, before ? rate.toFixed(1) : "…");
    }
    cell(row, String(t[COUNTERS[0]] || 0));
    cell(row, String(t[COUNTERS[3]] || 0));
  }
  previous = { at: now, totals };
}

function selection() {
  const form = new FormData($("letter-filter"));
  const s = {};
  for (const k of ["function", "topic"]) if (form.get(k)) s[k] = form.get(k);
  return s;
}

async function loadLetters() {
  const query = new URLSearchParams({ ...selection(), limit: "100" });
  try {
    const page = await json(await api(`/ui/hub/dead-letters?${query}`), "the dead letters");
    const body = $("dead-letters");
    body.replaceChildren();
    $("letter-count").textContent = `(${page.letters.length}${page.next ? "+" : ""})`;
    if (page.letters.length === 0) empty(body, 8, "No dead letters.");
    for (const l of page.letters) {
      const row = body.insertRow();
      row.dataset.id = l.id;
      for (const k of ["id", "time", "source", "topic", "function", "attempts"]) cell(row, String(l[k] ?? "—"));
      cell(row, `${l.status ? l.status + ": " : ""}${l.error}`).className = "failure";
      const actions = cell(row, button("Replay", () => act("replay", { ids: [l.id] }), `Replay letter ${l.id}`));
      actions.appendChild(button("Purge", () => act("purge", { ids: [l.id] }), `Purge letter ${l.id}`));
    }
  } catch (e) {
    $("letter-count").textContent = "";
    empty($("dead-letters"), 8, `Cannot read the dead letters: ${e.message}`);
  }
}

async function act(verb, chosen) {
  if (verb === "purge" && !confirm(`Purge ${chosen.ids ? `letter ${chosen.ids.join(", ")}` : "these letters"} for good?`)) return;
  $("letter-result").textContent = `${verb}…`;
  try {
    const body = verb === "replay" ? { ...chosen, wait: true } : chosen;
    const a = await json(await post(`/ui/hub/dead-letters/${verb}`, body), verb);
    $("letter-result").textContent =
      verb === "replay"
        ? `Replayed ${a.letters}: ${a.delivered} delivered, ${a.failed} failed again${a.more ? " (more match)" : ""}.`
        : `Purged ${a.purged}.`;
  } catch (e) {
    $("letter-result").textContent = e.message;
  }
  loadLetters();
  loadFunctions();
  loadEvents();
}

function shown() {
  const s = selection();
  return Object.keys(s).length ? s : { all: true };
}

async function deploy(event) {
  event.preventDefault();
  const form = new FormData($("deploy"));
  const d = { service: form.get("service"), image: form.get("image") || "local" };
  if (form.get("envProcess")) d.envProcess = form.get("envProcess");
  if (form.get("topic")) d.annotations = { topic: form.get("topic") };
  const env = form.get("env").split("\n").map((l) => l.trim()).filter(Boolean);
  if (env.length) d.envVars = Object.fromEntries(env.map((l) => [l.split("=")[0], l.slice(l.indexOf("=") + 1)]));
  const res = await post("/system/functions", d);
  $("deployed").textContent = res.ok ? `deployed ${d.service}` : `${res.status}: ${await res.text()}`;
  if (res.ok) $("deploy").reset();
  loadFunctions();
  setTimeout(loadEvents, 1500); // the hub discovers the new function's topics
}

async function info() {
  const res = await api("/system/info");
  if (!res.ok) return;
  const i = await res.json();
  const provider = i.provider ? (i.provider.provider || i.provider) : "";
  $("info").textContent = `${provider} ${(i.version && i.version.release) || ""}`;
}

$("refresh").addEventListener("click", () => {
  loadFunctions();
  loadEvents();
  loadLetters();
});
$("send").addEventListener("click", invoke);
$("refresh-logs").addEventListener("click", loadLogs);
$("pause").addEventListener("click", togglePause);
$("deploy").addEventListener("submit", deploy);
$("letter-filter").addEventListener("submit", (e) => {
  e.preventDefault();
  loadLetters();
});
$("replay-shown").addEventListener("click", () => act("replay", shown()));
$("purge-shown").addEventListener("click", () => act("purge", shown()));
setInterval(() => {
  if (document.visibilityState !== "visible") return;
  loadEvents();
  loadLetters();
}, REFRESH_MS);
loadFunctions();
loadEvents();
loadLetters();
info();
