// rewind console: one page over the REST API (/v1). No framework, no build
// step; every call goes through call(), which sends the CSRF token of the
// session on every request that changes state.
"use strict";

const state = { csrf: "", server: null, poll: null, pollEvery: 0, view: "" };
const $ = (sel, root = document) => root.querySelector(sel);
const view = () => $("#view");
// put replaces node's children with kids, skipping the absent ones.
const put = (node, ...kids) => node.replaceChildren(...kids.flat().filter(k => k != null && k !== false));

// --- formatting ---------------------------------------------------------

function bytes(n) {
  if (n == null || n < 0) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) : n) + " " + u[i];
}
function count(n) { return (n ?? 0).toLocaleString("en-US"); }
function versionsText(n) { return `${count(n)} version${n === 1 ? "" : "s"}`; }
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const pad = (x, w = 2) => String(x).padStart(w, "0");
  const frac = /\.(\d+)/.exec(iso);
  const ms = frac && Number(frac[1]) !== 0 ? "." + frac[1].replace(/0+$/, "").slice(0, 3) : "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${ms}`;
}
function ago(iso) {
  const s = (Date.now() - new Date(iso)) / 1000;
  if (!isFinite(s)) return "";
  if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function duration(sec) {
  if (sec == null || sec < 0) return "–";
  if (sec < 60) return Math.ceil(sec) + " s";
  if (sec < 3600) return Math.floor(sec / 60) + " min " + Math.round(sec % 60) + " s";
  return Math.floor(sec / 3600) + " h " + Math.round((sec % 3600) / 60) + " min";
}
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k != null) e.append(k);
  return e;
}

// --- the API ------------------------------------------------------------

class APIError extends Error {
  constructor(status, body) { super(body.error || `the server answered ${status}`); this.status = status; this.code = body.code; }
}

async function call(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET" && method !== "HEAD") {
    opts.headers["X-CSRF-Token"] = state.csrf;
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { signedOut(); throw new APIError(401, { error: "signed out" }); }
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch { data = {}; }
  if (!r.ok) throw new APIError(r.status, data || {});
  return data;
}
const get = path => call("GET", path);
const q = params => { const u = new URLSearchParams(); for (const [k, v] of Object.entries(params)) if (v != null && v !== "") u.set(k, v); const s = u.toString(); return s ? "?" + s : ""; };
const vpath = name => "/v1/volumes/" + encodeURIComponent(name);

// --- signing in ---------------------------------------------------------

async function boot() {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  $("#action-close").addEventListener("click", () => { $("#action").close(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.pollEvery) schedule(state.pollEvery); });
  window.addEventListener("hashchange", route);
  if (new URLSearchParams(location.search).get("signin") === "refused") {
    $("#signin-error").textContent = "That link's token is not this server's API token. Give the token, or ask rewind console on the server for a new link.";
    history.replaceState(null, "", "/" + location.hash);
  }
  const r = await fetch("/session", { credentials: "same-origin" });
  if (r.ok) { state.csrf = (await r.json()).csrf; signedIn(); } else signedOut();
}

async function signIn(ev) {
  ev.preventDefault();
  $("#signin-error").textContent = "";
  const r = await fetch("/session", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("#token").value.trim() }) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { $("#signin-error").textContent = data.error || `the server answered ${r.status}`; return; }
  $("#token").value = "";
  state.csrf = data.csrf;
  signedIn();
}

async function signOut() {
  await fetch("/session", { method: "DELETE", credentials: "same-origin", headers: { "X-CSRF-Token": state.csrf } });
  signedOut();
}

function signedIn() {
  document.body.dataset.signedIn = "true";
  $("#signin-view").hidden = true;
  view().hidden = false;
  get("/v1/server").then(s => { state.server = s; }).catch(() => {}).finally(route);
}

function signedOut() {
  stopPolling();
  state.csrf = "";
  document.body.dataset.signedIn = "false";
  put(view(), );
  view().hidden = true;
  delete view().dataset.ready;
  $("#signin-view").hidden = false;
  $("#token").focus();
}

