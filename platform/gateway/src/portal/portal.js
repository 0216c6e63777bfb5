// The portal: lists functions, invokes one, deploys one, through the
// gateway's own API (same origin; the browser sends the credentials it
// was asked for when it opened /ui/).
"use strict";

const $ = (id) => document.getElementById(id);
// Against the origin, never the page's URL: a page opened as
// http://user:password@host/ui/ would hand its credentials to fetch, which refuses them.
const api = (path, init) => fetch(new URL(path, location.origin), init);
let chosen = null;

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

async function load() {
  const body = $("functions");
  try {
    const res = await api("/system/functions");
    if (!res.ok) throw new Error(`GET /system/functions: ${res.status} ${await res.text()}`);
    const functions = await res.json();
    body.replaceChildren();
    if (functions.length === 0) {
      const row = body.insertRow();
      cell(row, "No functions yet: deploy one below.");
      row.firstChild.colSpan = 5;
    }
    for (const f of functions.sort((a, b) => a.name.localeCompare(b.name))) {
      const row = body.insertRow();
      row.dataset.name = f.name;
      cell(row, f.name);
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
      if (f.name === chosen) row.className = "chosen";
      row.addEventListener("click", () => choose(f.name));
    }
    $("error").hidden = true;
  } catch (e) {
    $("error").textContent = e.message;
    $("error").hidden = false;
  }
}

function choose(name) {
  chosen = name;
  $("invoke").hidden = false;
  $("invoke-name").textContent = name;
  for (const row of $("functions").rows) row.className = row.dataset.name === name ? "chosen" : "";
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
  load();
}

async function deploy(event) {
  event.preventDefault();
  const form = new FormData($("deploy"));
  const d = { service: form.get("service"), image: form.get("image") || "local" };
  if (form.get("envProcess")) d.envProcess = form.get("envProcess");
  if (form.get("topic")) d.annotations = { topic: form.get("topic") };
  const res = await api("/system/functions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(d),
  });
  $("deployed").textContent = res.ok ? `deployed ${d.service}` : `${res.status}: ${await res.text()}`;
  load();
}

async function info() {
  const res = await api("/system/info");
  if (!res.ok) return;
  const i = await res.json();
  const provider = i.provider ? (i.provider.provider || i.provider) : "";
  $("info").textContent = `${provider} ${(i.version && i.version.release) || ""}`;
}

$("refresh").addEventListener("click", load);
$("send").addEventListener("click", invoke);
$("deploy").addEventListener("submit", deploy);
load();
info();
