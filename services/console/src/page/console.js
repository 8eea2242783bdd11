// The saga console. Talks to the gateway only: the login at /api/v1/auth/login, the
// console's API at /api/v1/admin/console (admins only). Live views read server-sent events
// through fetch, which (unlike EventSource) can send the bearer token. Everything shown is
// set as text, never as HTML: dead letters carry whatever a producer put in them.
"use strict";

const API = "/api/v1/admin/console";
const TOKEN_KEY = "saga-console-token";
let live = null; // AbortController of the stream the current view follows
let diagramSvg = null;
let lastTrace = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function row(cells, cls) {
  return el("tr", cls ? { class: cls } : {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

function num(n) {
  return el("td", { class: "num" }, n);
}

function fill(table, head, rows) {
  table.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))), ...rows);
}

function say(text, info) {
  const m = $("message");
  m.textContent = text;
  m.className = info ? "info" : "";
  m.hidden = !text;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/// What the gateway or the console answered, as one sentence for the page.
async function problem(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.message) message = body.message;
    if (body && Array.isArray(body.fields) && body.fields.length) {
      message += `: ${body.fields.map((f) => `${f.field} ${f.message}`).join("; ")}`;
    }
  } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
    return `Please log in (${message}).`;
  }
  if (response.status === 403) return `Forbidden: the console is for admins only (${message}).`;
  return message;
}

async function api(path, options) {
  const response = await fetch(API + path, {
    ...(options || {}),
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
  });
  if (!response.ok) throw new Error(await problem(response));
  return response.json();
}

/// Follows a server-sent event stream, calling on(event, data) for each event.
async function follow(path, on, signal) {
  const response = await fetch(API + path, { headers: { Authorization: `Bearer ${token()}` }, signal });
  if (!response.ok) throw new Error(await problem(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) on(event, JSON.parse(data.join("\n")));
    }
  }
}

function stopLive() {
  if (live) live.abort();
  live = null;
}