// --- routing ------------------------------------------------------------

function route() {
  if (document.body.dataset.signedIn !== "true") return;
  stopPolling();
  const hash = location.hash.replace(/^#/, "") || "/volumes";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", hash.startsWith(a.getAttribute("href").slice(1)));
  let p;
  if (parts[0] === "volumes" && parts[1]) p = volumeView(parts[1], new URLSearchParams(query));
  else if (parts[0] === "recoveries") p = recoveriesView();
  else if (parts[0] === "store") p = storeView();
  else p = volumesView();
  p.catch(showError);
}

function loading(name) {
  state.view = name;
  delete view().dataset.ready;
}
function ready(name) {
  if (state.view === name) view().dataset.ready = name;
}
function showError(e) {
  if (e instanceof APIError && e.status === 401) return;
  put(view(), el("div", { class: "card" }, el("p", { class: "error", id: "view-error", text: e.message })));
  view().dataset.ready = "error";
}

function schedule(ms) {
  clearTimeout(state.poll);
  state.pollEvery = ms;
  if (ms && !document.hidden) state.poll = setTimeout(() => { if (!document.hidden) route(); }, ms);
}
function stopPolling() { clearTimeout(state.poll); state.pollEvery = 0; }

// --- volumes ------------------------------------------------------------

async function volumesView() {
  loading("volumes");
  const [vols, recs, prots] = await Promise.all([
    get("/v1/volumes"), get("/v1/recoveries").catch(() => []), get("/v1/protections").catch(() => [])]);
  const rec = Object.fromEntries((recs || []).map(r => [r.name, r]));
  const prot = Object.fromEntries((prots || []).map(p => [p.name, p]));
  const rows = (vols || []).map(v => {
    const r = rec[v.name], p = prot[v.name];
    return el("tr", { "data-volume": v.name },
      el("td", {}, el("a", { class: "open", href: "#/volumes/" + encodeURIComponent(v.name), text: v.name }),
        v.replica ? el("span", { class: "badge", title: "replicated from " + v.replica.from, text: " replica" }) : null),
      el("td", { class: "kind hide-narrow", text: v.kind + (v.parent ? " of " + v.parent : "") }),
      el("td", { class: "size num", text: bytes(v.size) }),
      el("td", { class: "last", title: v.last }, v.versions ? [el("span", { class: "hide-narrow", text: when(v.last) + " " }), `(${ago(v.last)})`] : "–"),
      el("td", { class: "versions num", text: count(v.versions) }),
      el("td", { class: "stored num hide-narrow", text: bytes(v.stored_bytes) }),
      el("td", { class: "protection" }, p ? el("span", { class: "badge " + (p.state === "protected" ? "on" : "warn"), title: p.reason ? p.primary + ": " + p.reason : p.primary, text: p.state }) : el("span", { class: "muted", text: "–" })),
      el("td", { class: "recovery" }, r ? el("a", { href: "#/recoveries", class: "badge " + (r.state === "failed" ? "warn" : "on"), text: recoveryText(r) }) : el("span", { class: "muted", text: "–" })));
  });
  const unwritable = (vols || []).find(v => v.unwritable);
  put(view(), 
    el("h1", { text: "Volumes" }),
    unwritable ? el("p", { class: "card error", text: unwritable.unwritable }) : null,
    rows.length ? el("div", { class: "scroll" }, el("table", { id: "volumes" },
      el("thead", {}, el("tr", {}, ...["Volume", "Kind", "Size", "Newest write", "Versions", "Stored", "Protection", "Recovery"].map((h, i) =>
        el("th", { class: ([2, 4, 5].includes(i) ? "num" : "") + ([1, 5].includes(i) ? " hide-narrow" : ""), text: h })))),
      el("tbody", {}, rows)))
      : el("div", { class: "card" }, el("p", { text: "No volume yet. Import a disk with rewind import VOLUME IMAGE, or protect one with rewind protect." })));
  ready("volumes");
  // New writes, volumes and protections show without a reload.
  schedule((recs || []).some(r => r.state === "copying") ? 5000 : 10000);
}

function recoveryText(r) {
  return r.state === "copying" ? `copying ${percent(r)}%` : r.state;
}
function percent(r) {
  if (r.state === "cut over" || (r.total_bytes > 0 && r.done_bytes >= r.total_bytes)) return 100;
  return r.total_bytes > 0 ? Math.floor((100 * r.done_bytes) / r.total_bytes) : 0;
}

// --- one volume ----------------------------------------------------------

async function volumeView(name, params) {
  loading("volume");
  const since = params.get("since") || "", until = params.get("until") || "";
  const [vol, act, points] = await Promise.all([
    get(vpath(name)), get(vpath(name) + "/activity" + q({ since, until, buckets: 120 })), get(vpath(name) + "/points")]);
  const versions = await get(vpath(name) + "/versions" + q({ since: act.from, until: act.to, limit: 25 }));
  const from = Date.parse(act.from), to = Date.parse(act.to);
  const zoomed = since || until;

  const chart = timelineChart(act, points, from, to, name);
  const range = el("input", { id: "range", type: "range", min: 0, max: 1000, value: 1000, "aria-label": "pick an instant" });
  const whenInput = el("input", { id: "when", class: "grow", placeholder: "any WHEN: 2026-12-06 01:55, -10m, a label, latest", "aria-label": "instant" });
  const picked = el("div", { class: "card", id: "picked" });

  const pick = async spec => {
    $("#action-error").textContent = "";
    try {
      const r = await get("/v1/resolve" + q({ spec }));
      showInstant(picked, name, r, vol);
      const t = Date.parse(r.instant);
      if (to > from && t >= from && t <= to) {
        range.value = Math.round((1000 * (t - from)) / (to - from));
        moveCursor(chart, (t - from) / (to - from));
      }
    } catch (e) {
      put(picked, el("p", { class: "error", id: "pick-error", text: e.message }));
    }
  };
  range.addEventListener("input", () => moveCursor(chart, range.value / 1000));
  range.addEventListener("change", () => {
    const v = Number(range.value);
    pick(v >= 1000 ? `${name}@${act.to}` : `${name}@${new Date(from + ((to - from) * v) / 1000).toISOString()}`);
  });
  const go = () => { const w = whenInput.value.trim(); if (w) pick(`${name}@${w}`); };
  whenInput.addEventListener("keydown", e => { if (e.key === "Enter") go(); });
  chart.addEventListener("click", e => {
    const m = e.target.closest(".mark");
    if (m) { pick(`${name}@${m.dataset.label}`); return; }
    const b = e.target.closest("rect.bar");
    if (b) location.hash = `#/volumes/${encodeURIComponent(name)}?` + new URLSearchParams({ since: b.dataset.start, until: b.dataset.end });
  });

  const rows = versions.slice().reverse().map(v => el("tr", { "data-time": v.time },
    el("td", {}, el("a", { href: "#", text: when(v.time), title: v.time, onclick: e => { e.preventDefault(); pick(`${name}@${v.time}`); } })),
    el("td", { text: v.kind }), el("td", { class: "num", text: count(v.blocks) }), el("td", { class: "num", text: bytes(v.bytes) }),
    el("td", { class: "num hide-narrow", text: bytes(v.stored) })));

  put(view(), 
    el("h1", {}, el("a", { href: "#/volumes", text: "Volumes" }), " / ", name),
    el("p", { class: "muted" }, `${vol.kind}${vol.parent ? " of " + vol.parent : ""}, ${bytes(vol.size)}, ${versionsText(vol.versions)} from ${when(vol.first)} to ${when(vol.last)}, ${bytes(vol.stored_bytes)} stored`),
    el("div", { class: "card" },
      el("div", { class: "row" }, el("b", { class: "grow", text: `${versionsText(act.versions)} from ${when(act.from)} to ${when(act.to)}` }),
        el("span", { class: "legend muted" }, el("i", { class: "sw-bar" }), " writes ", el("i", { class: "sw-bytes" }), " bytes changed ", el("i", { class: "sw-mark" }), " labels"),
        zoomed ? el("a", { href: `#/volumes/${encodeURIComponent(name)}`, id: "zoom-out", text: "Whole history" }) : el("span", { class: "muted", text: "click a bar to zoom in" })),
      chart, el("div", { class: "row axis" }, el("span", { class: "grow", text: when(act.from) }), el("span", { text: when(act.to) })), range,
      el("div", { class: "row" }, whenInput, el("button", { id: "when-go", type: "button", onclick: go, text: "Go" })),
      points.length ? el("div", { class: "labels", style: null },
        el("span", { class: "muted", text: "Labels:" }),
        points.map(p => el("button", { type: "button", "data-point": p.label, title: p.time, text: p.label, onclick: () => pick(`${name}@${p.label}`) }))) : null),
    picked,
    el("h2", { text: "Newest versions in this interval" }),
    el("div", { class: "scroll" }, el("table", { id: "versions" },
      el("thead", {}, el("tr", {}, el("th", { text: "Time" }), el("th", { text: "Kind" }), el("th", { class: "num", text: "Blocks" }),
        el("th", { class: "num", text: "Bytes" }), el("th", { class: "num hide-narrow", text: "Stored" }))),
      el("tbody", {}, rows))));
  // #/volumes/NAME?at=WHEN links to an instant.
  await pick(`${name}@${params.get("at") || act.to || "latest"}`);
  ready("volume");
}

// The chart is 1000 units wide; marks and the cursor at either end of the
// interval keep PAD units of room.
const PAD = 8;
const xAt = f => PAD + f * (1000 - 2 * PAD);

// timelineChart draws writes per interval as bars (height: versions,
// title: bytes changed) and the labels as marks.
function timelineChart(act, points, from, to, name) {
  const W = 1000, H = 150, top = 18, base = H - 2;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const set = (e, a) => { for (const [k, v] of Object.entries(a)) e.setAttribute(k, v); return e; };
  set(svg, { id: "timeline", class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-versions": act.versions, role: "img",
    "aria-label": `writes to ${name} over time` });
  const buckets = act.buckets || [];
  const max = Math.max(1, ...buckets.map(b => b.versions));
  const bw = buckets.length ? (W - 2 * PAD) / buckets.length : W - 2 * PAD;
  const stepMs = (act.step_ns || 0) / 1e6;
  const barW = Math.max(1, Math.min(bw * 0.8, 24));
  buckets.forEach((b, i) => {
    if (!b.versions) return;
    const h = Math.max(2, (base - top) * Math.sqrt(b.versions / max));
    const start = Date.parse(b.start);
    const r = set(document.createElementNS(ns, "rect"), { class: "bar", x: PAD + i * bw + (bw - barW) / 2, y: base - h, width: barW, height: h,
      "data-start": b.start, "data-end": new Date(start + stepMs).toISOString() });
    const t = document.createElementNS(ns, "title");
    t.textContent = `${when(b.start)}: ${count(b.versions)} writes, ${bytes(b.bytes)} changed`;
    r.append(t);
    svg.append(r);
  });
  // Bytes changed per interval, as a line over the bars.
  const maxB = Math.max(1, ...buckets.map(b => b.bytes));
  if (buckets.some(b => b.bytes > 0)) {
    const pts = buckets.map((b, i) => `${(PAD + (i + 0.5) * bw).toFixed(1)},${(base - (base - top) * Math.sqrt(b.bytes / maxB)).toFixed(1)}`);
    svg.append(set(document.createElementNS(ns, "polyline"), { class: "bytes", points: pts.join(" "), "vector-effect": "non-scaling-stroke" }));
  }
  svg.append(set(document.createElementNS(ns, "line"), { class: "axis", x1: PAD, x2: W - PAD, y1: base, y2: base }));
  for (const p of points) {
    const t = Date.parse(p.time);
    if (!(t >= from && t <= to)) continue;
    const x = xAt(to > from ? (t - from) / (to - from) : 0.5);
    const g = set(document.createElementNS(ns, "g"), { class: "mark", "data-label": p.label });
    g.append(set(document.createElementNS(ns, "rect"), { x: x - 8, y: 0, width: 16, height: base, fill: "transparent" }));
    g.append(set(document.createElementNS(ns, "line"), { x1: x, x2: x, y1: top - 6, y2: base }));
    g.append(set(document.createElementNS(ns, "path"), { d: `M${x - 6} 0 L${x + 6} 0 L${x} ${top - 4} Z` }));
    const tt = document.createElementNS(ns, "title");
    tt.textContent = `${p.label}: ${when(p.time)}`;
    g.append(tt);
    svg.append(g);
  }
  svg.append(set(document.createElementNS(ns, "line"), { class: "cursor", x1: xAt(1), x2: xAt(1), y1: 0, y2: base }));
  return svg;
}

function moveCursor(svg, f) {
  const c = svg.querySelector("line.cursor");
  const x = xAt(Math.min(1, Math.max(0, f)));
  c.setAttribute("x1", x);
  c.setAttribute("x2", x);
}

// nbdAddress is host:port of the NBD listener as this browser reaches it.
function nbdURI(exportName) {
  const s = state.server || {};
  if (!s.nbd) return "";
  let [host, port] = [s.nbd.replace(/:\d+$/, ""), (/:(\d+)$/.exec(s.nbd) || [])[1]];
  host = host.replace(/^\[|\]$/g, "");
  if (host === "" || host === "0.0.0.0" || host === "::") host = location.hostname;
  if (host.includes(":")) host = `[${host}]`;
  return `${s.nbd_tls ? "nbds" : "nbd"}://${host}${port ? ":" + port : ""}/${exportName}`;
}

function showInstant(card, name, r, vol) {
  const compact = r.spec.slice(r.spec.indexOf("@") + 1);
  const uri = nbdURI(r.export);
  const fuse = state.server && state.server.mount ? `${state.server.mount}/${name}/at/${compact}/disk.img` : "";
  const copy = text => el("button", { type: "button", class: "copy quiet", disabled: !text, onclick: e => copyText(text, e.target), text: "Copy" });
  put(card, 
    el("div", { class: "row" }, el("b", { text: "Instant" }),
      el("span", { id: "instant", "data-spec": r.spec, title: r.instant, text: `${when(r.instant)} (${r.instant})` })),
    el("div", { class: "addr" },
      el("span", { class: "muted", text: "NBD" }), el("code", { id: "nbd-uri", text: uri }), copy(uri),
      el("span", { class: "muted", text: "FUSE" }), el("code", { id: "fuse-path", text: fuse }), copy(fuse)),
    uri ? null : el("p", { class: "muted", text: "The daemon serves no NBD (start it with --nbd)." }),
    el("div", { class: "actions" },
      el("button", { id: "btn-clone", type: "button", onclick: () => cloneDialog(name, r), text: "Clone…" }),
      el("button", { id: "btn-mount", type: "button", onclick: () => mountAction(r), text: "Mount files" }),
      el("button", { id: "btn-recover", type: "button", onclick: () => recoverDialog(name, r, vol), text: "Recover…" }),
      el("button", { id: "btn-label", type: "button", class: "quiet", onclick: () => labelDialog(name, r), text: "Add label…" })));
}

async function copyText(text, button) {
  try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
  catch { const s = getSelection(), rg = document.createRange(); rg.selectNodeContents(button.previousElementSibling); s.removeAllRanges(); s.addRange(rg); button.textContent = "Selected"; }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// --- actions --------------------------------------------------------------

// dialog opens the action dialog with fields and a submit button; submit
// runs the action, showing its error or result in the dialog.
function dialog(title, fields, goId, goText, run) {
  const d = $("#action");
  $("#action-title").textContent = title;
  $("#action-error").textContent = "";
  $("#action-result").textContent = "";
  const go = el("button", { id: goId, type: "button", text: goText });
  go.addEventListener("click", async () => {
    $("#action-error").textContent = "";
    $("#action-result").textContent = "";
    go.disabled = true;
    try { $("#action-result").textContent = await run(); }
    catch (e) { $("#action-error").textContent = e.message; }
    finally { go.disabled = false; }
  });
  $("#action-body").replaceChildren(...fields, el("div", { class: "buttons" }, go));
  if (!d.open) d.showModal();
}
const field = (id, label, attrs = {}) => [el("label", { for: id, text: label }), el("input", { id, ...attrs })];

function cloneDialog(name, r) {
  const compact = r.spec.slice(r.spec.indexOf("@") + 1).replace(/[.:]/g, "").replace(/Z$/, "z");
  dialog(`Clone ${r.spec}`, [
    el("p", { class: "muted", text: "A writable volume that starts as this instant. History is never changed." }),
    ...field("clone-name", "New volume", { value: `${name}-${compact}`.slice(0, 64), required: true })],
  "clone-go", "Clone", async () => {
    const v = await call("POST", "/v1/clones", { from: r.spec, name: $("#clone-name").value.trim() });
    return `Cloned to ${v.name}. ${nbdURI(v.name) ? "Serve it at " + nbdURI(v.name) : ""}`;
  });
}

function labelDialog(name, r) {
  dialog(`Label ${r.spec}`, field("label-name", "Label", { required: true, placeholder: "before-patch" }), "label-go", "Add label", async () => {
    const p = await call("POST", vpath(name) + "/points", { label: $("#label-name").value.trim(), at: r.instant });
    setTimeout(route, 600);
    return `Labelled ${when(p.time)} as ${p.label}.`;
  });
}

function recoverDialog(name, r, vol) {
  dialog(`Recover ${r.spec}`, [
    el("p", { class: "muted", text: "Serve this instant now as a writable volume, and copy it in the background to the target disk; cut over when it has caught up." }),
    ...field("recover-target", "Target (an NBD address of the production disk)", { required: true, placeholder: "nbd://host:10809/export" }),
    ...field("recover-as", "Serve as volume (optional)", { placeholder: `${name}-recovered` }),
    ...field("recover-bwlimit", "Copy at most (bytes per second, optional)", { placeholder: "unlimited, or 200M" })],
  "recover-go", "Start recovery", async () => {
    const limit = rate($("#recover-bwlimit").value);
    const st = await call("POST", "/v1/recoveries", { from: r.spec, target: $("#recover-target").value.trim(),
      as: $("#recover-as").value.trim() || undefined, bwlimit: limit || undefined });
    $("#action").close();
    location.hash = "#/recoveries";
    return `Recovery ${st.name} started.`;
  });
}

// rate reads a bandwidth like 200M, 1.5GiB/s or 50000 as bytes per
// second (0: none given).
function rate(text) {
  const t = text.trim();
  if (!t) return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:\/s)?$/i.exec(t);
  if (!m) throw new Error(`${t} is not a rate: give bytes per second, like 200M or 1G`);
  return Math.round(Number(m[1]) * 1024 ** " kmgt".indexOf((m[2] || " ").toLowerCase()));
}

async function mountAction(r) {
  dialog(`Mount the files of ${r.spec}`, [el("p", { class: "muted", text: "Mounting the files inside the disk, read-only…" })], "mount-again", "Mount again", async () => {
    const m = await call("POST", "/v1/mounts", { spec: r.spec, files: true });
    return `Files of ${r.spec} are at ${m.dir} on the server.`;
  });
  $("#mount-again").click();
}

// --- recoveries -------------------------------------------------------------

async function recoveriesView() {
  loading("recoveries");
  const recs = (await get("/v1/recoveries")) || [];
  const rows = recs.map(r => {
    const pct = percent(r);
    return el("tr", { "data-recovery": r.name, "data-state": r.state },
      el("td", {}, el("a", { href: "#/volumes/" + encodeURIComponent(r.name), text: r.name })),
      el("td", { class: "hide-narrow wrap", title: r.source, text: r.source }),
      el("td", { class: "hide-narrow wrap" }, el("code", { text: r.target })),
      el("td", { class: "state" }, el("span", { class: "badge " + (r.state === "failed" ? "warn" : "on"), title: r.reason || r.mode || "", text: r.state })),
      el("td", { class: "progress num" }, el("progress", { max: 100, value: pct }), ` ${pct}%`),
      el("td", { class: "num hide-narrow", text: `${bytes(r.done_bytes)} of ${bytes(r.total_bytes)}` }),
      el("td", { class: "rate num", text: r.state === "copying" ? bytes(r.rate_bytes_per_second) + "/s" : "–" }),
      el("td", { class: "eta num", text: r.state === "copying" ? duration(r.eta_seconds) : "–" }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "cutover", disabled: r.state !== "copying" && r.state !== "converged", onclick: () => cutover(r), text: "Cut over" }), " ",
        el("button", { type: "button", class: "limit quiet", disabled: r.state !== "copying", onclick: () => limitRecovery(r),
          title: r.bwlimit ? `at most ${bytes(r.bwlimit)}/s` : "no limit", text: r.bwlimit ? `${bytes(r.bwlimit)}/s` : "Limit…" }), " ",
        el("button", { type: "button", class: "cancel quiet", disabled: r.state !== "copying" && r.state !== "converged", onclick: () => cancelRecovery(r), text: "Cancel" }),
        r.state === "failed" || r.state === "cancelled" ? [" ", el("button", { type: "button", class: "retry", onclick: () => retryRecovery(r),
          title: r.resumable ? "The copy saved its progress: it can go on from there" : "Copies from the beginning", text: r.resumable ? "Resume…" : "Retry…" })] : null),
      r.reason ? el("td", { class: "error", text: r.reason }) : null);
  });
  put(view(), 
    el("h1", { text: "Recoveries" }),
    el("p", { class: "muted", text: "Each recovery serves an instant as a writable volume while it copies it to the production disk. Cut over when it has converged: writes stop for a moment, the last changes are copied, and the disk is ready." }),
    el("p", { class: "error", id: "recoveries-error" }),
    rows.length ? el("div", { class: "scroll" }, el("table", { id: "recoveries" },
      el("thead", {}, el("tr", {}, ["Volume", "From", "Target", "State", "Progress", "Copied", "Rate", "ETA", ""].map((h, i) =>
        el("th", { class: [1, 2, 5].includes(i) ? "hide-narrow" : null, text: h })))),
      el("tbody", {}, rows)))
      : el("div", { class: "card" }, el("p", { text: "No recovery. Start one from a volume's instant (Recover…), or with rewind recover." })));
  ready("recoveries");
  if (recs.some(r => r.state === "copying")) schedule(1000);
  else if (recs.some(r => r.state === "converged")) schedule(5000);
}

