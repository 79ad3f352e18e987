// The mosaic service's page: plain JavaScript over the REST API, no build step.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("mosaic-token", params.get("token"));
const token = sessionStorage.getItem("mosaic-token");
const $ = (id) => document.getElementById(id);
const state = { algorithms: [], image: null, meta: null, run: params.get("run"), shownRunImage: null };

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function withToken(url) {
  return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
}

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// -- images and the viewer ------------------------------------------------------------------------

async function loadImages() {
  const { images } = await api("/images");
  const list = $("images");
  list.replaceChildren(...images.map((im) => {
    const li = element("li", { "data-id": im.id, onclick: () => showImage(im.id) }, im.path, " ", element("small", { text: im.root }));
    if (im.id === state.image) li.classList.add("selected");
    return li;
  }));
}

async function loadCatalogs() {
  const { catalogs } = await api("/catalogs");
  const select = $("overlay");
  const chosen = select.value;
  select.replaceChildren(element("option", { value: "", text: "none" }),
    ...catalogs.map((c) => element("option", { value: c.id, text: `${c.root}: ${c.path}` })));
  select.value = catalogs.some((c) => c.id === chosen) ? chosen : "";
}

async function showImage(id) {
  state.image = id;
  for (const li of $("images").children) li.classList.toggle("selected", li.dataset.id === id);
  state.meta = await api(`/images/${id}`);
  $("viewer-title").textContent = state.meta.path;
  $("meta").textContent = JSON.stringify(state.meta, null, 1);
  $("stats").replaceChildren();
  refreshPreview();
}

function refreshPreview() {
  if (!state.image) return;
  const img = $("preview");
  img.onload = drawOverlay;
  img.src = withToken(`/preview/${state.image}?stretch=${$("stretch").value}&max_size=${$("max-size").value}`);
}

async function drawOverlay() {
  const img = $("preview");
  const canvas = $("overlay-canvas");
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const catalog = $("overlay").value;
  if (!catalog || !state.meta) return;
  const table = await api(`/catalogs/${catalog}`);
  const names = table.columns.map((c) => c.name);
  const ix = names.indexOf("x_centroid"), iy = names.indexOf("y_centroid");
  if (ix < 0 || iy < 0) return;
  const [ny, nx] = state.meta.shape;
  const sx = canvas.width / nx, sy = canvas.height / ny;
  ctx.strokeStyle = "#0f0";
  for (const row of table.rows) {
    if (row[ix] === null || row[iy] === null) continue;
    ctx.beginPath();
    // pixel (x, y) with y up: the preview is north up, row 0 at the bottom
    ctx.arc((row[ix] + 0.5) * sx, canvas.height - (row[iy] + 0.5) * sy, 6, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

async function showStatistics() {
  if (!state.image) return;
  const stats = await api(`/statistics/${state.image}`);
  const rows = [];
  for (const [k, v] of Object.entries(stats)) {
    if (k === "percentiles") for (const [q, p] of Object.entries(v)) rows.push([`p${q}`, p]);
    else if (k !== "id") rows.push([k, v]);
  }
  $("stats").replaceChildren(...rows.map(([k, v]) => element("tr", {}, element("td", { text: k }),
    element("td", { text: typeof v === "number" ? v.toPrecision(6) : String(v) }))));
}

// -- the processing form, generated from the registry ----------------------------------------------

function processable() {
  return state.algorithms.filter((a) => a.processable);
}

function buildParams() {
  const algo = processable().find((a) => a.name === $("algorithm").value);
  $("algorithm-description").textContent = algo ? `${algo.category}: ${algo.service}` : "";
  const box = $("params");
  box.replaceChildren();
  if (!algo) return;
  for (const p of algo.parameters.filter((q) => q.settable)) {
    let input;
    if (p.enum) {
      input = element("select", { name: p.name });
      for (const v of p.enum) input.append(element("option", { value: JSON.stringify(v), text: String(v) }));
      if (p.default !== null) input.value = JSON.stringify(p.default);
    } else if (p.accepts.includes("bool")) {
      input = element("input", { type: "checkbox", name: p.name });
      input.checked = p.default === true;
    } else {
      const numeric = p.accepts.length === 1 && (p.accepts[0] === "int" || p.accepts[0] === "float");
      input = element("input", { type: numeric ? "number" : "text", name: p.name, step: "any" });
      if (p.default !== null && p.default !== undefined) input.value = Array.isArray(p.default) ? p.default.join(", ") : p.default;
      if (p.required) input.required = true;
    }
    input.dataset.accepts = p.accepts.join(",");
    input.title = p.description;
    box.append(element("label", { title: p.description }, `${p.name}${p.required ? " *" : ""} `, input,
      element("small", { text: ` ${p.type || p.accepts.join("|")}` })));
  }
}

function readParams() {
  const out = {};
  for (const input of $("params").querySelectorAll("input, select")) {
    const accepts = input.dataset.accepts.split(",");
    if (input.tagName === "SELECT") out[input.name] = JSON.parse(input.value);
    else if (input.type === "checkbox") out[input.name] = input.checked;
    else if (input.value.trim() === "") continue;
    else if (input.value.includes(",") && accepts.includes("list")) out[input.name] = input.value.split(",").map(Number);
    else if (accepts.includes("str")) out[input.name] = input.value;
    else out[input.name] = Number(input.value);
  }
  return out;
}

async function submitProcess(event) {
  event.preventDefault();
  if (!state.image) { $("process-result").textContent = "select an image first"; return; }
  $("process-result").textContent = "running…";
  try {
    const result = await api("/process", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: state.image, algorithm: $("algorithm").value, params: readParams() }) });
    $("process-result").textContent = JSON.stringify(result, null, 1);
    await loadImages();
    await loadCatalogs();
    if (result.result === "image") await showImage(result.id);
    if (result.result === "table") { $("overlay").value = result.id; drawOverlay(); }
  } catch (err) {
    $("process-result").textContent = `error: ${err.message}`;
  }
}

