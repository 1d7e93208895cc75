// nfpg dashboard: a small SVG line chart, and the page's refresh loop (every 2 s).
// Written for nfpg, no dependencies, no build step; served by nfpg at /dashboard.js.
"use strict";

// ---- Charting --------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

// The smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above v.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

// Draws series = [{name, color, points: [[t_ms, value], …]}] as lines into `container`
// (replacing what was there): time on x, zero-based y with four grid lines, a legend.
function lineChart(container, series) {
  const width = Math.max(container.clientWidth || 0, 320);
  const height = Math.max(container.clientHeight || 0, 160);
  const m = { left: 48, right: 10, top: 22, bottom: 22 };
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  let tMin = Infinity, tMax = -Infinity, vMax = 0;
  for (const s of series) for (const [t, v] of s.points) {
    tMin = Math.min(tMin, t); tMax = Math.max(tMax, t); vMax = Math.max(vMax, v);
  }
  if (!isFinite(tMin)) { const now = Date.now(); tMin = now - 60000; tMax = now; }
  if (tMax - tMin < 10000) tMin = tMax - 10000;
  const yMax = niceCeil(vMax);
  const x = (t) => m.left + ((t - tMin) / (tMax - tMin)) * (width - m.left - m.right);
  const y = (v) => height - m.bottom - (v / yMax) * (height - m.top - m.bottom);
  const grid = svgEl("g", { stroke: "#e4e7ec", "font-size": 10, fill: "#667085" }, svg);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    svgEl("line", { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }, grid);
    const label = svgEl("text", { x: m.left - 4, y: y(v) + 3, "text-anchor": "end", stroke: "none" }, grid);
    label.textContent = shortNumber(v);
  }
  for (let i = 0; i <= 4; i++) {
    const t = tMin + ((tMax - tMin) * i) / 4;
    const label = svgEl("text", {
      x: x(t), y: height - 6, stroke: "none",
      "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
    }, grid);
    label.textContent = clock(t);
  }
  let lx = m.left;
  for (const s of series) {
    if (s.points.length > 1) {
      svgEl("polyline", {
        points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-linejoin": "round",
        "data-series": s.name,
      }, svg);
    }
    svgEl("rect", { x: lx, y: 6, width: 10, height: 10, fill: s.color }, svg);
    const t = svgEl("text", { x: lx + 14, y: 15, "font-size": 11, fill: "#1d2430" }, svg);
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    t.textContent = `${s.name} ${shortNumber(last)}`;
    lx += 14 + 7 * t.textContent.length + 12;
  }
  container.replaceChildren(svg);
}

// ---- The page --------------------------------------------------------------------------

const REFRESH_MS = 2000;
const state = { samples: [], capacity: 900, window: "15m" };

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString("en-US", {
    minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0,
  });
}

function setNumber(id, v, digits) {
  const e = document.getElementById(id);
  e.dataset.value = String(v);
  e.textContent = fmt(v, digits);
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  let body;
  try { body = await r.json(); } catch (_) { body = {}; }
  if (!r.ok && !body.error) body.error = `${r.status} ${r.statusText}`;
  return body;
}

function cell(tr, text, cls, value) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (value !== undefined) td.dataset.value = String(value);
  tr.appendChild(td);
  return td;
}

function fillTable(id, rows, render, emptyText) {
  const tbody = document.querySelector(`#${id} tbody`);
  const out = rows.map(render);
  if (!out.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(tr, emptyText);
    td.colSpan = document.querySelectorAll(`#${id} thead th`).length;
    out.push(tr);
  }
  tbody.replaceChildren(...out);
}

function showError(id, body) {
  document.getElementById(`${id}-error`).textContent = body && body.error ? body.error : "";
}

function renderSummary(s) {
  const t = s.totals;
  setNumber("total-datagrams", t.datagrams);
  setNumber("total-flows", t.flows);
  setNumber("total-rows-written", t.rows_written);
  setNumber("total-rows-spooled", t.rows_spooled);
  setNumber("total-malformed", t.malformed);
  setNumber("total-kernel-drops", t.kernel_drops);
  setNumber("total-not-allowed", t.not_allowed);
  setNumber("total-rows-lost", t.rows_lost);
  setNumber("rate-flows", s.rates.flows_per_s, 1);
  setNumber("rate-drops",
    s.rates.kernel_drops_per_s + s.rates.malformed_per_s + s.rates.not_allowed_per_s, 1);
  const q = document.getElementById("queue-depth");
  q.dataset.value = String(s.queue_depth);
  q.textContent = `${s.queue_depth} / ${s.queue_capacity}`;
  const db = document.getElementById("db-status");
  db.dataset.value = s.database_up ? "up" : "down";
  db.textContent = s.database_up ? "up" : "down (spooling)";
}

