// SyncStream dashboard: live over the control API's WebSocket (/api/v1/ws), changes
// through the REST API (/api/v1/...). No framework; uPlot (vendored) draws the plots.
"use strict";

const HEAT_SPAN_US = 300e6; // the heatmap's 5 minutes
const BIN_US = 5e6;         // one heatmap column
const KNOB_MAX_MS = 50;     // the manual knob's range, ±ms

const S = {
  devices: new Map(),   // name → device (as GET /api/v1/devices/{name})
  groups: [],
  streams: [],
  history: new Map(),   // name → [{ts_us, drift_ms, residual_ms, confidence}]
  calibration: null,
  clock: null,          // {tx, perf}: transmitter µs at performance.now() perf
  cards: new Map(),     // name → {el, refs, plot}
};

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const fmt = (v, digits = 2, unit = " ms") =>
  v === null || v === undefined || Number.isNaN(v) ? "—" : `${v >= 0 && unit === " ms" ? "+" : ""}${v.toFixed(digits)}${unit}`;
const txNow = () => (S.clock ? S.clock.tx + (performance.now() - S.clock.perf) * 1000 : 0);

function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 4000);
}

// ---- the API token ----------------------------------------------------------------
// The transmitter prints the dashboard's address with "#token=…"; the token is kept in
// this browser (localStorage) and taken out of the address bar. Without it, or when it
// is refused, the sign-in form asks for it (`syncstream key token` prints it).

const TOKEN_KEY = "syncstream-token";
function takeTokenFromAddress() {
  const m = /(?:^#|&)token=([0-9a-fA-F]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
}
const token = () => localStorage.getItem(TOKEN_KEY) || "";
const authHeaders = () => (token() ? { authorization: "Bearer " + token() } : {});

function showSignIn(message) {
  const f = $("#signin");
  $("#signin-message").textContent = message;
  f.hidden = false;
  $("input", f).focus();
}

async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch("/api/v1" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({}));
  if (r.status === 401) showSignIn(j.error || "This dashboard needs the API token.");
  if (!r.ok) {
    toast(j.error || `${method} ${path}: ${r.status}`);
    throw new Error(j.error || r.statusText);
  }
  return j;
}

// ---- live connection ------------------------------------------------------------

let backoff = 500;
async function connect() {
  // A WebSocket cannot say why it was refused: ask the API first.
  const probe = await fetch("/api/v1/sync", { headers: authHeaders() }).catch(() => null);
  if (probe && probe.status === 401) {
    const j = await probe.json().catch(() => ({}));
    setLink(false);
    showSignIn(j.error || "This dashboard needs the API token.");
    return;
  }
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  const q = token() ? "?token=" + encodeURIComponent(token()) : "";
  const ws = new WebSocket(proto + location.host + "/api/v1/ws" + q);
  ws.onopen = () => { setLink(true); backoff = 500; };
  ws.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (err) { console.error(err); } };
  ws.onclose = () => {
    setLink(false);
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
  ws.onerror = () => ws.close();
}

function setLink(up) {
  const l = $("#link");
  l.className = "link " + (up ? "up" : "down");
  l.textContent = up ? "live" : "reconnecting…";
}

function onEvent(m) {
  switch (m.type) {
    case "snapshot":
      S.clock = { tx: m.now_us, perf: performance.now() };
      S.devices = new Map(m.devices.map((d) => [d.name, d]));
      S.history = new Map(Object.entries(m.history || {}));
      S.groups = m.groups;
      S.streams = m.streams;
      S.calibration = m.calibration;
      renderAll();
      break;
    case "device":
      S.devices.set(m.device.name, m.device);
      renderDevice(m.device);
      renderSummary();
      break;
    case "drift": {
      const h = S.history.get(m.device) || [];
      h.push({ ts_us: m.ts_us, drift_ms: m.drift_ms, residual_ms: m.residual_ms, confidence: m.confidence });
      const since = txNow() - HEAT_SPAN_US;
      while (h.length && h[0].ts_us < since) h.shift();
      S.history.set(m.device, h);
      const d = S.devices.get(m.device);
      if (d) {
        Object.assign(d, { drift_ms: m.drift_ms, confidence: m.confidence, signal_strength_db: m.signal_strength_db });
        renderDevice(d);
      }
      break;
    }
    case "offset": {
      const d = S.devices.get(m.device);
      if (d) { d.offset_ms = m.offset_ms; renderDevice(d); }
      break;
    }
    case "group":
      S.groups = m.groups;
      renderGroups();
      for (const d of S.devices.values()) renderDevice(d);
      break;
    case "streams":
      S.streams = m.streams;
      renderStreams();
      renderGroups();
      break;
    case "calibration":
      S.calibration = m.calibration;
      renderCalibration();
      break;
  }
}