// -- runs ------------------------------------------------------------------------------------------

async function submitRun(event) {
  event.preventDefault();
  $("run-error").textContent = "";
  let config;
  try { config = JSON.parse($("run-config").value); } catch (err) { $("run-error").textContent = `not JSON: ${err.message}`; return; }
  try {
    const job = await api("/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ config }) });
    state.run = job.id;
    await loadRuns();
  } catch (err) {
    $("run-error").textContent = err.message;
  }
}

async function runAction(id, method, path) {
  try { await api(path, { method }); } catch (err) { $("run-error").textContent = err.message; }
  await loadRuns();
}

async function loadRuns() {
  const { runs } = await api("/runs");
  const items = [];
  for (const r of runs) {
    const li = element("li", { class: "run", "data-id": r.id });
    li.append(element("b", { text: r.field }), " ", element("span", { class: `status-${r.status}`, text: r.status }),
      r.step ? ` — ${r.band} ${r.step}` : "", element("br"), element("small", { text: r.id }));
    li.append(element("progress", { max: "1", value: String(r.progress) }));
    if (["queued", "running"].includes(r.status)) li.append(element("button", { type: "button", text: "Cancel", onclick: () => runAction(r.id, "DELETE", `/runs/${r.id}`) }));
    if (["failed", "cancelled"].includes(r.status)) li.append(element("button", { type: "button", text: "Retry", onclick: () => runAction(r.id, "POST", `/runs/${r.id}/retry`) }));
    li.append(element("button", { type: "button", text: "Details", onclick: () => { state.run = r.id; loadRuns(); } }));
    if (r.error) li.append(element("div", { class: "error", text: r.error }));
    if (r.id === state.run) await runDetails(r.id, li);
    items.push(li);
  }
  $("runs").replaceChildren(...items);
}

async function runDetails(id, li) {
  const job = await api(`/runs/${id}?log_lines=12`);
  li.append(element("pre", { text: job.log.join("\n") }));
  const products = element("div", { class: "products" });
  for (const im of job.images) products.append(element("a", { text: im.path, onclick: () => { loadImages().then(() => showImage(im.id)); } }));
  for (const c of job.catalogs) products.append(element("a", { href: withToken(`/catalogs/${c.id}?format=ecsv`), text: c.path }));
  li.append(products);
  if (job.status === "complete" && job.images.length && state.shownRunImage !== id) {
    state.shownRunImage = id;
    const last = job.images[job.images.length - 1];
    await loadImages();
    await loadCatalogs();
    await showImage(last.id);
  }
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  const health = await api("/health");
  $("status").textContent = health.cluster ? "connected; cluster ready" : "connected; no cluster (runs disabled)";
  if (health.dashboard) { $("dashboard").href = health.dashboard; $("dashboard").hidden = false; }
  state.algorithms = (await api("/algorithms")).algorithms;
  const stretch = state.algorithms.find((a) => a.name === "stretch_image").parameters.find((p) => p.name === "stretch");
  $("stretch").replaceChildren(...stretch.enum.map((s) => element("option", { value: s, text: s })));
  $("algorithm").replaceChildren(...processable().map((a) => element("option", { value: a.name, text: `${a.name} (${a.category})` })));
  buildParams();
  $("algorithm").addEventListener("change", buildParams);
  $("stretch").addEventListener("change", refreshPreview);
  $("max-size").addEventListener("change", refreshPreview);
  $("overlay").addEventListener("change", drawOverlay);
  $("stats-button").addEventListener("click", showStatistics);
  $("process-form").addEventListener("submit", submitProcess);
  $("run-form").addEventListener("submit", submitRun);
  $("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    try { await api("/images", { method: "POST", body: form }); await loadImages(); } catch (err) { $("status").textContent = err.message; }
  });
  await loadImages();
  await loadCatalogs();
  if (params.get("image")) await showImage(params.get("image"));
  await loadRuns();
  setInterval(() => loadRuns().catch((err) => { $("status").textContent = err.message; }), 1500);
}

start().catch((err) => { $("status").textContent = `error: ${err.message}`; });