async function cutover(r) {
  if (!confirm(`Cut over ${r.name} to ${r.target}?\n\nWrites to ${r.name} pause while the last changes are copied; afterwards the target disk holds the volume and the recovery ends.`)) return;
  try { await call("POST", `/v1/recoveries/${encodeURIComponent(r.name)}/cutover`); }
  catch (e) { $("#recoveries-error").textContent = e.message; return; }
  route();
}

async function limitRecovery(r) {
  const text = prompt(`Copy ${r.name} at most how fast? Bytes per second, like 200M; empty for no limit.`, r.bwlimit ? String(r.bwlimit) : "");
  if (text === null) return;
  try { await call("PATCH", `/v1/recoveries/${encodeURIComponent(r.name)}`, { bwlimit: rate(text) }); }
  catch (e) { $("#recoveries-error").textContent = e.message; return; }
  route();
}

async function cancelRecovery(r) {
  if (!confirm(`Cancel the recovery of ${r.name}? The copy stops; the volume stays.`)) return;
  try { await call("DELETE", `/v1/recoveries/${encodeURIComponent(r.name)}`); }
  catch (e) { $("#recoveries-error").textContent = e.message; return; }
  route();
}

async function retryRecovery(r) {
  if (r.resumable && r.target.startsWith("nbd") &&
      confirm(`Go on copying ${r.name} into ${r.target} from where the copy stopped (it had copied about ${bytes(r.done_bytes)} of ${bytes(r.total_bytes)})? Only if it is the same disk and still holds what was copied.\n\nOK goes on; Cancel copies from the beginning, into a target you choose.`)) {
    try { await call("POST", `/v1/recoveries/${encodeURIComponent(r.name)}/retry`, { target: r.target, resume: true }); }
    catch (e) { $("#recoveries-error").textContent = e.message; return; }
    route();
    return;
  }
  const target = prompt(`Copy ${r.name} again, from the beginning, into which target? nbd://HOST:PORT/EXPORT (a file or device: rewind recover retry on the server). The volume stays served meanwhile.`,
    r.target.startsWith("nbd") ? r.target : "");
  if (target === null) return;
  if (!target.trim()) { $("#recoveries-error").textContent = "Retry needs a target: nbd://HOST:PORT/EXPORT."; return; }
  try { await call("POST", `/v1/recoveries/${encodeURIComponent(r.name)}/retry`, { target: target.trim() }); }
  catch (e) { $("#recoveries-error").textContent = e.message; return; }
  route();
}