function renderAll() {
  const box = $("#devices");
  box.textContent = "";
  S.cards.clear();
  if (S.devices.size === 0) box.append(el("p", { class: "empty" }, "No receiver has reported yet."));
  for (const d of [...S.devices.values()].sort((a, b) => a.name.localeCompare(b.name))) renderDevice(d);
  renderGroups();
  renderStreams();
  renderCalibration();
  renderSummary();
}

function renderSummary() {
  const online = [...S.devices.values()].filter((d) => d.online);
  const latest = online
    .map((d) => (S.history.get(d.name) || []).filter((p) => p.residual_ms !== null && p.residual_ms !== undefined).pop())
    .filter((p) => p && txNow() - p.ts_us < 10e6)
    .map((p) => p.residual_ms);
  const spread = latest.length >= 2 ? Math.max(...latest) - Math.min(...latest) : null;
  $("#summary").textContent = `${online.length} of ${S.devices.size} devices online` +
    (spread === null ? "" : ` · largest difference now ${spread.toFixed(3)} ms`);
}

// ---- device cards -----------------------------------------------------------------

function metric(key, label) {
  return el("div", { class: "metric" }, el("span", { class: "k" }, label), el("span", { class: "v " + key }, "—"));
}

function makeCard(name) {
  const card = el("div", { class: "card", "data-device": name, draggable: "true" });
  card.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", name));
  const knob = el("input", { type: "range", class: "adjust", min: -KNOB_MAX_MS, max: KNOB_MAX_MS, step: "0.1", value: "0", "aria-label": "manual offset" });
  // Trims go out one after the other, each from the last one asked for, so quick
  // steps add up whatever order the answers come in.
  let target = null;
  let chain = Promise.resolve();
  const setAdjust = (v) => {
    target = v;
    chain = chain
      .then(() => api("PUT", `/devices/${name}/adjust`, { manual_adjust_ms: v }))
      .then((dev) => { if (target === v) { target = null; S.devices.set(name, dev); renderDevice(dev); } })
      .catch(() => { target = null; });
  };
  const adjustBy = (step) => () => {
    const d = S.devices.get(name);
    const base = target !== null ? target : d ? d.manual_adjust_ms : 0;
    setAdjust(Math.round((base + step) * 10) / 10);
  };
  knob.addEventListener("change", () => setAdjust(Number(knob.value)));
  const volume = el("input", { type: "range", class: "volume", min: "0", max: "100", step: "1", "aria-label": "volume" });
  volume.addEventListener("change", () => api("PUT", `/devices/${name}/volume`, { volume: Number(volume.value) / 100 }).catch(() => {}));
  const mute = el("button", { class: "mute", onclick: () => {
    const d = S.devices.get(name);
    api("PUT", `/devices/${name}/mute`, { muted: !(d && d.muted) }).then((dev) => { S.devices.set(name, dev); renderDevice(dev); }).catch(() => {});
  } }, "Mute");
  const group = el("select", { class: "group-select", "aria-label": "group" });
  group.addEventListener("change", () => moveToGroup(name, group.value));
  const refs = {
    name: el("span", { class: "name" }, name),
    kind: el("span", { class: "kind" }),
    state: el("span", { class: "state" }),
    lock: el("span", { class: "lock" }),
    knob, knobVal: el("span", { class: "val adjust-value" }, "0.0 ms"), volume, mute, group,
    spark: el("div", { class: "spark" }),
  };
  card.append(
    el("div", { class: "top" }, el("div", {}, refs.name, " ", refs.kind), refs.state),
    el("div", { class: "metrics" },
      metric("drift", "drift"), metric("offset", "buffer offset"), metric("confidence", "confidence"),
      metric("signal", "signal"), metric("stream", "stream"), metric("underruns", "underruns")),
    el("div", { class: "controls" },
      el("div", { class: "knob" },
        el("span", { class: "lbl" }, "trim"),
        el("button", { class: "adj-minus-coarse", title: "−1 ms", onclick: adjustBy(-1) }, "−1"),
        el("button", { class: "adj-minus", title: "−0.1 ms", onclick: adjustBy(-0.1) }, "−.1"),
        knob,
        el("button", { class: "adj-plus", title: "+0.1 ms", onclick: adjustBy(0.1) }, "+.1"),
        el("button", { class: "adj-plus-coarse", title: "+1 ms", onclick: adjustBy(1) }, "+1"),
        refs.knobVal),
      el("div", { class: "row" }, el("label", {}, "vol", volume), mute, refs.lock),
      el("div", { class: "row" },
        el("label", {}, "group", group),
        el("button", { class: "resync", onclick: () => api("POST", `/devices/${name}/resync`).then(() => toast(`${name}: measuring again`)).catch(() => {}) }, "Resync"),
        el("button", { class: "test-tone", onclick: () => api("POST", `/devices/${name}/test_tone`, { signal: "sweep" }).then(() => toast(`${name}: test tone`)).catch(() => {}) }, "Test tone"),
        el("button", { class: "announce", title: "say its name, drift and offset through its speaker", onclick: () => api("POST", `/devices/${name}/announce`).then(() => toast(`${name}: announcing`)).catch(() => {}) }, "Announce"))),
    refs.spark);
  const box = $("#devices");
  const empty = $(".empty", box);
  if (empty) empty.remove();
  const after = [...box.children].find((c) => c.dataset.device > name);
  box.insertBefore(card, after || null);
  const entry = { el: card, refs, plot: null };
  S.cards.set(name, entry);
  return entry;
}

