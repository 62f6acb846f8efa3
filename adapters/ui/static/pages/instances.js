// The instances of the service under this prefix, found with $SRV.INFO / $SRV.STATS: version,
// endpoints, and each endpoint's requests, errors and processing time. Polled.

import { api, el, live, problem, relative, reportFailure, throttled } from "../app.js";

const POLL_MS = 5000;

function ms(nanoseconds) {
  if (!nanoseconds) return "—";
  const v = nanoseconds / 1e6;
  return v < 10 ? `${v.toFixed(2)} ms` : `${v.toFixed(0)} ms`;
}

function started(text) {
  if (!text) return "";
  const t = Date.parse(text);
  return Number.isNaN(t) ? text : `${new Date(t).toLocaleString()} (up ${relative(t / 1000).replace(" ago", "")})`;
}

export async function mount(main) {
  const summary = el("p", { class: "muted", id: "instances-summary" }, "Asking the service…");
  const cards = el("div", { class: "cards", id: "instances" });
  main.replaceChildren(el("h1", {}, "Instances"), summary, cards);

  const render = (reply) => {
    const found = reply.instances || [];
    summary.textContent = found.length
      ? `${found.length} instance${found.length === 1 ? " of the service answers" : "s of the service answer"} on ${reply.server} under prefix ${reply.prefix}.`
      : `No instance answers $SRV.INFO.baton under prefix ${reply.prefix} on ${reply.server}.`;
    cards.replaceChildren(...found.map((i) => {
      const endpoints = i.endpoints || [];
      const requests = endpoints.reduce((n, e) => n + (e.num_requests || 0), 0);
      const errors = endpoints.reduce((n, e) => n + (e.num_errors || 0), 0);
      const meta = Object.entries(i.metadata || {});
      return el("section", { class: "panel instance", "data-instance-id": i.id },
        el("h2", {}, el("span", { class: "mono" }, i.id), " ", el("span", { class: "badge" }, `v${i.version ?? "?"}`)),
        el("div", { class: "meta" },
          el("span", {}, i.name ?? ""),
          i.description ? el("span", {}, i.description) : null,
          i.started ? el("span", {}, `started ${started(i.started)}`) : null,
          el("span", {}, `${requests} requests, ${errors} errors`),
          ...meta.map(([k, v]) => el("span", { class: "mono" }, `${k}=${v}`))),
        el("table", {},
          el("thead", {}, el("tr", {}, ["Endpoint", "Subject", "Kind", "Requests", "Errors", "Avg time", "Last error"].map((h) => el("th", {}, h)))),
          el("tbody", {}, endpoints.map((e) => el("tr", {},
            el("td", {}, e.name ?? ""),
            el("td", { class: "mono" }, e.subject ?? ""),
            el("td", {}, (e.metadata && e.metadata.kind) || ""),
            el("td", {}, e.num_requests ?? 0),
            el("td", { class: e.num_errors ? "error-box" : null }, e.num_errors ?? 0),
            el("td", {}, ms(e.average_processing_time)),
            el("td", { class: "muted" }, e.last_error || ""),
          )))));
    }));
  };

  const refresh = throttled(async () => {
    try {
      render(await api("/api/instances"));
      problem("api", null);
    } catch (error) {
      if (!reportFailure(error, refresh)) problem("api", `Cannot ask the instances: ${error.message}`);
    }
  }, 1000);
  live({ quiet: true, onResync: refresh });
  setInterval(refresh, POLL_MS);
  refresh();
}
