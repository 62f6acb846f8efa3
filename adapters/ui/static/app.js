// Baton dashboard: the shared pieces (API calls, the live feed, the banner, formatting) and the
// page router. Each page is a module under pages/ exporting mount(main, ctx).

export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.status = status;
    this.reason = (error && error.reason) || "";
  }
}

/** GET a dashboard API path; the decoded JSON, or an ApiError. */
export async function api(path) {
  let response;
  try {
    response = await fetch(path, { headers: { accept: "application/json" } });
  } catch (e) {
    throw new ApiError(0, { reason: "unreachable", message: "the dashboard server does not answer" });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body && body.error);
  return body;
}

/** A DOM element: el("td", {class: "x", title: "…"}, child, "text", …). Text is never parsed
 * as HTML. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function escapeXml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export function badge(status) {
  return el("span", { class: `badge ${status}` }, status ?? "?");
}

/** Epoch seconds as local time: the time of day for today, else the date too. */
export function when(seconds) {
  if (seconds === undefined || seconds === null || seconds === "") return "";
  const date = new Date(Number(seconds) * 1000);
  if (Number.isNaN(date.getTime())) return String(seconds);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour12: false });
  if (date.toDateString() === today.toDateString()) return time;
  return `${date.toISOString().slice(0, 10)} ${time}`;
}

/** "in 12 s", "3 min ago". */
export function relative(seconds) {
  if (seconds === undefined || seconds === null) return "";
  const delta = Number(seconds) - Date.now() / 1000;
  const size = Math.abs(delta);
  const text = size < 1 ? "now" : size < 90 ? `${Math.round(size)} s` : size < 5400 ? `${Math.round(size / 60)} min` : size < 172800 ? `${Math.round(size / 3600)} h` : `${Math.round(size / 86400)} d`;
  if (text === "now") return text;
  return delta > 0 ? `in ${text}` : `${text} ago`;
}

/** Any JSON value, readable: strings as they are, the rest pretty-printed. */
export function show(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

/** Runs fn at most once per `ms` (a number, or a function giving it), and once more after the
 * last call (trailing edge); runs one at a time (calls during a run schedule one more run). */
export function throttled(fn, ms) {
  let timer = null, running = false, again = false, last = 0;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true; last = Date.now();
    try { await fn(); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => {
    if (timer) return;
    const gap = typeof ms === "function" ? ms() : ms;
    timer = setTimeout(run, Math.max(0, gap - (Date.now() - last)));
  };
  return schedule;
}

// -- the banner --------------------------------------------------------------------------------

const problems = new Map();

/** Shows (text) or clears (null) one reason for the banner; the banner lists every reason. */
export function problem(key, text) {
  if (text) problems.set(key, text); else problems.delete(key);
  const banner = document.getElementById("banner");
  if (!banner) return;
  banner.replaceChildren(...[...problems.values()].map((t) => el("div", {}, t)));
  banner.hidden = problems.size === 0;
}

/** How long after a failed read the page reads again (no Baton service answers yet, or the
 * dashboard server is away): the banner says "retrying", and it does. */
export const RETRY_MS = 2000;

/** Reports an API failure in the banner (NATS or the dashboard server unreachable) and calls
 * `retry` after RETRY_MS, or returns false for an error the page shows itself. Nothing else may
 * come to refetch: a service that reconnects to NATS after the dashboard did sends no event. */
export function reportFailure(error, retry) {
  if (error instanceof ApiError && (error.status === 503 || error.status === 0)) {
    problem("api", `${error.message}; retrying…`);
    if (retry) setTimeout(retry, RETRY_MS);
    return true;
  }
  return false;
}

// -- the live feed -------------------------------------------------------------------------------

/** Follows /api/live: onBatch({events, triggers}) for progress events and fired triggers (of one
 * task when `task` is given, none when `quiet`), onResync() whenever what was followed may have been missed (the
 * stream or NATS reconnected). Returns the EventSource. */
export function live({ task, quiet, onBatch, onResync }) {
  const dot = document.getElementById("live-dot");
  const where = document.getElementById("where");
  const url = task ? `/api/live?task=${encodeURIComponent(task)}` : quiet ? "/api/live?quiet=1" : "/api/live";
  const source = new EventSource(url);
  let natsUp = null;
  let opened = false;
  source.addEventListener("open", () => {
    problem("server", null);
    if (opened) onResync && onResync(); // a reconnect: refetch what may have changed meanwhile
    opened = true;
  });
  source.addEventListener("error", () => {
    dot && (dot.className = "live-dot off");
    problem("server", "Lost the connection to the dashboard server; reconnecting…");
  });
  source.addEventListener("status", (message) => {
    const status = JSON.parse(message.data);
    const up = status.nats === "connected";
    if (where && status.server) where.textContent = `${status.server} · prefix ${document.body.dataset.prefix}`;
    dot && (dot.className = `live-dot ${up ? "on" : "off"}`);
    problem("nats", up ? null : `No connection to NATS${status.server ? ` at ${status.server}` : ""}; reconnecting…`);
    if (up) problem("api", null);
    if (up && natsUp === false) onResync && onResync();
    natsUp = up;
  });
  source.addEventListener("resync", () => onResync && onResync());
  source.addEventListener("batch", (message) => onBatch && onBatch(JSON.parse(message.data)));
  window.addEventListener("pagehide", () => source.close());
  return source;
}

// -- the router ----------------------------------------------------------------------------------

const pages = {
  tasks: () => import("./pages/tasks.js"),
  task: () => import("./pages/task.js"),
  queue: () => import("./pages/queue.js"),
  instances: () => import("./pages/instances.js"),
  notfound: () => import("./pages/notfound.js"),
};

async function main() {
  const name = document.body.dataset.page;
  const initial = JSON.parse(document.getElementById("initial").textContent || "null");
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name || (name === "task" && link.dataset.nav === "tasks")) link.classList.add("active");
  }
  const main = document.getElementById("main");
  const load = pages[name] || pages.notfound;
  const module = await load();
  await module.mount(main, { initial, params: new URLSearchParams(location.search) });
}

main().catch((error) => {
  console.error(error);
  problem("script", `The page failed: ${error.message}`);
});