function renderDevice(d) {
  const c = S.cards.get(d.name) || makeCard(d.name);
  const r = c.refs, card = c.el;
  card.classList.toggle("offline", !d.online);
  card.classList.toggle("muted", !!d.muted);
  r.kind.textContent = [d.output, d.target].filter(Boolean).join(" · ");
  r.state.textContent = d.online ? d.state : "offline";
  r.state.className = "state " + (d.online ? d.state : "offline");
  r.lock.textContent = d.locked ? "locked" : "acquiring";
  r.lock.className = "lock " + (d.locked ? "on" : "off");
  $(".drift", card).textContent = fmt(d.drift_ms, 3);
  $(".offset", card).textContent = d.offset_ms === null || d.offset_ms === undefined ? "—" : `${d.offset_ms.toFixed(2)} ms`;
  $(".confidence", card).textContent = d.confidence === null || d.confidence === undefined ? "—" : d.confidence.toFixed(2);
  $(".signal", card).textContent = d.signal_strength_db === null || d.signal_strength_db === undefined ? "—" : `${d.signal_strength_db.toFixed(0)} dBFS`;
  $(".stream", card).textContent = d.stream;
  $(".underruns", card).textContent = String(d.underruns);
  if (document.activeElement !== r.knob) r.knob.value = String(d.manual_adjust_ms);
  r.knobVal.textContent = `${d.manual_adjust_ms >= 0 ? "+" : ""}${d.manual_adjust_ms.toFixed(1)} ms`;
  if (document.activeElement !== r.volume) r.volume.value = String(Math.round(d.volume * 100));
  r.mute.textContent = d.muted ? "Unmute" : "Mute";
  r.mute.classList.toggle("on", !!d.muted);
  fillGroupSelect(r.group, d.group);
  drawSpark(d.name);
}

function fillGroupSelect(sel, current) {
  const names = S.groups.map((g) => g.name);
  if ([...sel.options].map((o) => o.value).join() !== names.join()) {
    sel.textContent = "";
    for (const n of names) sel.append(el("option", { value: n }, n));
  }
  if (document.activeElement !== sel) sel.value = current;
}

function moveToGroup(device, group) {
  const g = S.groups.find((x) => x.name === group);
  const devices = [...new Set([...(g ? g.devices : []), device])];
  return api("PUT", `/groups/${group}`, { devices }).catch(() => {});
}

