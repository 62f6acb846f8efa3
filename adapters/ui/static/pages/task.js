// A task: its plan as a graph (status, ready or blocked, claims, attempts; details on click),
// its context, its history as a timeline, and a version slider that shows the task as it was
// at any version (query.history with version). Live: progress events of the task refetch its
// view while the slider is at the latest version.

import { api, badge, el, live, problem, relative, reportFailure, show, throttled, when } from "../app.js";
import { graphSvg, layout, shapeKey, stepState } from "../graph.js";

const KNOWN_STEP_FIELDS = new Set([
  "task_id", "step_id", "step_index", "step_name", "description", "action_instruction",
  "validation_instruction", "depends_on", "status", "ready", "blocked", "claimed_by", "result",
  "failure_message", "attempts", "context",
]);

function value(v) {
  if (v === null || v === undefined || v === "") return el("span", { class: "muted" }, "—");
  if (typeof v === "object") return el("pre", {}, show(v));
  return String(v);
}

function timeField(key, v) {
  if (typeof v === "number" && /(_at|^fire_at|timestamp)$/.test(key) && v > 1e9) {
    return `${when(v)} (${relative(v)})`;
  }
  return value(v);
}

export async function mount(main, { initial }) {
  const taskId = initial.task_id;
  const state = {
    live: initial.view || null,   // the latest view
    shown: null,                  // the view on screen (the latest, or one from the past)
    past: null,                   // the version on screen when not the latest
    latest: initial.view ? initial.view.version : 0,
    events: new Map(),            // version -> history event
    selected: null,
    zoom: null,
    layoutCache: null,
    lastTrigger: null,
  };

  // -- skeleton ----------------------------------------------------------------------------
  const title = el("h1", {});
  const meta = el("div", { class: "meta" });
  const about = el("div", {});
  const slider = el("input", { type: "range", id: "version", min: "1", max: "1", step: "1", value: "1", "aria-label": "version" });
  const versionLabel = el("span", { id: "version-label", class: "mono" });
  const liveButton = el("button", { type: "button", id: "go-live", hidden: true }, "Back to live");
  const pastNote = el("div", { class: "past", id: "past", hidden: true });
  const graphWrap = el("div", { class: "graph-wrap", id: "graph" });
  const zoomLabel = el("span", { class: "muted mono" });
  const tools = el("div", { class: "graph-tools" },
    el("button", { type: "button", title: "zoom out", onclick: () => zoomBy(1 / 1.25) }, "−"),
    el("button", { type: "button", title: "zoom in", onclick: () => zoomBy(1.25) }, "+"),
    el("button", { type: "button", onclick: () => { state.zoom = fitZoom(); draw(); } }, "Fit"),
    el("button", { type: "button", onclick: () => { state.zoom = 1; draw(); } }, "100%"),
    zoomLabel,
    el("span", { class: "legend" }, ["ready", "blocked", "current", "completed", "failed", "skipped", "cancelled"].map((s) => el("span", {}, el("i", { class: `l-${s}` }), s))),
  );
  const details = el("aside", { class: "panel details", id: "details" });
  const context = el("div", { id: "context" });
  const timeline = el("ol", { class: "timeline", id: "timeline" });
  main.replaceChildren(
    title, meta, about,
    el("div", { class: "versions" }, el("span", { class: "muted" }, "Version"), slider, versionLabel, liveButton),
    pastNote,
    el("div", { class: "row" }, el("div", { class: "grow" }, tools, graphWrap), details),
    el("h2", {}, "Context"), context,
    el("h2", {}, "History"), timeline,
  );

  // -- drawing -----------------------------------------------------------------------------
  function frameWidth() {
    return Math.max(240, (graphWrap.clientWidth - 4) / (state.zoom || 1));
  }

  function shapeOf(steps) {
    const key = shapeKey(steps);
    const width = frameWidth();
    const cached = state.layoutCache;
    if (cached && cached.key === key && (!cached.shape.line || Math.abs(cached.width - width) < 1)) return cached.shape;
    const shape = layout(steps, width);
    state.layoutCache = { key, width, shape };
    return shape;
  }

  function fitZoom() {
    const shape = state.layoutCache && state.layoutCache.shape;
    if (!shape) return 1;
    const height = window.innerHeight * 0.7; // the frame's largest height (see app.css)
    const z = Math.min((graphWrap.clientWidth - 8) / shape.width, (height - 8) / shape.height, 1);
    return Math.max(0.1, z);
  }

  function zoomBy(factor) {
    state.zoom = Math.min(3, Math.max(0.1, (state.zoom || 1) * factor));
    draw();
  }

  function draw() {
    const view = state.shown;
    if (!view) return;
    const steps = view.steps || [];
    if (steps.length === 0) {
      graphWrap.replaceChildren(el("p", { class: "muted", style: null }, "This task has no steps."));
      return;
    }
    performance.mark("layout-start");
    let shape = shapeOf(steps);
    if (state.zoom === null) {
      // First drawing: fit a small graph, but never below half size (scroll instead).
      state.zoom = shape.line ? 1 : Math.max(0.5, Math.min(1, fitZoom()));
      shape = shapeOf(steps);
    }
    performance.mark("layout-done");
    const svg = graphSvg(steps, shape, state.zoom, state.selected);
    performance.mark("svg-text");
    graphWrap.innerHTML = svg;
    performance.mark("svg-inserted");
    zoomLabel.textContent = `${Math.round(state.zoom * 100)}% · ${steps.length} step${steps.length === 1 ? "" : "s"}${shape.line ? " · sequential" : ""}`;
  }

  function drawHeader() {
    const view = state.shown;
    if (!view) return;
    title.replaceChildren(view.task_name ?? taskId, " ", badge(view.status));
    document.title = `${view.task_name ?? taskId} · Baton`;
    meta.replaceChildren(...[
      el("span", { class: "mono" }, view.task_id),
      el("span", {}, "session ", el("a", { class: "mono", href: `/?session_id=${encodeURIComponent(view.session_id ?? "")}` }, view.session_id ?? "")),
      el("span", {}, `priority ${view.priority ?? ""}`),
      el("span", {}, `version ${view.version}`),
      view.created_at ? el("span", {}, `created ${when(view.created_at)}`) : null,
      view.updated_at ? el("span", {}, `updated ${when(view.updated_at)}`) : null,
      view.trigger ? el("span", {}, `trigger due ${when(view.trigger.fire_at)} (${relative(view.trigger.fire_at)})`) : null,
      state.lastTrigger ? el("span", {}, `last trigger fired ${when(state.lastTrigger.fired)} for ${state.lastTrigger.step_id}`) : null,
      view.message ? el("span", {}, `message: ${view.message}`) : null,
    ].filter(Boolean));
    const parts = [];
    if (view.task_instruction) parts.push(el("p", {}, view.task_instruction));
    if (view.goal) parts.push(el("p", {}, el("span", { class: "muted" }, "Goal: "), view.goal));
    if (view.inputs_params && Object.keys(view.inputs_params).length) {
      parts.push(el("p", {}, el("span", { class: "muted" }, "Inputs: "), el("code", {}, JSON.stringify(view.inputs_params))));
    }
    about.replaceChildren(...parts);
    const entries = Object.entries(view.context || {});
    context.replaceChildren(entries.length
      ? el("dl", { class: "kv panel" }, entries.flatMap(([k, v]) => [el("dt", { class: "mono" }, k), el("dd", {}, value(v))]))
      : el("p", { class: "muted" }, "No context entries."));
  }

  function drawDetails() {
    const view = state.shown;
    const steps = (view && view.steps) || [];
    const step = steps.find((s) => s.step_id === state.selected);
    if (!step) {
      details.replaceChildren(el("p", { class: "muted" }, "Click a step to see its details; hover for a summary."));
      return;
    }
    const dependents = steps.filter((s) => (s.depends_on || []).includes(step.step_name));
    const link = (s) => el("a", { href: "#", "data-step": s.step_id, onclick: (e) => { e.preventDefault(); select(s.step_id); } }, s.step_name);
    const rows = [
      ["status", el("span", {}, badge(step.status), " ", stepState(step))],
      ["step id", el("span", { class: "mono" }, step.step_id)],
      ["index", step.step_index],
      ["claimed by", step.claimed_by],
      ["attempts", step.attempts],
      ["depends on", (step.depends_on || []).length ? (step.depends_on || []).map((n) => {
        const s = steps.find((x) => x.step_name === n);
        return s ? [link(s), " "] : [n, " "];
      }) : null],
      ["dependents", dependents.length ? dependents.map((s) => [link(s), " "]) : null],
      ["description", step.description],
      ["action", step.action_instruction],
      ["validation", step.validation_instruction],
      ["result", step.result],
      ["failure", step.failure_message],
    ];
    const extra = Object.keys(step).filter((k) => !KNOWN_STEP_FIELDS.has(k)).sort();
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of rows) {
      dl.append(el("dt", {}, k), el("dd", { "data-field": k }, v instanceof Node || Array.isArray(v) ? el("span", {}, v) : value(v)));
    }
    for (const k of extra) dl.append(el("dt", { class: "mono" }, k), el("dd", { "data-field": k }, timeField(k, step[k])));
    details.replaceChildren(
      el("h2", { id: "details-name" }, step.step_name),
      dl,
      el("h2", {}, "Step context"),
      Object.keys(step.context || {}).length ? el("pre", {}, show(step.context)) : el("p", { class: "muted" }, "Empty."),
    );
  }

  function select(stepId) {
    state.selected = stepId;
    for (const node of graphWrap.querySelectorAll(".node.selected")) node.classList.remove("selected");
    const node = [...graphWrap.querySelectorAll(".node")].find((n) => n.dataset.stepId === stepId);
    if (node) node.classList.add("selected");
    drawDetails();
  }

  graphWrap.addEventListener("click", (event) => {
    const node = event.target.closest && event.target.closest(".node");
    if (node) select(node.dataset.stepId);
  });

  function drawTimeline() {
    const versions = [...state.events.keys()].sort((a, b) => b - a);
    const shownVersion = state.shown ? state.shown.version : state.latest;
    timeline.replaceChildren(...versions.map((v) => {
      const e = state.events.get(v);
      return el("li", {
        "data-version": v,
        class: v === shownVersion ? "shown" : v > shownVersion ? "later" : null,
        title: "show the task as it was at this version",
        onclick: () => goTo(v),
      },
      el("span", { class: "mono" }, `v${v}`),
      el("span", { class: "muted", title: String(e.timestamp ?? "") }, when(e.timestamp)),
      el("span", { class: "mono" }, e.type ?? ""),
      el("span", {}, e.display_message ?? ""));
    }));
  }

  function drawSlider() {
    slider.max = String(Math.max(1, state.latest));
    const at = state.past ?? state.latest;
    slider.value = String(at);
    versionLabel.textContent = `${at} of ${state.latest}`;
    liveButton.hidden = state.past === null;
    if (state.past !== null && state.shown) {
      const e = state.events.get(state.past);
      pastNote.hidden = false;
      pastNote.replaceChildren(`Showing the task as it was at version ${state.past}`,
        e ? ` (${when(e.timestamp)}: ${e.display_message ?? e.type})` : "",
        `; the latest is version ${state.latest}. `,
        el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); goTo(null); } }, "Back to live"));
    } else {
      pastNote.hidden = true;
    }
  }

  let marked = false;
  function showView(view) {
    state.shown = view;
    if (!marked) {
      marked = true;
      // Marks when the graph is first on screen (the browser tests read it as the load time).
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark("graph-rendered");
        document.body.dataset.graphRendered = "true";
      }, 0));
    }
    if (state.selected === null) {
      const current = (view.steps || []).find((s) => s.status === "current");
      if (current) state.selected = current.step_id;
    }
    drawHeader();
    draw();
    drawDetails();
    drawSlider();
    drawTimeline();
  }

  // -- data --------------------------------------------------------------------------------
  let lagRetries = 0;
  const refreshView = throttled(async () => {
    try {
      const view = await api(`/api/tasks/${encodeURIComponent(taskId)}`);
      problem("api", null);
      state.live = view;
      state.latest = Math.max(state.latest, view.version || 0);
      if (state.past === null) showView(view); else drawSlider();
      // The view may lag the event that announced a change for a moment: look again.
      if ((view.version || 0) < state.latest && lagRetries++ < 20) setTimeout(refreshView, 150);
      else lagRetries = 0;
    } catch (error) {
      if (error.status === 404) {
        problem("api", `Task ${taskId} is gone.`);
      } else if (!reportFailure(error, refreshView)) {
        problem("api", `Cannot load the task: ${error.message}`);
      }
    }
  }, () => (state.live && (state.live.steps || []).length > 200 ? 750 : 150)); // big views: less often

  const refreshHistory = throttled(async () => {
    try {
      const reply = await api(`/api/tasks/${encodeURIComponent(taskId)}/history`);
      for (const e of reply.events || []) state.events.set(e.version, e);
      const top = Math.max(0, ...state.events.keys());
      if (top > state.latest) { state.latest = top; refreshView(); }
      drawSlider();
      drawTimeline();
    } catch (error) {
      if (!reportFailure(error, refreshHistory)) problem("history", `Cannot load the history: ${error.message}`);
    }
  }, 500);

  let wanted = null;
  const loadPast = throttled(async () => {
    const version = wanted;
    if (version === null) return;
    try {
      const reply = await api(`/api/tasks/${encodeURIComponent(taskId)}/history?version=${version}`);
      if (wanted === version && reply.task) showView(reply.task);
    } catch (error) {
      if (!reportFailure(error)) problem("history", `Cannot show version ${version}: ${error.message}`);
    }
  }, 80);

  function goTo(version) {
    if (version === null || version >= state.latest) {
      state.past = null;
      wanted = null;
      if (state.live) showView(state.live);
      drawSlider();
      refreshView();
      return;
    }
    state.past = Math.max(1, version);
    wanted = state.past;
    drawSlider();
    drawTimeline();
    loadPast();
  }

  slider.addEventListener("input", () => goTo(Number(slider.value)));
  liveButton.addEventListener("click", () => goTo(null));
  window.addEventListener("resize", throttled(async () => { if (state.layoutCache && state.layoutCache.shape.line) draw(); }, 200));

  live({
    task: taskId,
    onBatch: ({ events, triggers }) => {
      let newer = false;
      for (const e of events) {
        if (!state.events.has(e.version)) state.events.set(e.version, e);
        if (e.version > state.latest) { state.latest = e.version; newer = true; }
      }
      for (const t of triggers) state.lastTrigger = { ...t, fired: Date.now() / 1000 };
      if (newer) refreshView();
      drawSlider();
      drawTimeline();
      if (triggers.length) drawHeader();
    },
    onResync: () => { refreshView(); refreshHistory(); },
  });

  if (state.live) {
    showView(state.live);
  } else {
    graphWrap.replaceChildren(el("p", { class: "muted" }, "Waiting for the task…"));
    refreshView();
  }
  refreshHistory();
}
