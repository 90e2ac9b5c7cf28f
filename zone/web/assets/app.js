// The pzone hub dashboard. Everything it shows comes from the hub's API
// (/api/v1/) and its event stream; every action is one API request, the
// one the matching pzh command makes. Text from the hub is only ever set
// as text, never as markup.
"use strict";

const state = { csrf: "", session: null, events: null, samples: [], devices: [] };

function $(id) { return document.getElementById(id); }

// el builds an element: el("td", {class: "x"}, "text", child, ...).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function show(view) {
  for (const v of ["login-view", "mfa-view", "dashboard"]) $(v).hidden = v !== view;
  $("who").hidden = view !== "dashboard";
}

function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? "–" : d.toLocaleString();
}

function ago(t) {
  if (!t) return "–";
  const s = Math.round((Date.now() - new Date(t)) / 1000);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return when(t);
}

class APIError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : "the hub answered " + status);
    this.status = status;
    this.body = body;
  }
}

// api makes one request; a session that has ended sends the page back to
// the login form.
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let resp;
  try {
    resp = await fetch("/api/v1" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    // The browser says only "Failed to fetch": say what it means.
    throw new Error("the hub did not answer (it may be stopped, restarting, or unreachable from here); try again once it is back");
  }
  let data = null;
  if (resp.status !== 204) {
    try { data = await resp.json(); } catch (e) { data = null; }
  }
  if (!resp.ok) {
    const err = new APIError(resp.status, data);
    if (resp.status === 401 && !path.startsWith("/authenticate")) loggedOut(err.message);
    throw err;
  }
  return data;
}

function loggedOut(why) {
  if (state.events) { state.events.close(); state.events = null; }
  state.csrf = "";
  state.session = null;
  show("login-view");
  $("login-error").textContent = why || "";
}

function actionError(err) {
  $("action-error").textContent = err ? err.message : "";
}

// act runs an action from a button, and shows what went wrong.
async function act(f) {
  actionError(null);
  try { await f(); } catch (err) { if (!(err instanceof APIError && err.status === 401)) actionError(err); }
}

// ---- logging in ----

function entered(s) {
  state.session = s;
  state.csrf = s.csrf_token || state.csrf;
  if (s.state === "partial") {
    show("mfa-view");
    $("mfa-code").focus();
    return;
  }
  $("operator").textContent = s.operator;
  show("dashboard");
  openEvents();
  refreshAll();
}