function drawSpark(name) {
  const c = S.cards.get(name);
  if (!c || typeof uPlot === "undefined") return;
  const now = txNow();
  const pts = (S.history.get(name) || []).filter((p) => p.residual_ms !== null && p.residual_ms !== undefined);
  const data = [pts.map((p) => (p.ts_us - now) / 1e6), pts.map((p) => p.residual_ms)];
  const width = Math.max(200, c.el.clientWidth - 26);
  if (!c.plot) {
    c.plot = new uPlot({
      width, height: 90, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false, range: (u, lo) => [Math.min(lo ?? -60, -60), 0] }, y: { range: (u, lo, hi) => [Math.min(lo ?? 0, -0.5), Math.max(hi ?? 0, 0.5)] } },
      axes: [{ stroke: "#8d97a5", size: 24, values: (u, v) => v.map((s) => `${Math.round(s)}s`) },
             { stroke: "#8d97a5", size: 52, values: (u, v) => v.map((s) => s.toFixed(2)) }],
      series: [{}, { label: "residual ms", stroke: "#5aa9f0", width: 1.5, points: { size: 3 } }],
    }, data, c.refs.spark);
  } else {
    if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({ width, height: 90 });
    c.plot.setData(data);
  }
}

// ---- heatmap ------------------------------------------------------------------------

function colour(ms) {
  if (ms === null || ms === undefined) return "#3a4250";
  const a = Math.abs(ms);
  // green (≤ 0.1 ms) → yellow (1 ms) → red (≥ 5 ms), on a log scale
  const t = Math.min(1, Math.max(0, (Math.log10(Math.max(a, 1e-3)) + 1) / Math.log10(50)));
  const hue = 130 * (1 - t);
  return `hsl(${hue}, 70%, ${45 + 5 * (1 - t)}%)`;
}

function drawHeatmap() {
  const cv = $("#heatmap");
  const names = [...S.devices.keys()].sort();
  const rowH = 22, labelW = 90;
  cv.height = Math.max(1, names.length) * rowH + 18;
  cv.width = cv.clientWidth || 600;
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const bins = HEAT_SPAN_US / BIN_US;
  const w = (cv.width - labelW) / bins;
  const now = txNow();
  g.font = "12px system-ui";
  names.forEach((name, row) => {
    g.fillStyle = "#e6e9ee";
    g.fillText(name, 4, row * rowH + 15);
    const cells = new Array(bins).fill(undefined);
    for (const p of S.history.get(name) || []) {
      const b = bins - 1 - Math.floor((now - p.ts_us) / BIN_US);
      if (b < 0 || b >= bins) continue;
      const v = p.residual_ms === undefined ? null : p.residual_ms;
      if (v === null) { if (cells[b] === undefined) cells[b] = null; }
      else if (cells[b] === undefined || cells[b] === null || Math.abs(v) > Math.abs(cells[b])) cells[b] = v;
    }
    cells.forEach((v, b) => {
      if (v === undefined) return;
      g.fillStyle = colour(v);
      g.fillRect(labelW + b * w + 1, row * rowH + 2, Math.max(1, w - 2), rowH - 4);
    });
  });
  g.fillStyle = "#8d97a5";
  g.fillText("−5 min", labelW, cv.height - 4);
  g.fillText("now", cv.width - 28, cv.height - 4);
  renderSummary();
}

// ---- groups and streams ---------------------------------------------------------------

function streamSelect(current, onchange) {
  const s = el("select", { class: "stream-select" });
  for (const st of S.streams) s.append(el("option", { value: st.name }, st.name));
  s.value = current;
  if (onchange) s.addEventListener("change", () => onchange(s.value));
  return s;
}

