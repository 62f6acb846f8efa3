// The queue: ready (and current, unclaimed) steps most urgent first, and pending triggers with
// their due times. Refetched as progress events and fired triggers arrive, and every few
// seconds; the "due" column counts down in place.

import { api, badge, el, live, problem, relative, reportFailure, throttled, when } from "../app.js";

const POLL_MS = 5000;

function dueCell(seconds) {
  return el("td", { "data-due": String(seconds ?? ""), title: String(seconds ?? "") }, `${when(seconds)} (${relative(seconds)})`);
}

export async function mount(main, { params }) {
  const session = params.get("session_id") || "";
  const filters = el("form", { class: "filters", method: "get", action: "/queue" },
    el("label", {}, "Session", el("input", { name: "session_id", value: session, placeholder: "any", size: 24 })),
    el("button", { type: "submit" }, "Filter"),
    session ? el("a", { href: "/queue" }, "clear") : null);
  const steps = el("tbody");
  const triggers = el("tbody");
  const stepsEmpty = el("p", { class: "muted", hidden: true }, "Nothing is ready.");
  const triggersEmpty = el("p", { class: "muted", hidden: true }, "No pending triggers.");
  main.replaceChildren(
    el("h1", {}, "Queue"), filters,
    el("h2", {}, "Ready steps, most urgent first"),
    el("table", { id: "ready" }, el("thead", {}, el("tr", {}, ["#", "Task", "Step", "Status", "Priority", "Fire at", "Session", "Attempts"].map((h) => el("th", {}, h)))), steps),
    stepsEmpty,
    el("h2", {}, "Pending triggers"),
    el("table", { id: "triggers" }, el("thead", {}, el("tr", {}, ["Due", "Task", "Step", "Session", "Priority", "Next action", "Trigger"].map((h) => el("th", {}, h)))), triggers),
    triggersEmpty,
  );

  const taskLink = (id) => el("a", { class: "mono", href: `/tasks/${encodeURIComponent(id ?? "")}` }, id ?? "");

  const render = (reply) => {
    steps.replaceChildren(...(reply.steps || []).map((s, i) => el("tr", { "data-step-id": s.step_id },
      el("td", {}, i + 1),
      el("td", {}, taskLink(s.task_id)),
      el("td", { title: s.description ?? "" }, s.step_name ?? s.step_id),
      el("td", {}, badge(s.status), s.status === "pending" ? " ready" : s.claimed_by ? ` by ${s.claimed_by}` : ""),
      el("td", {}, s.priority ?? ""),
      dueCell(s.fire_at),
      el("td", { class: "mono" }, s.session_id ?? ""),
      el("td", {}, s.attempts ?? ""),
    )));
    const pending = [...(reply.triggers || [])].sort((a, b) => (a.fire_at ?? 0) - (b.fire_at ?? 0));
    triggers.replaceChildren(...pending.map((t) => el("tr", { "data-trigger-id": t.trigger_id },
      dueCell(t.fire_at),
      el("td", {}, taskLink(t.task_id)),
      el("td", { class: "mono" }, t.step_id ?? ""),
      el("td", { class: "mono" }, t.session_id ?? ""),
      el("td", {}, t.priority ?? ""),
      el("td", {}, t.next_action_description ?? ""),
      el("td", { class: "mono muted" }, t.trigger_id ?? ""),
    )));
    stepsEmpty.hidden = (reply.steps || []).length > 0;
    triggersEmpty.hidden = pending.length > 0;
  };

  const refresh = throttled(async () => {
    try {
      const q = new URLSearchParams();
      if (session) q.set("session_id", session);
      render(await api(`/api/queue?${q}`));
      problem("api", null);
    } catch (error) {
      if (!reportFailure(error, refresh)) problem("api", `Cannot read the queue: ${error.message}`);
    }
  }, 500);

  live({ onBatch: refresh, onResync: refresh });
  setInterval(refresh, POLL_MS);
  setInterval(() => {
    for (const cell of main.querySelectorAll("td[data-due]")) {
      const due = Number(cell.dataset.due);
      if (cell.dataset.due) cell.textContent = `${when(due)} (${relative(due)})`;
    }
  }, 1000);
  refresh();
}