async function start() {
  // A one-time login link (pzh web login NAME): its token is in the
  // fragment; it is used once and taken out of the address bar.
  const m = /^#login=(pzlogin_[A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    history.replaceState(null, "", location.pathname);
    try {
      entered(await api("POST", "/authenticate/link", { token: m[1] }));
      return;
    } catch (err) {
      show("login-view");
      $("login-error").textContent = err.message;
      return;
    }
  }
  try {
    entered(await api("GET", "/current-session"));
  } catch (err) {
    show("login-view");
    $("login-error").textContent = ""; // not logged in yet: nothing went wrong
    $("login-name").focus();
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    entered(await api("POST", "/authenticate", { name: $("login-name").value, password: $("login-password").value }));
    $("login-password").value = "";
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("mfa-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("mfa-error").textContent = "";
  try {
    entered(await api("POST", "/authenticate/mfa", { code: $("mfa-code").value.trim() }));
    $("mfa-code").value = "";
  } catch (err) {
    $("mfa-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", () => act(async () => {
  await api("DELETE", "/current-session");
  loggedOut("You are logged out.");
}));

// ---- the live view ----

function openEvents() {
  if (state.events) state.events.close();
  const es = new EventSource("/api/v1/events");
  state.events = es;
  es.addEventListener("status", (e) => drawStatus(JSON.parse(e.data)));
  es.addEventListener("devices", (e) => { state.devices = JSON.parse(e.data).devices || []; drawDevices(); });
  es.addEventListener("history", (e) => { state.samples = JSON.parse(e.data) || []; drawChart(); });
  es.addEventListener("sample", (e) => {
    state.samples.push(JSON.parse(e.data));
    if (state.samples.length > 360) state.samples.shift();
    drawChart();
  });
  es.addEventListener("error", () => {
    // The stream broke: the hub restarted, or the session ended. Ask.
    if (es.readyState === EventSource.CLOSED || es.readyState === EventSource.CONNECTING) {
      api("GET", "/current-session").catch(() => {});
    }
  });
}

function drawStatus(st) {
  $("zone-id").textContent = st.zone_id;
  $("online-count").textContent = st.online;
  $("device-count").textContent = st.devices;
  $("friend-count").textContent = st.friends;
  $("linked-count").textContent = st.linked;
  $("public-addrs").textContent = (st.public_addrs || []).join(", ");
  $("hub-software").textContent = st.software + ", up since " + when(st.started);
}

function drawDevices() {
  const rows = state.devices.map((d) => {
    const cell = el("td", {});
    if (d.state !== "revoked") cell.append(confirmButton("Revoke", "Revoke " + d.name + "?", () =>
      api("POST", "/devices/" + encodeURIComponent(d.name) + "/revoke")));
    return el("tr", { "data-device": d.name, class: "state-" + d.state },
      el("td", {}, d.name), el("td", { class: "state" }, d.state), el("td", {}, d.transport || "–"),
      el("td", {}, d.rtt_ms == null ? "–" : d.rtt_ms.toFixed(1) + " ms"),
      el("td", {}, ago(d.last_activity || d.last_seen)), el("td", {}, when(d.cert_expires)),
      el("td", {}, d.queue ? d.queue + " (" + d.queue_bytes + " B)" : "0"), cell);
  });
  fill($("device-rows"), rows, "No devices yet: create an invite below.");
}

// confirmButton asks once more, in place, before it acts.
function confirmButton(label, question, f) {
  const box = el("span", {});
  const first = el("button", { type: "button" }, label);
  first.addEventListener("click", () => {
    const yes = el("button", { type: "button", class: "danger" }, question);
    const no = el("button", { type: "button" }, "Cancel");
    yes.addEventListener("click", () => act(async () => { await f(); refreshAll(); }));
    no.addEventListener("click", () => box.replaceChildren(first));
    box.replaceChildren(yes, no);
  });
  box.append(first);
  return box;
}

// fill puts rows in tbody, or one row saying there are none.
function fill(tbody, rows, none) {
  if (rows.length) tbody.replaceChildren(...rows);
  else tbody.replaceChildren(el("tr", { class: "none" }, el("td", { colspan: tbody.parentElement.querySelectorAll("th").length }, none)));
}

function button(label, f) {
  const b = el("button", { type: "button" }, label);
  b.addEventListener("click", () => act(async () => { await f(); refreshAll(); }));
  return b;
}

// drawChart draws devices online and calls per second (from the
// differences of the calls routed) as two lines over the last hour.
function drawChart() {
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, P = 24;
  const now = Date.now(), from = now - 3600e3;
  const pts = state.samples.map((s) => ({ t: new Date(s.at).getTime(), online: s.online, calls: s.calls }));
  const rates = [];
  for (let i = 1; i < pts.length; i++) {
    const dt = (pts[i].t - pts[i - 1].t) / 1000;
    const dc = pts[i].calls - pts[i - 1].calls;
    if (dt > 0 && dc >= 0) rates.push({ t: pts[i].t, v: dc / dt });
  }
  const maxOnline = Math.max(1, ...pts.map((p) => p.online));
  const maxRate = Math.max(1, ...rates.map((r) => r.v));
  const x = (t) => P + ((t - from) / 3600e3) * (W - 2 * P);
  const line = (data, val, max, cls) => {
    const p = document.createElementNS(ns, "polyline");
    p.setAttribute("class", cls);
    p.setAttribute("points", data.filter((d) => d.t >= from).map((d) => x(d.t).toFixed(1) + "," + (H - P - (val(d) / max) * (H - 2 * P)).toFixed(1)).join(" "));
    return p;
  };
  const text = (tx, ty, s, cls) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("class", cls);
    t.textContent = s;
    return t;
  };
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", P); axis.setAttribute("x2", W - P);
  axis.setAttribute("y1", H - P); axis.setAttribute("y2", H - P);
  axis.setAttribute("class", "axis");
  svg.replaceChildren(axis,
    line(pts, (d) => d.online, maxOnline, "online"),
    line(rates, (d) => d.v, maxRate, "calls"),
    text(P, 14, maxOnline + " online", "online"),
    text(W - P, 14, maxRate.toFixed(1) + " calls/s", "calls end"),
    text(P, H - 6, "1 h ago", "tick"),
    text(W - P, H - 6, "now", "tick end"));
}

// ---- the lists ----

async function refreshAll() {
  await Promise.all([refreshInvites(), refreshFriends(), refreshPolicy(), refreshBindings(), refreshTemplates(), refreshServiceTokens(), refreshSessions(), refreshTokens()].map((p) => p.catch(actionError)));
}

async function refreshInvites() {
  const list = await api("GET", "/invites");
  fill($("invite-rows"), list.map((v) => el("tr", { "data-invite": v.id },
    el("td", {}, v.id), el("td", {}, v.device), el("td", {}, v.state), el("td", {}, v.uses_left + "/" + v.uses),
    el("td", {}, when(v.expires)),
    el("td", {}, v.state === "open" ? button("Cancel", () => api("DELETE", "/invites/" + encodeURIComponent(v.id))) : ""))), "No invites.");
}

async function refreshFriends() {
  const list = (await api("GET", "/friends")).friends || [];
  fill($("friend-rows"), list.map((f) => el("tr", {},
    el("td", {}, f.petname), el("td", {}, f.zone), el("td", {}, f.state), el("td", {}, f.transport || "–"),
    el("td", {}, f.rtt_ms == null ? "–" : f.rtt_ms.toFixed(1) + " ms"), el("td", {}, f.calls), el("td", {}, f.queue))), "No friend zones (pzh friend invite).");
}

async function refreshBindings() {
  const list = (await api("GET", "/bindings")).bindings || [];
  fill($("binding-rows"), list.filter((b) => !b.ended).map((b) => el("tr", {},
    el("td", {}, b.from), el("td", {}, b.to), el("td", {}, ago(b.since)), el("td", {}, b.calls),
    el("td", {}, b.bytes_in + " / " + b.bytes_out), el("td", {}, b.token || "–"),
    el("td", {}, button("End", () => api("POST", "/bindings/" + encodeURIComponent(b.id) + "/end"))))), "No applications are using services now.");
}

async function refreshPolicy() {
  const list = await api("GET", "/policy");
  fill($("rule-rows"), list.rules.map((r) => el("tr", { "data-rule": r.id },
    el("td", {}, r.id), el("td", { class: "effect-" + r.effect }, r.effect), el("td", {}, r.from), el("td", {}, r.to),
    el("td", {}, r.method), el("td", {}, when(r.created)),
    el("td", {}, confirmButton("Remove", "Remove rule " + r.id + "?", () => api("DELETE", "/policy/" + encodeURIComponent(r.id)))))),
    "No rules: the defaults decide.");
  $("rule-skipped").textContent = (list.skipped || []).map((s) => "Ignored: " + s).join("\n");
}

// limitsText says a token's or template's limits in words.
function limitsText(l) {
  const parts = [];
  if (l.max_bytes_total) parts.push(l.max_bytes_total + " B both ways");
  if (l.max_bytes_in) parts.push(l.max_bytes_in + " B in");
  if (l.max_bytes_out) parts.push(l.max_bytes_out + " B out");
  if (l.max_binding) parts.push(l.max_binding + " per binding");
  if (l.max_usage) parts.push(l.max_usage + " in all");
  if (l.max_wall) parts.push(l.max_wall + " from first use");
  if (l.max_age) parts.push("valid " + l.max_age);
  if (l.single_use) parts.push("single use");
  if (l.devices && l.devices.length) parts.push("on " + l.devices.join(", "));
  return parts.length ? parts.join("; ") : "no limits";
}

async function refreshTemplates() {
  const list = (await api("GET", "/tokens/templates")).templates || [];
  fill($("template-rows"), list.map((t) => el("tr", { "data-template": t.name },
    el("td", {}, t.name), el("td", {}, limitsText(t)), el("td", {}, when(t.created)))), "No templates: save one above.");
  const sel = $("issue-template");
  const had = sel.value;
  sel.replaceChildren(...list.map((t) => el("option", { value: t.name }, t.name)));
  if (list.some((t) => t.name === had)) sel.value = had;
}

async function refreshServiceTokens() {
  const list = (await api("GET", "/tokens")).tokens || [];
  fill($("service-token-rows"), list.map((t) => {
    const cell = el("td", {});
    if (t.state === "active") cell.append(confirmButton("Revoke", "Revoke " + t.id + "?", () => api("POST", "/tokens/revoke", { id: t.id })));
    if (t.state === "active" && t.lot) cell.append(confirmButton("Revoke lot", "Revoke every token of lot " + t.lot + "?", () => api("POST", "/tokens/revoke", { lot: t.lot })));
    return el("tr", { "data-token": t.id },
      el("td", {}, t.id), el("td", {}, t.template), el("td", {}, t.lot || "–"), el("td", { class: "state" }, t.state),
      el("td", {}, when(t.issued)),
      el("td", {}, t.usage.bindings + " bindings, " + (t.usage.bytes_in + t.usage.bytes_out) + " B"), cell);
  }), "No service tokens issued.");
}

async function refreshSessions() {
  const list = await api("GET", "/sessions");
  const mine = state.session && state.session.id;
  fill($("session-rows"), list.map((s) => el("tr", { "data-session": s.id },
    el("td", {}, s.id + (s.id === mine ? " (this one)" : "")), el("td", {}, s.operator), el("td", {}, s.state),
    el("td", {}, s.ip), el("td", {}, ago(s.last_active)), el("td", { class: "agent" }, s.user_agent),
    el("td", {}, s.id === mine ? "" : confirmButton("End", "End session " + s.id + "?", () => api("DELETE", "/sessions/" + encodeURIComponent(s.id)))))), "No sessions.");
}

async function refreshTokens() {
  const list = await api("GET", "/api-tokens");
  fill($("token-rows"), list.map((t) => el("tr", {},
    el("td", {}, t.id), el("td", {}, t.name), el("td", {}, t.scope), el("td", {}, when(t.expires)),
    el("td", {}, t.last_used ? ago(t.last_used) + " from " + t.last_ip : "never"),
    el("td", {}, confirmButton("Revoke", "Revoke token " + t.name + "?", () => api("DELETE", "/api-tokens/" + encodeURIComponent(t.id)))))), "No API tokens.");
}

$("invite-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act(async () => {
    const v = await api("POST", "/invites", { device: $("invite-device").value, ttl: $("invite-ttl").value, uses: Number($("invite-uses").value) || 1, code: $("invite-code").checked });
    $("invite-token").textContent = v.token;
    $("invite-code-text").textContent = v.code || "";
    $("invite-addr").textContent = $("public-addrs").textContent.split(", ")[0] || "HUB:PORT";
    $("invite-code-line").hidden = !v.code;
    const q = await api("POST", "/qr", { text: v.token });
    $("invite-qr").src = q.png;
    $("invite-new").hidden = false;
    await refreshInvites();
  });
});

