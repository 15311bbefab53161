// citywatch crew inbox: plain JS, no build step. The token stays in this browser only.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("cw_token"), me: null, alert: null };

async function api(path, opts = {}) {
  const res = await fetch("/api/v1" + path, {
    ...opts,
    headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
  });
  if (res.status === 401) { signOut(); throw new Error("Please sign in again."); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : res.statusText);
  return body;
}

function show(section) {
  for (const id of ["login", "list", "detail"]) $(id).hidden = id !== section;
}

function signOut() {
  localStorage.removeItem("cw_token");
  state.token = null;
  $("who").textContent = "";
  $("logout").hidden = true;
  show("login");
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

async function signIn(token) {
  state.token = token;
  state.me = await api("/me");
  localStorage.setItem("cw_token", token);
  $("who").textContent = state.me.user_name + " (" + (state.me.team || state.me.role) + ")";
  $("logout").hidden = false;
  await showList();
}

async function showList() {
  const alerts = await api("/alerts?live=true&limit=200");
  const ul = $("alerts");
  ul.replaceChildren();
  for (const a of alerts) {
    const li = el("li", { "class": a.severity, "data-alert-id": a.alert_id, "tabindex": "0" });
    li.append(el("span", { "class": "risk" }, a.last_risk.toFixed(2)));
    li.append(el("strong", {}, a.asset_id));
    li.append(el("div", { "class": "meta" },
      `${a.asset_type} · ${a.status} · ${a.zone || "no zone"} · since ${
        new Date(a.raised_at).toLocaleString()}`));
    li.addEventListener("click", () => showDetail(a.alert_id));
    ul.append(li);
  }
  $("empty").hidden = alerts.length > 0;
  show("list");
}

function plot(readings) {
  // One polyline per metric, each scaled to its own range (units differ).
  const W = 600, H = 220, P = 24;
  const box = $("plot");
  box.replaceChildren();
  if (!readings.length) { box.textContent = "No readings stored for this asset."; return; }
  const t0 = Date.parse(readings[0].ts), t1 = Date.parse(readings[readings.length - 1].ts);
  const metrics = [...new Set(readings.flatMap((r) => Object.keys(r.metrics)))].slice(0, 5);
  const colours = ["#d22", "#28a", "#0a5", "#e90", "#83c"];
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "recent sensor readings");
  metrics.forEach((m, i) => {
    const pts = readings.filter((r) => typeof r.metrics[m] === "number");
    const vs = pts.map((r) => r.metrics[m]);
    const lo = Math.min(...vs), hi = Math.max(...vs), span = hi - lo || 1;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colours[i]);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("class", "metric");
    line.setAttribute("points", pts.map((r) => {
      const x = P + (W - 2 * P) * ((Date.parse(r.ts) - t0) / ((t1 - t0) || 1));
      const y = H - P - (H - 2 * P) * ((r.metrics[m] - lo) / span);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" "));
    svg.append(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", String(P + i * 110));
    label.setAttribute("y", "16");
    label.setAttribute("fill", colours[i]);
    label.setAttribute("font-size", "13");
    label.textContent = m;
    svg.append(label);
  });
  box.append(svg);
}

function contributions(expl) {
  const ul = $("contrib");
  ul.replaceChildren();
  if (!expl) { ul.append(el("li", {}, "No explanation stored for this alert.")); return; }
  const max = Math.max(...expl.top.map((c) => Math.abs(c.contribution)), 1e-9);
  for (const c of expl.top) {
    const li = el("li", { "class": "feature" });
    li.append(el("span", {}, c.feature));
    const bar = el("div", { "class": "b" + (c.contribution < 0 ? " neg" : "") });
    bar.style.width = (100 * Math.abs(c.contribution) / max).toFixed(0) + "%";
    li.append(bar);
    li.append(el("span", {}, (c.contribution >= 0 ? "+" : "") + c.contribution.toFixed(2)));
    ul.append(li);
  }
}

// A water district's leak candidates: a small map of their model coordinates
// (north up) and a list, each with a link to the spot on OpenStreetMap.
function leakCandidates(cands) {
  const box = $("leak");
  box.hidden = !cands || cands.length === 0;
  if (box.hidden) return;
  const ns = "http://www.w3.org/2000/svg";
  const W = 320, H = 200, P = 24;
  const xs = cands.map((c) => c.x), ys = cands.map((c) => c.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => P + (W - 2 * P) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const sy = (y) => H - P - (H - 2 * P) * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "map of the leak candidates");
  cands.slice().reverse().forEach((c) => {
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", sx(c.x).toFixed(1));
    dot.setAttribute("cy", sy(c.y).toFixed(1));
    dot.setAttribute("r", c.rank === 1 ? "9" : "6");
    dot.setAttribute("fill", c.rank === 1 ? "#c0392b" : "#e67e22");
    svg.append(dot);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", (sx(c.x) + 11).toFixed(1));
    label.setAttribute("y", (sy(c.y) + 4).toFixed(1));
    label.setAttribute("font-size", "12");
    label.textContent = `${c.rank}. node ${c.node}`;
    svg.append(label);
  });
  $("leak-map").replaceChildren(svg);
  const ol = $("leak-list");
  ol.replaceChildren();
  for (const c of cands) {
    const li = el("li", {}, `node ${c.node} (statistic ${c.score.toFixed(1)})`);
    if (c.lat !== null && c.lon !== null) {
      const href = `https://www.openstreetmap.org/?mlat=${c.lat}&mlon=${c.lon}#map=17/${c.lat}/${c.lon}`;
      li.append(" ");
      li.append(el("a", { href, target: "_blank", rel: "noopener" }, "map"));
    }
    ol.append(li);
  }
}

// A water-quality station's outlook: one bar per horizon, the probability of an
// incident within the next 1, 6, 24 and 48 hours (from its latest scored reading).
function stationOutlook(out) {
  const box = $("wq");
  box.hidden = !out;
  if (!out) return;
  const ns = "http://www.w3.org/2000/svg";
  const W = 320, H = 160, P = 24, bw = (W - 2 * P) / out.horizons.length;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "probability of an incident within 1 to 48 hours");
  out.horizons.forEach((h, i) => {
    const x = P + i * bw, p = h.probability;
    const text = (y, label) => {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", (x + bw / 2).toFixed(1));
      t.setAttribute("y", y.toFixed(1));
      t.setAttribute("text-anchor", "middle");
      t.setAttribute("font-size", "12");
      t.textContent = label;
      svg.append(t);
    };
    if (p !== null) {
      const bar = document.createElementNS(ns, "rect");
      const hgt = (H - 3 * P) * p;
      bar.setAttribute("x", (x + 6).toFixed(1));
      bar.setAttribute("y", (H - P - hgt).toFixed(1));
      bar.setAttribute("width", (bw - 12).toFixed(1));
      bar.setAttribute("height", hgt.toFixed(1));
      bar.setAttribute("fill", p >= 0.5 ? "#c0392b" : "#28a");
      bar.setAttribute("class", "horizon");
      svg.append(bar);
    }
    text(H - P - (H - 3 * P) * (p || 0) - 4, p === null ? "n/a" : Math.round(100 * p) + " %");
    text(H - 6, h.hours + " h");
  });
  $("wq-chart").replaceChildren(svg);
  $("wq-asof").textContent = `incident now ${Math.round(100 * out.event_probability)} % · ` +
    `as of ${new Date(out.ts).toLocaleString()} · model ${out.model_version}`;
}

