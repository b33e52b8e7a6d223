// margin-monitor status page: polls /page/units, draws each unit's 24 h history as SVG. No libraries.
"use strict";

const POLL_MS = 3000;
const CHART_MS = 15000;
const SVG = "http://www.w3.org/2000/svg";
const DAY = 86400;
const cards = new Map();   // unit id -> {el, chartAt, visible}
let firstRender = null;

function fmt(v, digits) {
  return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function fmtPrice(v) {
  if (v === null || v === undefined) return "—";
  const d = v >= 1000 ? 2 : v >= 1 ? 4 : 8;
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: d });
}
function pct(v) { return v === null || v === undefined ? "none" : (v * 100).toFixed(1) + " %"; }
function age(s) {
  if (s === null || s === undefined) return "no price yet";
  if (s < 60) return s.toFixed(1) + " s";
  return (s / 60).toFixed(1) + " min";
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function severity(u) {
  if (u.state === "blind") return "s-blind";
  if (u.state === "no_debt") return "s-nodebt";
  const lv = u.margin_level, bars = u.bars || {};
  let cls = "s-ok";
  if (lv !== null && lv !== undefined) {
    if (bars.liquidation !== undefined && lv <= bars.liquidation) cls = "s-liq";
    else if (bars.margin_call !== undefined && lv <= bars.margin_call) cls = "s-call";
    else if (bars.normal !== undefined && lv <= bars.normal) cls = "s-warn";
  }
  return u.state === "approximate" ? cls + " s-approximate" : cls;
}
function levelText(u) {
  if (u.state === "blind") return u.margin_level === null || u.margin_level === undefined ? "unknown" : fmt(u.margin_level, 3) + "?";
  if (u.state === "no_debt") return "no debt";
  const t = fmt(u.margin_level, 3);
  return u.state === "approximate" ? "≈" + t : t;
}
function exchangeText(u) {
  const v = u.exchange_margin_level;
  if (v === null || v === undefined) return "not reported";
  return fmt(v, 3) + (v >= 999 ? " (its no-debt value)" : "");
}
function unitName(u) { return u.account + (u.symbol ? " " + u.symbol : "") + " (" + u.kind + ")"; }

function stressHtml(u) {
  const s = u.stress;
  if (!s) return "";
  if (!s.available) return `<p class="note">stress: not available (${esc(s.reason || "")})</p>`;
  const head = s.uniform.map((r) => `<th>${(r.move * 100).toFixed(0)} %</th>`).join("");
  let rows = `<tr><td>all assets</td>${s.uniform.map((r) => `<td>${r.level === null ? "no debt" : fmt(r.level, 3)}</td>`).join("")}</tr>`;
  let note = "";
  if (s.btc) {
    rows += `<tr><td>BTC × beta</td>${s.btc.moves.map((r) => `<td>${r.level === null ? "no debt" : fmt(r.level, 3)}</td>`).join("")}</tr>`;
    const bars = Object.entries(s.btc.bars).map(([n, c]) => `${esc(n)} ${c ? "at BTC " + fmtPrice(c.btc_price) : "unreachable"}`).join(" · ");
    const betas = Object.entries(s.btc.betas).map(([a, b]) => b.samples
      ? `${esc(a)} ${b.beta.toFixed(2)} (${b.samples} one-minute returns)` : `${esc(a)} 1 (no history)`).join(", ");
    note = `<p class="note">BTC at ${fmtPrice(s.btc.price)}; bars crossed: ${bars}${betas ? "; beta: " + betas : ""}</p>`;
  } else {
    note = `<p class="note">BTC model: not applicable to this unit's quote</p>`;
  }
  return `<table class="stress"><tr><th>stress</th>${head}</tr>${rows}</table>${note}`;
}

function detailsHtml(u) {
  if (u.loaded === false) {  // an account the daemon cannot read now: nothing below would be true
    return `<dl><dt>account</dt><dd>not loaded: ${esc(u.reason || "")}</dd>
<dt>data age</dt><dd class="age">${age(u.age)}</dd></dl>`;
  }
  const liq = Object.entries(u.liquidation_prices || {}).filter(([, p]) => p !== null)
    .map(([a, p]) => `${esc(a)} ${fmtPrice(p)}`).join(", ") || "none";
  const restore = [
    ...Object.entries(u.repay || {}).map(([a, v]) => `repay ${fmtPrice(v)} ${esc(a)}`),
    ...Object.entries(u.add_collateral || {}).map(([a, v]) => `add ${fmtPrice(v)} ${esc(a)}`),
  ].join(" or ") || "nothing needed";
  const bars = Object.entries(u.bars || {}).map(([n, v]) => `${esc(n)} ${v}`).join(" · ");
  const firing = Object.entries(u.firing || {}).map(([r, ph]) => `<span class="badge firing">${esc(r)} ${esc(ph)}</span>`).join(" ");
  const silenced = (u.silenced || []).map ? (u.silenced || []).map((r) => `<span class="badge silenced">${esc(typeof r === "string" ? r : JSON.stringify(r))} silenced</span>`).join(" ") : "";
  const settling = u.settling ? `<span class="badge">settling</span>` : "";
  // the cross account's Risk Data Stream (Binance's own word, pushed): shown while it is not up
  const risk = u.risk_stream && u.risk_stream !== "up"
    ? `<dt>Binance's Risk Data Stream</dt><dd class="risk-stream">not connected: ${esc(u.risk_stream_reason || u.risk_stream)}</dd>` : "";
  // the daemon's state file failing: alerts are still sent, not saved (every unit carries it)
  const stateFile = u.state_file_failing
    ? `<dt>state file</dt><dd class="state-file">failing, alerts not saved: ${esc(u.state_file_failing)}</dd>` : "";
  return `<dl>
<dt>bars</dt><dd>${bars}</dd>
<dt>to liquidation</dt><dd class="distance">${pct(u.liquidation_distance)}</dd>
<dt>liquidation at</dt><dd>${liq}</dd>
<dt>restores to ${u.restore_target}</dt><dd>${restore}</dd>
<dt>alerts</dt><dd>${firing || "none firing"} ${silenced} ${settling}</dd>
<dt>data age</dt><dd class="age">${age(u.age)}</dd>${risk}${stateFile}
</dl>`;
}

function render(u) {
  let card = cards.get(u.unit);
  if (!card) {
    const el = document.createElement("section");
    el.dataset.unit = u.unit;
    el.innerHTML = `<div class="head"></div><svg class="chart" viewBox="0 0 600 160" preserveAspectRatio="none" role="img"></svg><div class="stress-box"></div>`;
    document.getElementById("units").appendChild(el);
    card = { el, chartAt: 0, visible: true, unit: u };
    cards.set(u.unit, card);
    if (window.IntersectionObserver) observer.observe(el);
  }
  card.unit = u;
  const ageText = age(u.age) + (u.details_age > 10 ? ` · details ${Math.round(u.details_age)} s old` : "");
  const key = JSON.stringify({ ...u, age: null, details_age: null });
  if (card.key === key) {  // nothing but the ages changed: leave the card's DOM alone
    card.el.querySelector(".age").textContent = ageText;
    return;
  }
  card.key = key;
  card.el.className = "unit " + severity(u);
  const badge = u.state === "known" ? "" : `<span class="badge ${esc(u.state)}" title="${esc(u.reason || "")}">${esc(u.state.replace("_", " "))}${u.reason ? ": " + esc(u.reason) : ""}</span>`;
  card.el.querySelector(".head").innerHTML = `<div class="top"><span class="name">${esc(unitName(u))}</span>${badge}</div>
<div class="levels"><span class="level" data-level="${u.margin_level === null ? "" : u.margin_level}">${levelText(u)}</span>
<span class="exchange">Binance: <b>${exchangeText(u)}</b></span></div>${detailsHtml(u)}`;
  card.el.querySelector(".stress-box").innerHTML = stressHtml(u);
  card.el.querySelector(".age").textContent = ageText;
}

function drawChart(card, doc) {
  const svg = card.el.querySelector("svg.chart");
  const u = card.unit;
  const W = 600, H = 160, L = 34, R = 4, T = 6, B = 16;
  // the last 24 h, or less while the history is younger: the line then fills the chart
  const now = doc.now;
  const first = doc.points.length ? doc.points[0][0] : now - 60;
  const t0 = Math.max(now - DAY, Math.min(first, now - 60));
  const span = now - t0;
  const pts = doc.points.filter((p) => p[0] >= t0);
  const bars = Object.entries(u.bars || {});
  const vals = [];
  for (const p of pts) for (const v of [p[1], p[2], p[3]]) if (v !== null) vals.push(v);
  for (const [, v] of bars) vals.push(v);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!(hi > lo)) { lo -= 0.1; hi += 0.1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  let out = "";
  const colours = { normal: "var(--warn)", margin_call: "var(--call)", liquidation: "var(--liq)" };
  for (const [name, v] of bars) {
    out += `<line class="bar" data-bar="${esc(name)}" x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="${colours[name] || "#888"}"/>`;
    out += `<text x="2" y="${(y(v) + 3).toFixed(1)}">${v}</text>`;
  }
  // min-max band of each minute, then the level line; a null level (no debt) breaks the line
  const band = pts.filter((p) => p[2] !== null && p[3] !== null);
  if (band.length) {
    const upper = band.map((p) => `${x(p[0]).toFixed(1)},${y(p[3]).toFixed(1)}`);
    const lower = band.slice().reverse().map((p) => `${x(p[0]).toFixed(1)},${y(p[2]).toFixed(1)}`);
    out += `<polygon class="band" points="${upper.concat(lower).join(" ")}"/>`;
  }
  let run = [];
  const flush = () => { if (run.length) out += `<polyline class="line" points="${run.join(" ")}"/>`; run = []; };
  for (const p of pts) {
    if (p[1] === null) { flush(); continue; }
    run.push(`${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
  }
  flush();
  for (const e of doc.events) {
    if (e.t < t0) continue;
    const v = e.level !== null ? e.level : (e.bar !== null ? e.bar : lo);
    const cx = x(e.t).toFixed(1), cy = y(Math.min(hi, Math.max(lo, v))).toFixed(1);
    if (e.kind === "firing" || e.kind === "repeat" || e.kind === "blind") {
      const c = e.kind === "blind" ? "var(--blind)" : "var(--liq)";
      out += `<path class="event fired" data-rule="${esc(e.rule)}" d="M${cx - 5},${cy - 8} h10 l-5,8 z" fill="${c}"><title>${esc(e.rule)} ${esc(e.kind)}</title></path>`;
    } else {
      out += `<circle class="event resolved" data-rule="${esc(e.rule)}" cx="${cx}" cy="${cy}" r="4" fill="var(--ok)"><title>${esc(e.rule)} ${esc(e.kind)}</title></circle>`;
    }
  }
  const ago = span >= 3600 ? (span / 3600).toFixed(span >= 36000 ? 0 : 1) + " h" : Math.round(span / 60) + " min";
  out += `<text x="${L}" y="${H - 3}">−${ago}</text><text x="${W - R - 24}" y="${H - 3}">now</text>`;
  svg.innerHTML = out;
  svg.dataset.points = String(pts.length);
  svg.setAttribute("aria-label", `${unitName(u)} level over 24 hours, ${pts.length} points`);
}

async function loadChart(card) {
  card.chartAt = Date.now();
  try {
    const r = await fetch("page/history?unit=" + encodeURIComponent(card.unit.unit), { cache: "no-store" });
    if (r.ok) drawChart(card, await r.json());
  } catch (e) { /* the next poll retries */ }
}

const observer = window.IntersectionObserver ? new IntersectionObserver((entries) => {
  for (const e of entries) {
    const card = cards.get(e.target.dataset.unit);
    if (!card) continue;
    card.visible = e.isIntersecting;
    if (card.visible && Date.now() - card.chartAt > CHART_MS) loadChart(card);
  }
}) : null;

async function poll() {
  const summary = document.getElementById("summary");
  try {
    const r = await fetch("page/units", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const units = await r.json();
    const seen = new Set();
    for (const u of units) { render(u); seen.add(u.unit); }
    for (const [id, card] of cards) if (!seen.has(id)) { card.el.remove(); cards.delete(id); }
    const blind = units.filter((u) => u.state === "blind").length;
    const firing = units.filter((u) => Object.keys(u.firing || {}).length).length;
    summary.textContent = `${units.length} units · ${firing} alerting · ${blind} blind · updated ${new Date().toLocaleTimeString()}`;
    const due = [...cards.values()].filter((c) => c.visible && Date.now() - c.chartAt > CHART_MS);
    await Promise.all(due.slice(0, 24).map(loadChart));
    if (firstRender === null) {
      firstRender = performance.now();
      document.body.dataset.renderedMs = firstRender.toFixed(0);
    }
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    summary.textContent = "cannot reach the daemon (" + e.message + "): the values below are from " + new Date().toLocaleTimeString() + " or older";
    for (const card of cards.values()) { card.el.classList.add("s-blind"); card.key = null; }
  }
}

poll();
setInterval(poll, POLL_MS);