function renderGroups() {
  const box = $("#groups");
  if (box.contains(document.activeElement)) return; // do not pull a control from under a finger
  box.textContent = "";
  for (const g of S.groups) {
    const put = (body) => api("PUT", `/groups/${g.name}`, body).catch(() => {});
    const nameIn = el("input", { class: "group-name", value: g.name, size: "12", "aria-label": "group name" });
    if (g.name === "default") nameIn.disabled = true;
    nameIn.addEventListener("change", () => put({ rename: nameIn.value }));
    const vol = el("input", { type: "range", min: "0", max: "100", value: String(Math.round(g.volume * 100)), "aria-label": "group volume" });
    vol.addEventListener("change", () => put({ volume: Number(vol.value) / 100 }));
    const box1 = el("div", { class: "group", "data-group": g.name },
      el("div", { class: "row" }, nameIn, streamSelect(g.stream, (s) => put({ stream: s }))),
      el("div", { class: "members" }, ...g.devices.map((d) => el("span", { class: "chip" }, d))),
      el("div", { class: "row" }, el("label", {}, "vol", vol),
        el("button", { class: g.muted ? "on" : "", onclick: () => put({ muted: !g.muted }) }, g.muted ? "Unmute" : "Mute"),
        g.name === "default" ? "" : el("button", { class: "danger", onclick: () => api("DELETE", `/groups/${g.name}`).catch(() => {}) }, "Delete")));
    box1.addEventListener("dragover", (e) => { e.preventDefault(); box1.classList.add("drop"); });
    box1.addEventListener("dragleave", () => box1.classList.remove("drop"));
    box1.addEventListener("drop", (e) => {
      e.preventDefault();
      box1.classList.remove("drop");
      const d = e.dataTransfer.getData("text/plain");
      if (d) moveToGroup(d, g.name);
    });
    box.append(box1);
  }
  const sel = $("#new-group select");
  const cur = sel.value;
  sel.textContent = "";
  for (const st of S.streams) sel.append(el("option", { value: st.name }, st.name));
  if (cur) sel.value = cur;
}

function renderStreams() {
  const body = $("#streams tbody");
  body.textContent = "";
  for (const s of S.streams) {
    body.append(el("tr", { "data-stream": s.name },
      el("td", {}, s.name),
      el("td", { class: "uri" }, `${s.source} — ${s.uri}`),
      el("td", {}, (s.groups || []).join(", ")),
      el("td", {}, s.added_at_runtime
        ? el("button", { class: "danger", onclick: () => api("DELETE", `/streams/${s.name}`).catch(() => {}) }, "Remove")
        : "")));
  }
}

// ---- calibration ------------------------------------------------------------------------

function renderCalibration() {
  const box = $("#calibration");
  box.textContent = "";
  const c = S.calibration;
  $("#cal-start").disabled = !!(c && c.running);
  if (!c || !c.devices || Object.keys(c.devices).length === 0) return;
  if (c.running) box.append(el("p", { class: "hint" }, "Calibrating…"));
  if (c.error) box.append(el("p", { class: "hint" }, `Failed: ${c.error}`));
  for (const [name, p] of Object.entries(c.devices)) {
    const d = el("div", { class: "cal-dev", "data-cal-device": name },
      el("div", {}, el("b", {}, name), " ", el("span", { class: "st " + p.state }, p.state)),
      el("div", {}, p.latency_ms !== null && p.latency_ms !== undefined
        ? `latency ${p.latency_ms.toFixed(3)} ms ± ${(p.uncertainty_ms || 0).toFixed(3)}`
        : p.error || ""));
    box.append(d);
    if (p.ir && p.ir.length && typeof uPlot !== "undefined") {
      const xs = p.ir.map((_, i) => (i - 480) / 48);
      new uPlot({
        width: 260, height: 110, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: false } },
        axes: [{ stroke: "#8d97a5", size: 22 }, { stroke: "#8d97a5", size: 36 }],
        series: [{}, { stroke: "#f2c14e", width: 1 }],
      }, [xs, p.ir], d);
    }
  }
}

// ---- forms ------------------------------------------------------------------------------

$("#new-group").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  api("PUT", `/groups/${f.elements["name"].value}`, { stream: f.stream.value }).then(() => f.reset()).catch(() => {});
});
$("#new-stream").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  api("PUT", `/streams/${f.elements["name"].value}`, { uri: f.uri.value }).then(() => f.reset()).catch(() => {});
});
$("#cal-start").addEventListener("click", () =>
  api("POST", "/calibrate", { simultaneous: $("#cal-simultaneous").checked }).catch(() => {}));

$("#signin").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = e.target.elements["token"].value.trim();
  if (!t) return;
  localStorage.setItem(TOKEN_KEY, t);
  e.target.hidden = true;
  e.target.reset();
  connect();
});

setInterval(drawHeatmap, 1000);
window.addEventListener("resize", () => { for (const n of S.cards.keys()) drawSpark(n); });
takeTokenFromAddress();
connect();