async function showDetail(alertId) {
  const id = encodeURIComponent(alertId);
  const [d, ctx, cmds] = await Promise.all([api("/alerts/" + id),
    api("/alerts/" + id + "/context"), api("/alerts/" + id + "/commands")]);
  const a = d.alert;
  state.alert = a;
  $("d-title").textContent = a.title || a.asset_id;
  const facts = $("d-facts");
  facts.replaceChildren();
  const rows = [["Status", a.status], ["Risk", a.last_risk.toFixed(2) + " (peak " +
    a.peak_risk.toFixed(2) + ")"], ["Asset", a.asset_id + " · " + a.asset_type],
    ["Team", a.team || "-"], ["Zone", a.zone || "-"], ["Opened", new Date(a.opened_at)
    .toLocaleString()], ["Assigned to", a.assigned_to || "-"], ["Outcome", a.outcome || "-"]];
  for (const [k, v] of rows) { facts.append(el("dt", {}, k)); facts.append(el("dd", {}, v)); }
  facts.querySelectorAll("dd")[0].id = "d-status";
  plot(ctx.readings);
  contributions(ctx.explanation);
  leakCandidates(ctx.leak_candidates);
  stationOutlook(a.asset_type === "water_quality_station"
    ? (await api("/alerts/" + id + "/outlook")).outlook : null);
  const live = a.status !== "resolved";
  $("ack").disabled = a.status !== "open";
  $("resolve").disabled = !live;
  $("outcome").disabled = !live;
  $("action-error").textContent = "";
  const hist = $("history");
  hist.replaceChildren();
  for (const t of d.transitions) {
    hist.append(el("li", {}, `${new Date(t.at).toLocaleString()} · ${t.action} by ${t.actor}`));
  }
  const list = $("commands");
  list.replaceChildren();
  for (const c of cmds) {
    const args = Object.entries(c.args).map(([k, v]) => `${k}=${v}`).join(" ");
    list.append(el("li", {}, `${new Date(c.created_at).toLocaleString()} · ${c.command} ` +
      `${args} · ${c.status}${c.detail ? " (" + c.detail + ")" : ""} · ${c.reason}`));
  }
  show("detail");
}

async function act(path, body) {
  $("action-error").textContent = "";
  try {
    await api("/alerts/" + encodeURIComponent(state.alert.alert_id) + path,
      { method: "POST", body: JSON.stringify(body) });
    await showDetail(state.alert.alert_id);
  } catch (err) {
    $("action-error").textContent = err.message;
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try { await signIn($("token").value.trim()); } catch (err) {
    $("login-error").textContent = err.message;
  }
});
$("logout").addEventListener("click", signOut);
$("refresh").addEventListener("click", showList);
$("back").addEventListener("click", showList);
$("ack").addEventListener("click", () => act("/acknowledge", {}));
$("resolve").addEventListener("click", () => act("/resolve", { outcome: $("outcome").value }));
$("fresh-reading").addEventListener("click", () => act("/request-reading", {}));

if (state.token) signIn(state.token).catch(() => signOut()); else show("login");