$("rule-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act(async () => {
    await api("POST", "/policy", { effect: $("rule-effect").value, from: $("rule-from").value.trim(), to: $("rule-to").value.trim(),
      method: $("rule-method").value.trim(), id: $("rule-id").value.trim() });
    $("rule-from").value = ""; $("rule-to").value = ""; $("rule-id").value = ""; $("rule-method").value = "*";
    await refreshPolicy();
  });
});

$("check-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("check-result").textContent = "";
  act(async () => {
    const d = await api("POST", "/policy/check", { from: $("check-from").value.trim(), to: $("check-to").value.trim(), method: $("check-method").value.trim() });
    $("check-result").textContent = (d.allow ? "allow: " : "deny: ") + d.reason;
  });
});

$("template-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act(async () => {
    const devices = $("template-devices").value.split(/[\s,]+/).filter((d) => d);
    await api("POST", "/tokens/templates", {
      name: $("template-name").value.trim(), replace: $("template-replace").checked,
      max_bytes_total: Number($("template-bytes").value) || 0, max_binding: $("template-binding").value.trim(),
      max_age: $("template-age").value.trim(), single_use: $("template-single").checked, devices,
    });
    await refreshTemplates();
  });
});

$("issue-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act(async () => {
    const res = await api("POST", "/tokens", { template: $("issue-template").value, lot: $("issue-lot").value.trim(), count: Number($("issue-count").value) || 1 });
    $("issued-tokens").textContent = res.tokens.map((t) => t.token).join("\n");
    $("issued").hidden = false;
    await refreshServiceTokens();
  });
});

// Lists that the event stream does not carry are fetched again now and
// then while the page is open (devices and the status are pushed).
setInterval(() => { if (state.session && state.session.state === "full") refreshAll(); }, 15000);

start();