function show(view) {
  for (const v of ["login-view", "overview-view", "saga-view", "dlq-view"]) $(v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", `${a.id.slice(4)}-view` === view);
}

function showLogin() {
  stopLive();
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  show("login-view");
}

// ---- overview ------------------------------------------------------------------------

function renderOverview(o) {
  fill($("statuses"), ["status", "sagas"],
    o.statuses.map((s) => row([s.status, num(s.count)], s.terminal ? "terminal" : "")));
  const terminal = o.statuses.filter((s) => s.terminal).map((s) => s.status);
  fill($("outcomes"), ["minute", ...terminal],
    o.outcomes.slice(-10).map((m) => row([new Date(m.minute).toLocaleTimeString(), ...terminal.map((t) => num(m.counts[t] || 0))])));
  $("durations").textContent = o.durations
    ? `p50 ${(o.durations.p50_ms / 1000).toFixed(2)} s, p99 ${(o.durations.p99_ms / 1000).toFixed(2)} s over ${o.durations.sagas} sagas`
    : "no saga ended in the window";
  fill($("lag"), ["group", "topic", "lag"], o.lag.map((l) => row([l.group, l.topic, num(l.lag)])));
  fill($("outbox"), ["service", "waiting", "failed"], o.outbox.map((b) => row([b.service, num(b.pending), num(b.failed)])));
  fill($("dlq-counts"), ["topic", "messages"], Object.entries(o.dead_letters).map(([t, n]) => row([t, num(n)])));
  $("updated").textContent = `updated ${new Date(o.at).toLocaleTimeString()}`;
  $("unavailable").hidden = o.unavailable.length === 0;
  $("unavailable").textContent = o.unavailable.length ? `Not available: ${o.unavailable.join("; ")}` : "";
}

// Each service's health as the gateway that serves this page sees it (its `/readyz`, whose
// `backends` name an API that cannot serve and a saga pipeline that is stuck: the broker, the
// relay, a consumer or the sweeper), read with every overview.
async function renderServices() {
  try {
    const response = await fetch("/readyz");
    const backends = (await response.json()).backends || {};
    const words = Object.entries(backends).filter(([service]) => !service.endsWith(" instances"));
    fill($("services"), ["service", "health"], words.map(([service, word]) =>
      row([service, word], word === "ok" ? "" : "degraded")));
  } catch (e) {
    fill($("services"), ["service", "health"], [row(["-", `unknown: ${e.message}`], "degraded")]);
  }
}

async function overview() {
  show("overview-view");
  const control = new AbortController();
  live = control;
  while (!control.signal.aborted) {
    try {
      await follow("/overview/stream", (event, data) => {
        if (event !== "overview") return;
        renderOverview(data);
        renderServices();
      }, control.signal);
    } catch (e) {
      if (control.signal.aborted) return;
      say(e.message);
      if (!token()) return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ---- one saga ------------------------------------------------------------------------

async function diagram() {
  if (!diagramSvg) {
    const response = await fetch("/console/assets/status.svg");
    diagramSvg = await response.text();
  }
  return diagramSvg;
}

function describe(entry) {
  switch (entry.kind) {
    case "transition": return ["status", "order", `${entry.from || "(start)"} → ${entry.to} on ${entry.event_type}`];
    case "published": {
      const state = entry.failed ? `FAILED: ${entry.failed}`
        : entry.published_at ? `published ${new Date(entry.published_at).toLocaleTimeString()}` +
          (entry.partition != null ? ` at ${entry.topic}/${entry.partition}@${entry.offset}` : "")
        : "not published yet";
      return ["publish", entry.service, `${entry.event_type} → ${entry.topic}: ${state}`];
    }
    case "consumed": return ["consume", entry.service, `${entry.event_type} from ${entry.topic}/${entry.partition}@${entry.offset}`];
    case "parked": return ["parked", "order", `${entry.event_type} waits for a status that accepts it`];
    case "dead_lettered": return ["dead letter", entry.group,
      `${entry.event_type} in ${entry.topic}/${entry.partition}@${entry.offset}: ${entry.reason}: ${entry.error}`];
    default: return [entry.kind, "", JSON.stringify(entry)];
  }
}

function renderTrace(trace) {
  lastTrace = trace;
  $("saga-summary").replaceChildren(
    el("p", {}, "Order ", el("code", { id: "saga-order" }, trace.order_id), " is ",
      el("strong", { id: "saga-status" }, trace.status), " · trace ", el("code", { id: "saga-trace-id" }, trace.trace_id || "-")));
  const svg = $("diagram").querySelector("svg");
  if (svg) {
    for (const n of svg.querySelectorAll(".current, .possible, .reachable")) n.classList.remove("current", "possible", "reachable");
    const current = svg.querySelector(`.state[data-state="${CSS.escape(trace.status)}"]`);
    if (current) current.classList.add("current");
    for (const t of svg.querySelectorAll(`.transition[data-from="${CSS.escape(trace.status)}"]`)) {
      t.classList.add("possible");
      const target = svg.querySelector(`.state[data-state="${CSS.escape(t.dataset.to)}"]`);
      if (target) target.classList.add("reachable");
    }
  }
  renderNext();
  fill($("timeline"), ["when", "what", "who", "detail"], trace.timeline.map((entry) => {
    const [what, who, detail] = describe(entry);
    const when = entry.at ? new Date(entry.at).toLocaleTimeString([], { hour12: false }) + "." + String(new Date(entry.at).getMilliseconds()).padStart(3, "0") : "?";
    return row([when, el("td", { class: "kind" }, what), who, detail], entry.kind === "published" && entry.failed ? "failed" : entry.kind);
  }));
}

/// The ways out of the current status; the timeout's time left counts down between events.
function renderNext() {
  const trace = lastTrace;
  if (!trace) return;
  if (trace.next.length === 0) {
    $("next").replaceChildren(el("li", {}, "Nothing comes next: the saga ended."));
    return;
  }
  $("next").replaceChildren(...trace.next.map((n) => {
    if (n.on) return el("li", {}, `on ${n.on} → ${n.to}`);
    if (!trace.deadline) return el("li", {}, `timeout → ${n.to}`);
    const left = (new Date(trace.deadline) - Date.now()) / 1000;
    const text = left >= 0 ? `timeout → ${n.to} in ${left.toFixed(1)} s` : `timeout → ${n.to}, overdue by ${(-left).toFixed(1)} s`;
    return el("li", { class: "timeout-left" }, text);
  }));
}

async function saga(id) {
  show("saga-view");
  $("order-id").value = id || "";
  $("saga-summary").replaceChildren();
  $("timeline").replaceChildren();
  $("next").replaceChildren();
  lastTrace = null;
  if (!id) return;
  $("diagram").innerHTML = await diagram();
  const control = new AbortController();
  live = control;
  const ticker = setInterval(renderNext, 500);
  control.signal.addEventListener("abort", () => clearInterval(ticker));
  try {
    // A stream of a saga still running may be closed by the gateway after a while: follow on.
    do {
      await follow(`/sagas/${encodeURIComponent(id)}/stream`, (event, data) => {
        if (event === "trace") { say(""); renderTrace(data); }
        if (event === "error") say(data.message);
      }, control.signal);
    } while (!control.signal.aborted && lastTrace && lastTrace.next.length > 0);
  } catch (e) {
    if (!control.signal.aborted) {
      $("diagram").replaceChildren();
      say(e.message);
    }
  }
}

// ---- dead letters --------------------------------------------------------------------

function confirmRedrive(text) {
  return new Promise((resolve) => {
    $("confirm-text").textContent = text;
    $("confirm-box").hidden = false;
    const done = (answer) => () => {
      $("confirm-box").hidden = true;
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      resolve(answer);
    };
    $("confirm-yes").onclick = done(true);
    $("confirm-no").onclick = done(false);
  });
}

async function redrive(body, what) {
  if (!(await confirmRedrive(`Put ${what} back on its topic? The services will handle it again.`))) return;
  try {
    const outcome = await api("/dlq/redrive", { method: "POST", body: JSON.stringify({ confirm: true, ...body }) });
    const refused = outcome.refused.length
      ? ` Refused (the source topic does not hold them as they are): ${outcome.refused.length}.` : "";
    say(`Redriven: ${outcome.redriven.length}; already redriven before: ${outcome.already.length}.${refused}`, !refused);
  } catch (e) {
    say(e.message);
  }
  await deadLetters();
}

// A forged or unverifiable letter goes back only by an override of that one letter: its
// own bytes, named by their digest, with the admin's reason (both audited).
async function override(l) {
  const reason = window.prompt(`Dead letter ${l.topic}/${l.partition}@${l.offset} is ${l.provenance.verdict}: `
    + `${l.provenance.why}. Its own bytes (SHA-256 ${l.value_sha256}) would go out. Why is that right?`);
  if (!reason || !reason.trim()) return;
  const one = { topic: l.topic, partition: l.partition, offset: l.offset, value_sha256: l.value_sha256, reason };
  await redrive({ override: one }, `the ${l.provenance.verdict} dead letter ${l.topic}/${l.partition}@${l.offset}`);
}

async function deadLetters() {
  show("dlq-view");
  try {
    const listing = await api("/dlq");
    $("dlq-list").replaceChildren(...listing.topics.map((t) => el("div", { class: "card", "data-dlq": t.dlq },
      el("h3", {}, `${t.dlq}: ${t.total} message(s), redriven to ${t.topic}`),
      t.letters.length === 0 ? el("p", { class: "muted" }, "empty") : (() => {
        const table = el("table", { class: "letters" });
        fill(table, ["at", "partition@offset", "event", "saga", "reason", "error", "source", "headers", ""], t.letters.map((l) => {
          const ref = { topic: l.topic, partition: l.partition, offset: l.offset };
          const genuine = l.provenance.verdict === "genuine";
          const action = l.redriven
            ? el("td", { class: "redriven" }, `redriven by ${l.redriven.by} at ${new Date(l.redriven.at).toLocaleTimeString()}`)
            : genuine
              ? el("td", {}, el("button", { class: "redrive", onclick: () => redrive({ messages: [ref] }, `dead letter ${l.topic}/${l.partition}@${l.offset}`) }, "Redrive"))
              : el("td", {}, el("button", { class: "override", onclick: () => override(l) }, "Override…"));
          const source = el("td", { class: `provenance ${l.provenance.verdict}`, title: l.provenance.why }, l.provenance.verdict);
          const headers = el("td", { class: "letter-headers" }, el("details", {},
            el("summary", {}, `${l.headers.length} headers`), el("pre", {}, l.headers.map(([k, v]) => `${k}: ${v}`).join("\n"))));
          return row([when(l.failed_at), `${l.partition}@${l.offset}`, l.event_type, el("td", { class: "key" }, l.key || "-"), l.reason,
            el("td", { class: "error" }, l.error), source, headers, action], "letter");
        }));
        return table;
      })())));
    const audit = await api("/dlq/audit");
    fill($("audit"), ["when", "who", "dead letter", "to", "event", "saga", "source", "override"], audit.map((a) => row([
      new Date(a.redriven_at).toLocaleString(), a.admin, `${a.dlq_topic}/${a.dlq_partition}@${a.dlq_offset}`,
      a.target_topic, a.event_type, a.saga_key || "-", a.provenance,
      a.override_reason ? `${a.override_reason} (SHA-256 ${a.value_sha256})` : "-"])));
  } catch (e) {
    say(e.message);
  }
}

/// A broker or database timestamp (RFC 3339, maybe with nanoseconds) as local date and time.
function when(text) {
  const at = text ? new Date(text.replace(/(\.\d{3})\d+/, "$1")) : null;
  return at && !isNaN(at) ? at.toLocaleString([], { hour12: false }) : text || "-";
}

// ---- wiring --------------------------------------------------------------------------

async function route() {
  stopLive();
  if (!token()) return showLogin();
  $("nav").hidden = false;
  $("logout").hidden = false;
  const [view, arg] = location.hash.replace(/^#/, "").split("/");
  if (view === "saga") return saga(arg ? decodeURIComponent(arg) : "");
  if (view === "dlq") return deadLetters();
  return overview();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const response = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  if (!response.ok) return say(await problem(response));
  const session = await response.json();
  sessionStorage.setItem(TOKEN_KEY, session.token);
  $("who").textContent = $("email").value;
  route();
});

$("logout").addEventListener("click", async () => {
  await fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token()}` } });
  sessionStorage.removeItem(TOKEN_KEY);
  say("");
  showLogin();
});

const ORDER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

$("saga-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("order-id").value.trim();
  if (!ORDER_ID.test(id)) {
    say(`"${id}" is not an order id: an order id is a UUID, like 0190f5c2-8d4e-7a3b-9c1d-2e3f4a5b6c7d.`);
    return;
  }
  say("");
  location.hash = `#saga/${encodeURIComponent(id)}`;
});

$("redrive-all").addEventListener("click", () => redrive({ all: true }, "every dead letter not redriven yet"));
$("dlq-refresh").addEventListener("click", () => deadLetters());
window.addEventListener("hashchange", () => { say(""); route(); });
route();
