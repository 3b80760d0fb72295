// The dashboard's script: served by the binary, no dependencies.
//
// The admin token lives in `token` below and nowhere else: not in storage,
// not in a cookie, not in the address. Closing or reloading the tab forgets
// it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  const HISTORY = 90; // samples per pool: 3 minutes at one every 2 s
  let token = null;
  let timer = null;
  const history = new Map(); // "tenant pool" -> {waiting: [], rate: []}

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!r.ok) {
      const message = data && data.error ? data.error.code + ": " + data.error.message : r.status + " " + r.statusText;
      const e = new Error(message);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  const fixed = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

  function spark(values) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 24");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const top = Math.max(1, ...values);
    // Fills the width once a minute of samples is in; grows from the right
    // until then.
    const step = 120 / (Math.max(values.length, 30) - 1);
    const start = 120 - step * (values.length - 1);
    line.setAttribute("points", values.map((v, i) => (start + i * step).toFixed(1) + "," + (23 - (v / top) * 22).toFixed(1)).join(" "));
    svg.appendChild(line);
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = "now " + values[values.length - 1] + ", highest " + top;
    svg.appendChild(title);
    return svg;
  }

  function remember(key, pool) {
    const h = history.get(key) || { waiting: [], rate: [] };
    h.waiting.push(pool.waiting_count);
    h.rate.push(pool.matches_per_minute);
    if (h.waiting.length > HISTORY) { h.waiting.shift(); h.rate.shift(); }
    history.set(key, h);
    return h;
  }

  function render(pools) {
    const body = $("pools").tBodies[0];
    body.replaceChildren();
    $("empty").hidden = pools.length > 0;
    for (const p of pools) {
      const key = p.tenant_id + " " + p.pool_key;
      const h = remember(key, p);
      const tr = document.createElement("tr");
      tr.dataset.tenant = p.tenant_id;
      tr.dataset.pool = p.pool_key;
      if ($("policy-tenant").value === p.tenant_id && $("policy-pool").value === p.pool_key) tr.className = "selected";
      const cells = [
        ["tenant", p.tenant_id], ["pool", p.pool_key], ["waiting", p.waiting_count],
        ["oldest", fixed(p.oldest_wait_seconds, 1)], ["p50", fixed(p.p50_wait_seconds, 2)],
        ["p95", fixed(p.p95_wait_seconds, 2)], ["rate", fixed(p.matches_per_minute, 1)],
        ["timeouts", p.timeouts_last_5m], ["gap", p.median_rating_gap === null ? "–" : p.median_rating_gap],
      ];
      for (const [name, value] of cells) {
        const td = document.createElement("td");
        td.dataset.field = name;
        td.textContent = String(value);
        tr.appendChild(td);
      }
      for (const series of [h.waiting, h.rate]) {
        const td = document.createElement("td");
        td.appendChild(spark(series));
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => choosePool(p.tenant_id, p.pool_key));
      body.appendChild(tr);
    }
  }

  async function refresh() {
    const tenant = $("tenant-filter").value.trim();
    const query = tenant ? "?tenant_id=" + encodeURIComponent(tenant) : "";
    try {
      const summary = await api("GET", "/internal/queues/summary" + query);
      render(summary.queues || []);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      $("state").textContent = "connected";
    } catch (e) {
      $("state").textContent = "cannot read the summary: " + e.message;
      if (e.status === 401 || e.status === 403) disconnect(e.message);
    }
  }

  function disconnect(why) {
    clearInterval(timer);
    token = null;
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = why || "";
  }

  async function connect() {
    token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    try {
      await api("GET", "/internal/queues/summary");
    } catch (e) {
      disconnect(e.message);
      return;
    }
    $("login").hidden = true;
    $("board").hidden = false;
    $("login-error").textContent = "";
    await refresh();
    timer = setInterval(refresh, POLL_MS);
  }

  const POLICY_FIELDS = ["initial_rating_window", "rating_window_widening_interval",
    "rating_window_widening_amount", "max_rating_gap", "max_queue_time_seconds",
    "region_fallback_seconds", "region_fallback_regions", "repeat_penalty",
    "repeat_window_seconds", "repeat_window_games", "repeat_waive_seconds",
    "deviation_reference", "deviation_min_percent", "deviation_max_percent"];

  // A policy field as its input shows it, and as the API takes it (a list
  // of regions is written comma-separated; an empty number is unset).
  const shown = (v) => Array.isArray(v) ? v.join(",") : (v ?? "");
  function policyValue(f) {
    const raw = $("policy-" + f).value.trim();
    if (f === "region_fallback_regions") return raw.split(",").map((r) => r.trim()).filter(Boolean);
    return raw === "" ? undefined : Number(raw);
  }

  function choosePool(tenant, pool) {
    $("policy-tenant").value = tenant;
    $("policy-pool").value = pool;
    if (!$("flags-tenant").value) $("flags-tenant").value = tenant;
    loadPolicy();
  }

  const policyPath = () => "/internal/policies/" + encodeURIComponent($("policy-tenant").value.trim()) +
    "/" + encodeURIComponent($("policy-pool").value.trim());

  function showPolicy(scope, note) {
    for (const f of POLICY_FIELDS) $("policy-" + f).value = shown(scope.effective[f]);
    $("policy-form").hidden = false;
    $("policy-save").hidden = false;
    $("policy-drop").hidden = !scope.policy;
    const own = scope.policy ? Object.keys(scope.policy).join(", ") : "nothing";
    $("policy-status").textContent = note + " The pool sets " + own + "; the rest comes from its tenant and the settings.";
  }

  async function loadPolicy() {
    try {
      showPolicy(await api("GET", policyPath()), "Loaded.");
    } catch (e) {
      $("policy-status").textContent = e.message;
    }
  }

  async function savePolicy() {
    const current = await api("GET", policyPath()).catch(() => null);
    const body = {};
    for (const f of POLICY_FIELDS) {
      const value = policyValue(f);
      if (value === undefined) continue;
      const same = current && JSON.stringify(current.effective[f]) === JSON.stringify(value);
      if (!same || (current.policy && f in current.policy)) body[f] = value;
    }
    if (Object.keys(body).length === 0) {
      $("policy-status").textContent = "Nothing changed.";
      return;
    }
    try {
      showPolicy(await api("PUT", policyPath(), body), "Saved: in force on every node within 2 s.");
    } catch (e) {
      $("policy-status").textContent = e.message;
    }
  }

  async function dropPolicy() {
    try {
      showPolicy(await api("DELETE", policyPath()), "Dropped.");
    } catch (e) {
      $("policy-status").textContent = e.message;
    }
  }

  const flagsPath = () => "/internal/tenants/" + encodeURIComponent($("flags-tenant").value.trim()) + "/flags";

  function showFlags(scope, note) {
    const f = scope.effective;
    $("flags-challenges").checked = !!f.challenges;
    const e = f.matcher_experiment;
    $("flags-experiment").checked = !!e;
    $("flags-name").value = e ? e.name : "";
    $("flags-control").value = e ? e.control : "volume";
    $("flags-treatment").value = e ? e.treatment : "window";
    $("flags-percent").value = e ? e.treatment_percent : 10;
    $("flags-form").hidden = false;
    $("flags-save").hidden = false;
    $("flags-status").textContent = note;
  }

  async function loadFlags() {
    try {
      showFlags(await api("GET", flagsPath()), "Loaded.");
    } catch (e) {
      $("flags-status").textContent = e.message;
    }
  }

  async function saveFlags() {
    const body = { challenges: $("flags-challenges").checked, matcher_experiment: null };
    if ($("flags-experiment").checked) {
      body.matcher_experiment = {
        name: $("flags-name").value.trim(),
        control: $("flags-control").value,
        treatment: $("flags-treatment").value,
        treatment_percent: Number($("flags-percent").value),
      };
    }
    try {
      showFlags(await api("PUT", flagsPath(), body), "Saved: in force on every node within 2 s.");
    } catch (e) {
      $("flags-status").textContent = e.message;
    }
  }

  $("connect").addEventListener("click", connect);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
  $("tenant-filter").addEventListener("change", refresh);
  $("policy-load").addEventListener("click", loadPolicy);
  $("policy-save").addEventListener("click", savePolicy);
  $("policy-drop").addEventListener("click", dropPolicy);
  $("flags-load").addEventListener("click", loadFlags);
  $("flags-save").addEventListener("click", saveFlags);
})();
