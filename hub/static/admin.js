// The hub page: one admin token per tab (sessionStorage), one data endpoint, no frameworks.
// Every value is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "storeside.hub.adminToken";
const REFRESH_MS = 5000;
let timer = null;

const $ = (id) => document.getElementById(id);

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function badge(row, text, prefix) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = `badge ${prefix}-${text}`;
  span.textContent = text;
  td.appendChild(span);
  row.appendChild(td);
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    body.appendChild(tr);
  }
}

function render(data) {
  $("chain").textContent = `· ${data.chain}`;
  $("window").textContent = `${Math.round(data.kpi_window_s / 3600)} h`;
  fill("stores", data.stores, (tr, s) => {
    tr.dataset.store = s.store;
    cell(tr, s.name ? `${s.store} · ${s.name}` : s.store);
    badge(tr, s.health, "h");
    cell(tr, ago(s.since_last_sync_s));
    cell(tr, s.lag_changes, "num");
    cell(tr, s.model_version);
    cell(tr, s.outbox_pending, "num");
    cell(tr, s.active_visits, "num");
    cell(tr, s.kpis.checkins, "num");
    cell(tr, s.kpis.shown, "num");
    cell(tr, s.kpis.accepted, "num");
    cell(tr, s.kpis.redeemed, "num");
  });
  const rollout = data.rollout;
  $("rollout-none").hidden = rollout.available && rollout.stores.some((s) => s.assigned);
  $("rollout").hidden = !rollout.available || rollout.stores.length === 0;
  fill("rollout", rollout.stores, (tr, r) => {
    cell(tr, r.store);
    cell(tr, r.assigned);
    cell(tr, r.stage);
    cell(tr, r.running);
    badge(tr, r.state, "s");
    const last = r.last_report;
    cell(tr, last ? `${last.version} ${last.outcome}${last.reason ? ` (${last.reason})` : ""}`
                  : null);
  });
  const er = data.erasures;
  $("erasure-summary").textContent =
    `${er.total} erasure(s), ${er.complete} acknowledged by every store.`;
  fill("erasures", er.latest, (tr, e) => {
    cell(tr, e.erasure_id);
    cell(tr, when(e.requested_at));
    cell(tr, e.acked.join(", ") || "none yet");
    cell(tr, e.pending.join(", ") || "—");
  });
  const c = data.catalog;
  $("catalog").textContent =
    `${c.products} products · ${c.offers_active} active offers · ${c.segments} segments`;
  $("status").textContent = `updated ${new Date(data.generated_at * 1000).toLocaleTimeString()}`;
}

function showLogin(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function refresh() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin("");
  let response;
  try {
    response = await fetch("/v1/admin/overview", {
      headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
    });
  } catch (err) {
    $("status").textContent = "hub unreachable; retrying";
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    return showLogin("That token is not an admin token of this hub.");
  }
  if (!response.ok) {
    $("status").textContent = `hub answered ${response.status}; retrying`;
  } else {
    render(await response.json());
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("signout").hidden = false;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  $("signout").addEventListener("click", () => showLogin(""));
  refresh();
});