// --- store ------------------------------------------------------------------

async function storeView() {
  loading("store");
  const [st, vols] = await Promise.all([get("/v1/stats"), get("/v1/volumes")]);
  const v0 = (vols || [])[0] || {};
  const lastPrune = (vols || []).map(v => v.last_prune).filter(Boolean).sort((a, b) => (a.time < b.time ? 1 : -1))[0];
  const vr = v0.last_verify, gc = v0.last_gc;
  const errors = [];
  if (v0.unwritable) errors.push(v0.unwritable);
  if (vr && !vr.ok) errors.push(`The last verify found ${count(vr.lost_chunks)} lost chunks` + (vr.affected || []).map(a => `; ${a.volume}: ${count(a.block_versions)} block versions from ${when(a.first)}`).join(""));
  const stat = (cls, label, value, title) => el("div", { class: cls, title }, el("span", { class: "muted", text: label }), el("b", { text: value }));
  put(view(), 
    el("h1", { text: "Store" }),
    el("div", { id: "store" },
      el("div", { class: "stats" },
        stat("volumes", "Volumes", count(st.volumes)),
        stat("versions", "Versions", count(st.versions)),
        stat("logical", "Recorded", bytes(st.logical_bytes), "bytes all versions recorded"),
        stat("stored", "Stored", bytes(st.stored_bytes), st.store ? "in " + st.store : "pack files on disk"),
        stat("dedup", "Dedup", (st.dedup_ratio || 0).toFixed(2) + "×"),
        stat("compression", "Compression", (st.compression_ratio || 0).toFixed(2) + "×"),
        stat("free", "Free space", st.free_bytes == null ? "–" : bytes(st.free_bytes)),
        stat("index", "Index", bytes(st.index_bytes))),
      el("h2", { text: "Health" }),
      el("div", { class: "card" },
        el("p", { class: "where" }, "Chunks are in ", el("code", { text: st.store || (state.server && state.server.data) || "the data directory" }),
          st.store ? ` (local cache ${bytes(st.cache_bytes)})` : ""),
        el("p", { class: "last-verify" }, el("b", { text: "Last verify: " }), vr ? `${when(vr.time)} (${ago(vr.time)}), ${count(vr.packs)} packs, ${bytes(vr.bytes)}, ` +
          `${vr.ok ? "nothing lost" : count(vr.lost_chunks) + " chunks lost"}, ${count(vr.repaired_units)} units repaired` : "never; run rewind verify or serve --verify-every"),
        el("p", { class: "last-gc" }, el("b", { text: "Last GC: " }), gc ? `${when(gc.time)} (${ago(gc.time)}), ${count(gc.removed_chunks)} chunks removed, ${bytes(gc.freed_bytes)} freed` : "never"),
        el("p", { class: "last-prune" }, el("b", { text: "Last prune: " }), lastPrune ? `${when(lastPrune.time)} (${ago(lastPrune.time)}), ${count(lastPrune.removed_versions)} versions removed` : "never"),
        el("p", { class: "errors " + (errors.length ? "error" : "ok") }, errors.length ? errors.join(". ") : "No errors."))));
  ready("store");
}

boot();