function renderCharts() {
  const ingest = { flows: [], rows: [], datagrams: [] };
  const drops = { kernel: [], malformed: [], notAllowed: [], rowsLost: [] };
  const s = state.samples;
  for (let i = 1; i < s.length; i++) {
    const a = s[i - 1], b = s[i];
    const dt = (b.t_ms - a.t_ms) / 1000;
    if (dt <= 0) continue;
    const r = (k) => Math.max(0, b[k] - a[k]) / dt;
    ingest.flows.push([b.t_ms, r("flows")]);
    ingest.rows.push([b.t_ms, r("rows_written")]);
    ingest.datagrams.push([b.t_ms, r("datagrams")]);
    drops.kernel.push([b.t_ms, r("kernel_drops")]);
    drops.malformed.push([b.t_ms, r("malformed")]);
    drops.notAllowed.push([b.t_ms, r("not_allowed")]);
    drops.rowsLost.push([b.t_ms, r("rows_lost")]);
  }
  lineChart(document.getElementById("chart-ingest"), [
    { name: "flows/s", color: "#2563eb", points: ingest.flows },
    { name: "rows written/s", color: "#16a34a", points: ingest.rows },
    { name: "datagrams/s", color: "#9333ea", points: ingest.datagrams },
  ]);
  lineChart(document.getElementById("chart-drops"), [
    { name: "kernel drops/s", color: "#dc2626", points: drops.kernel },
    { name: "malformed/s", color: "#ea580c", points: drops.malformed },
    { name: "not allowed/s", color: "#ca8a04", points: drops.notAllowed },
    { name: "rows lost/s", color: "#7c3aed", points: drops.rowsLost },
  ]);
}

function renderTop(id, body) {
  showError(id, body);
  if (body.error) return;
  fillTable(id, body.rows, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.key = r.key;
    cell(tr, r.key, "key");
    cell(tr, fmt(r.est_bytes), "est-bytes", r.est_bytes).title = `${fmt(r.bytes)} bytes as exported`;
    cell(tr, fmt(r.est_packets), "est-packets", r.est_packets).title = `${fmt(r.packets)} packets as exported`;
    cell(tr, fmt(r.flows), "flows", r.flows);
    cell(tr, r.upscaled ? `1 in ${r.max_sampling_interval}` : "unsampled", "sampling", r.max_sampling_interval);
    return tr;
  }, "no flows in this window");
}

function renderExporters(body) {
  showError("exporters", body);
  if (body.error) return;
  const now = Date.now() / 1000;
  fillTable("exporters", body.rows, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.key = r.exporter;
    if (r.flows_lost > 0) tr.className = "lossy";
    cell(tr, r.exporter, "key");
    cell(tr, `${r.engine_type}/${r.engine_id}` + (r.source_id ? ` #${r.source_id}` : ""), "engine");
    cell(tr, fmt(r.flows), "flows", r.flows);
    cell(tr, fmt(r.flows_lost), "flows-lost", r.flows_lost);
    cell(tr, fmt(r.lost_pct, 2), "lost-pct", r.lost_pct);
    cell(tr, fmt(r.suspect_datagrams), "suspect", r.suspect_datagrams);
    const age = Math.max(0, now - r.last_seen);
    cell(tr, age < 120 ? `${Math.round(age)} s ago` : new Date(r.last_seen * 1000).toLocaleString(), "last-seen", r.last_seen);
    return tr;
  }, "no exporters yet");
}

function renderMalformed(body) {
  showError("malformed", body);
  if (body.error) return;
  setNumber("malformed-total", body.total);
  fillTable("malformed", body.reasons.filter((r) => r.count > 0), (r) => {
    const tr = document.createElement("tr");
    tr.dataset.key = r.reason;
    cell(tr, r.reason, "key");
    cell(tr, fmt(r.count), "count", r.count).id = `malformed-${r.reason}`;
    return tr;
  }, "none");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    // One request at a time: the listener answers a few clients at once, and a scraper
    // may share it.
    renderSummary(await getJSON("/api/summary"));
    const last = state.samples.length ? state.samples[state.samples.length - 1].t_ms : 0;
    const h = await getJSON(`/api/history?since=${last}`);
    if (!h.error) {
      state.capacity = h.capacity;
      state.samples.push(...h.samples);
      if (state.samples.length > state.capacity) state.samples.splice(0, state.samples.length - state.capacity);
    }
    renderCharts();
    renderMalformed(await getJSON("/api/malformed"));
    renderTop("top-src", await getJSON(`/api/top?by=src&last=${state.window}`));
    renderTop("top-app", await getJSON(`/api/top?by=app&last=${state.window}`));
    renderExporters(await getJSON("/api/exporters"));
    status.dataset.state = "ok";
    status.textContent = `updated ${clock(Date.now())}`;
  } catch (e) {
    status.dataset.state = "error";
    status.textContent = `update failed: ${e}`;
  }
  status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

document.getElementById("top-window").addEventListener("change", (e) => {
  state.window = e.target.value;
  refresh();
});
loop();
