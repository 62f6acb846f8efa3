// The tasks: filtered by status and session, paged with the query's cursor, kept up to date
// from the progress stream (a changed task on the page, or a new one where it would appear,
// refetches the page).

import { api, badge, el, live, problem, reportFailure, throttled, when } from "../app.js";

const STATUSES = ["", "queued", "running", "completed", "error", "cancelled"];
const PAGE_SIZE = 50;

function progressBar(summary) {
  const total = summary.steps_total || 0;
  const counts = summary.steps_by_status || {};
  const done = (counts.completed || 0) + (counts.skipped || 0);
  const bar = el("div", { class: "bar", title: Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") });
  if (total) {
    for (const status of ["completed", "skipped", "current", "failed", "cancelled"]) {
      if (counts[status]) {
        const part = el("span", { class: status });
        part.style.width = `${(100 * counts[status]) / total}%`;
        bar.append(part);
      }
    }
  }
  return el("div", { class: "row" }, bar, el("span", { class: "muted" }, `${done}/${total}`));
}

function currentStep(summary) {
  const step = summary.current_step;
  if (!step) return "";
  return typeof step === "object" ? step.step_name || step.step_id || "" : String(step);
}

export async function mount(main, { params }) {
  const status = params.get("status") || "";
  const session = params.get("session_id") || "";
  const after = params.get("after") || "";

  const filters = el("form", { class: "filters", method: "get", action: "/" },
    el("label", {}, "Status", el("select", { name: "status", id: "status" },
      STATUSES.map((s) => el("option", { value: s, selected: s === status }, s || "any")))),
    el("label", {}, "Session", el("input", { name: "session_id", id: "session", value: session, placeholder: "any", size: 24 })),
    el("button", { type: "submit" }, "Filter"),
    (status || session) ? el("a", { href: "/" }, "clear") : null,
  );
  filters.querySelector("select").addEventListener("change", () => filters.requestSubmit());
  const body = el("tbody");
  const table = el("table", { id: "tasks" },
    el("thead", {}, el("tr", {}, ["Task", "Name", "Session", "Status", "Steps", "Current step", "Priority", "Created", "Updated"].map((h) => el("th", {}, h)))),
    body);
  const empty = el("p", { class: "muted", id: "empty", hidden: true });
  const pager = el("div", { class: "pager" });
  const later = el("p", { class: "muted", id: "later", hidden: true });
  main.replaceChildren(el("h1", {}, "Tasks"), filters, table, empty, pager, later);
  let created = 0;

  let shown = new Map(); // task_id -> version shown
  let cursor = null;
  let first = true;

  const query = () => {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (status) q.set("status", status);
    if (session) q.set("session_id", session);
    if (after) q.set("after", after);
    return `/api/tasks?${q}`;
  };

  const render = (reply) => {
    const rows = [];
    const next = new Map();
    for (const t of reply.tasks || []) {
      const changed = !first && shown.get(t.task_id) !== t.version;
      next.set(t.task_id, t.version);
      rows.push(el("tr", { "data-task-id": t.task_id, "data-status": t.status, class: changed ? "fresh" : null },
        el("td", { class: "mono" }, el("a", { href: `/tasks/${encodeURIComponent(t.task_id)}` }, t.task_id)),
        el("td", {}, t.task_name ?? ""),
        el("td", { class: "mono" }, el("a", { href: `/?session_id=${encodeURIComponent(t.session_id ?? "")}` }, t.session_id ?? "")),
        el("td", { class: "status" }, badge(t.status)),
        el("td", {}, progressBar(t)),
        el("td", {}, currentStep(t)),
        el("td", {}, t.priority ?? ""),
        el("td", { title: String(t.created_at ?? "") }, when(t.created_at)),
        el("td", { title: String(t.updated_at ?? "") }, when(t.updated_at)),
      ));
    }
    body.replaceChildren(...rows);
    shown = next;
    first = false;
    cursor = reply.cursor || null;
    empty.hidden = rows.length > 0;
    empty.textContent = after
      ? "No more tasks."
      : "No tasks yet. Create one with `baton task create NAME --step \"a: first step\"`, or run `baton demo`.";
    const links = [];
    if (after) links.push(el("a", { href: `/?${new URLSearchParams({ ...(status && { status }), ...(session && { session_id: session }) })}` }, "« First page"));
    if (cursor) {
      const q = new URLSearchParams({ after: cursor });
      if (status) q.set("status", status);
      if (session) q.set("session_id", session);
      links.push(el("a", { href: `/?${q}`, id: "next-page" }, "Next page »"));
    }
    links.push(el("span", { class: "muted" }, `${rows.length} task${rows.length === 1 ? "" : "s"} on this page, oldest first`));
    pager.replaceChildren(...links);
  };

  const refresh = throttled(async () => {
    try {
      render(await api(query()));
      problem("api", null);
    } catch (error) {
      if (!reportFailure(error, refresh)) problem("api", `Cannot list tasks: ${error.message}`);
    }
  }, 300);

  live({
    onBatch: ({ events }) => {
      // Refetch when a task on this page changed, or when a new task may belong here: this is
      // the last page (no cursor), and its session and status fit the filters.
      const relevant = events.some((e) => shown.has(e.task_id) || (
        e.type === "Created" && !cursor && (!session || e.session_id === session) &&
        (!status || !e.status || e.status === status)
      ) || (status && !shown.has(e.task_id) && !cursor));
      if (relevant) refresh();
      if (cursor) {
        // Not the last page: new tasks land on a later one (the list is oldest first).
        created += events.filter((e) => e.type === "Created" && (!session || e.session_id === session)).length;
        later.hidden = created === 0;
        later.textContent = `${created} task${created === 1 ? "" : "s"} created since this page loaded; the newest are on the last page.`;
      }
    },
    onResync: refresh,
  });
  refresh();
}
