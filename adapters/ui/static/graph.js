// A plan drawn as a graph, laid out here (no library): layers by longest path from the steps
// that depend on nothing, nodes ordered within their layer by a few barycentre sweeps, drawn
// left to right (an edge across several layers takes a slot in each, as in Sugiyama's method).
// A plan whose layers are one step each (a sequential plan) is a line, wrapped
// as a snake to the width of its frame.

import { escapeXml, show } from "./app.js";

export const NODE_W = 168;
export const NODE_H = 46;
const GAP_X = 48;   // between layers
const GAP_Y = 14;   // between nodes of a layer
const ROW_GAP = 34; // between the rows of a wrapped line
const PAD = 16;
const DUMMY_H = 10;
const MANY_EDGES = 400; // above this, edges are drawn as two paths  // the slot an edge takes in a layer it crosses

/** The structure of a plan, as a key: the layout is reused while it does not change. */
export function shapeKey(steps) {
  return steps.map((s) => `${s.step_name}\u0001${(s.depends_on || []).join("\u0002")}`).join("\u0003");
}

/** Positions for `steps`: {nodes: [{x, y}] (in the order of steps), edges: [{from, to, path}],
 * width, height, line}. `frameWidth` decides where a line wraps. */
export function layout(steps, frameWidth) {
  const n = steps.length;
  const index = new Map(steps.map((s, i) => [s.step_name, i]));
  const preds = steps.map(() => []);
  const succs = steps.map(() => []);
  const pairs = [];
  steps.forEach((step, i) => {
    for (const name of step.depends_on || []) {
      const p = index.get(name);
      if (p === undefined || p === i) continue;
      preds[i].push(p);
      succs[p].push(i);
      pairs.push([p, i]);
    }
  });

  // Longest-path layers, in topological order (Kahn); anything left in a cycle goes last.
  const layer = new Array(n).fill(0);
  const waiting = preds.map((p) => p.length);
  const queue = [];
  for (let i = 0; i < n; i++) if (waiting[i] === 0) queue.push(i);
  let seen = 0;
  for (let head = 0; head < queue.length; head++) {
    const i = queue[head];
    seen++;
    for (const s of succs[i]) {
      if (layer[i] + 1 > layer[s]) layer[s] = layer[i] + 1;
      if (--waiting[s] === 0) queue.push(s);
    }
  }
  if (seen < n) {
    const top = Math.max(0, ...layer) + 1;
    for (let i = 0; i < n; i++) if (waiting[i] > 0) layer[i] = top;
  }
  const layerCount = n ? Math.max(...layer) + 1 : 0;
  const layers = Array.from({ length: layerCount }, () => []);
  for (let i = 0; i < n; i++) layers[layer[i]].push(i); // plan order within a layer to begin

  if (n > 1 && layers.every((l) => l.length === 1)) return lineLayout(layers, pairs, n, frameWidth);

  // An edge across several layers passes through a placeholder in each layer between, so the
  // ordering keeps it clear of the steps there; ids from n on are those placeholders.
  const vpreds = preds.map(() => []);
  const vsuccs = preds.map(() => []);
  const chains = [];
  let next = n;
  for (const [p, i] of pairs) {
    const chain = [p];
    let prev = p;
    for (let l = layer[p] + 1; l < layer[i]; l++) {
      const d = next++;
      vpreds.push([prev]);
      vsuccs.push([]);
      vsuccs[prev].push(d);
      layers[l].push(d);
      chain.push(d);
      prev = d;
    }
    vpreds[i].push(prev);
    vsuccs[prev].push(i);
    chain.push(i);
    chains.push(chain);
  }
  orderByBarycentre(layers, vpreds, vsuccs, next);

  const size = (id) => (id < n ? NODE_H : DUMMY_H);
  const spans = layers.map((members) => members.reduce((h, id) => h + size(id), 0) + GAP_Y * Math.max(0, members.length - 1));
  const tallest = Math.max(NODE_H, ...spans);
  const at = new Array(next);
  layers.forEach((members, l) => {
    let y = PAD + (tallest - spans[l]) / 2;
    for (const id of members) {
      at[id] = { x: PAD + l * (NODE_W + GAP_X), y, h: size(id) };
      y += size(id) + GAP_Y;
    }
  });
  const nodes = at.slice(0, n).map(({ x, y }) => ({ x, y }));
  const edges = chains.map((chain) => ({ from: chain[0], to: chain[chain.length - 1], path: chainPath(chain.map((id) => at[id])) }));
  return {
    nodes,
    edges,
    width: 2 * PAD + Math.max(1, layerCount) * (NODE_W + GAP_X) - GAP_X,
    height: 2 * PAD + tallest,
    line: false,
  };
}

/** A line of steps, wrapped as a snake: left to right, then right to left, row by row. */
function lineLayout(layers, pairs, n, frameWidth) {
  const perRow = Math.max(1, Math.floor((Math.max(frameWidth, NODE_W + 2 * PAD) - 2 * PAD + GAP_X) / (NODE_W + GAP_X)));
  const nodes = new Array(n);
  layers.forEach(([i], k) => {
    const row = Math.floor(k / perRow);
    const inRow = k % perRow;
    const col = row % 2 === 0 ? inRow : perRow - 1 - inRow;
    nodes[i] = { x: PAD + col * (NODE_W + GAP_X), y: PAD + row * (NODE_H + ROW_GAP) };
  });
  const rows = Math.ceil(n / perRow);
  return {
    nodes,
    edges: pairs.map(([p, i]) => ({ from: p, to: i, path: edgePath(nodes[p], nodes[i]) })),
    width: 2 * PAD + Math.min(n, perRow) * (NODE_W + GAP_X) - GAP_X,
    height: 2 * PAD + rows * (NODE_H + ROW_GAP) - ROW_GAP,
    line: true,
  };
}

/** A left-to-right edge through its placeholders: curves between layers, straight across
 * each placeholder's column. */
function chainPath(points) {
  const [first, ...rest] = points;
  let x = first.x + NODE_W;
  let y = first.y + first.h / 2;
  let d = `M${x},${y}`;
  rest.forEach((pt, k) => {
    const x2 = pt.x, y2 = pt.y + pt.h / 2;
    const dx = Math.max(16, (x2 - x) / 2);
    d += ` C${x + dx},${y} ${x2 - dx},${y2} ${x2},${y2}`;
    if (k < rest.length - 1) d += ` L${pt.x + NODE_W},${y2}`;
    x = pt.x + NODE_W;
    y = y2;
  });
  return d;
}

/** Reorders each layer by the mean relative position of its neighbours, sweeping down (by
 * predecessors) and up (by successors) a few times: fewer crossings, no exact minimum. */
function orderByBarycentre(layers, preds, succs, n) {
  const rel = new Float64Array(n);
  const place = () => layers.forEach((members) => members.forEach((i, k) => { rel[i] = (k + 0.5) / members.length; }));
  place();
  const sweep = (members, neighbours) => {
    const key = new Map();
    for (const i of members) {
      const around = neighbours[i];
      if (around.length === 0) { key.set(i, rel[i]); continue; }
      let sum = 0;
      for (const j of around) sum += rel[j];
      key.set(i, sum / around.length);
    }
    members.sort((a, b) => key.get(a) - key.get(b) || rel[a] - rel[b]);
    members.forEach((i, k) => { rel[i] = (k + 0.5) / members.length; });
  };
  for (let round = 0; round < 3; round++) {
    for (let l = 1; l < layers.length; l++) sweep(layers[l], preds);
    for (let l = layers.length - 2; l >= 0; l--) sweep(layers[l], succs);
  }
  for (let l = 1; l < layers.length; l++) sweep(layers[l], preds);
}

function edgePath(a, b) {
  if (Math.abs(a.y - b.y) > 1 && Math.abs(a.x - b.x) < 1) {
    return `M${a.x + NODE_W / 2},${a.y + NODE_H} L${b.x + NODE_W / 2},${b.y}`; // the turn of a row
  }
  if (b.x >= a.x + NODE_W) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const dx = Math.max(20, (x2 - x1) / 2);
    return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }
  if (b.x + NODE_W <= a.x) { // right to left (a wrapped line's odd rows)
    const x1 = a.x, y1 = a.y + NODE_H / 2, x2 = b.x + NODE_W, y2 = b.y + NODE_H / 2;
    const dx = Math.max(20, (x1 - x2) / 2);
    return `M${x1},${y1} C${x1 - dx},${y1} ${x2 + dx},${y2} ${x2},${y2}`;
  }
  const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y;
  return `M${x1},${y1} C${x1},${y1 + 30} ${x2},${y2 - 30} ${x2},${y2}`;
}

/** ready / blocked / current · by w1 / failed · 2 attempts ... (`short`: "×2" for attempts). */
export function stepState(step, short = false) {
  const parts = [];
  if (step.status === "pending") parts.push(step.ready ? "ready" : "blocked");
  else parts.push(step.status || "?");
  if (step.claimed_by) parts.push(`by ${step.claimed_by}`);
  if ((step.attempts || 0) > 1) parts.push(short ? `×${step.attempts}` : `${step.attempts} attempts`);
  return parts.join(" · ");
}

function isDone(step) {
  return step.status === "completed" || step.status === "skipped";
}

function clip(text, size) {
  const s = String(text ?? "");
  return s.length > size ? `${s.slice(0, size - 1)}…` : s;
}

function tooltip(step) {
  const lines = [`${step.step_name} (${step.step_id})`, stepState(step)];
  if (step.description) lines.push(clip(step.description, 300));
  if (step.result !== undefined && step.result !== null) lines.push(`result: ${clip(show(step.result), 300)}`);
  if (step.failure_message) lines.push(`failure: ${clip(step.failure_message, 300)}`);
  return lines.join("\n");
}

/** The SVG of a plan, as text (every text escaped): one <g class="node"> per step, carrying
 * data-step-id, data-step-name, data-status and data-ready. */
export function graphSvg(steps, shape, zoom, selected) {
  const parts = [];
  parts.push(`<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(shape.width * zoom)}" height="${Math.ceil(shape.height * zoom)}" viewBox="0 0 ${shape.width} ${shape.height}" role="img" aria-label="plan graph">`);
  parts.push('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#9ca3af"/></marker>');
  parts.push('<marker id="arrow-done" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#22c55e"/></marker></defs>');
  parts.push('<g class="edges">');
  if (shape.edges.length > MANY_EDGES) {
    // Many edges: two paths (done / not yet) without arrowheads, as thousands of elements with
    // markers cost more to draw than the steps; a layered graph reads left to right anyway.
    const done = [], open = [];
    for (const { from, path } of shape.edges) (isDone(steps[from]) ? done : open).push(path);
    parts.push(`<path class="edge" d="${open.join(" ")}"/><path class="edge done" d="${done.join(" ")}"/>`);
  } else {
    for (const { from, path } of shape.edges) {
      const done = isDone(steps[from]);
      parts.push(`<path class="edge${done ? " done" : ""}" d="${path}" marker-end="url(#${done ? "arrow-done" : "arrow"})"/>`);
    }
  }
  parts.push("</g><g class=\"nodes\">");
  steps.forEach((step, i) => {
    const { x, y } = shape.nodes[i];
    const status = String(step.status || "unknown").replace(/[^a-z_-]/gi, "");
    const readiness = step.status === "pending" ? (step.ready ? " ready" : " blocked") : "";
    const chosen = step.step_id === selected ? " selected" : "";
    parts.push(
      `<g class="node s-${status}${readiness}${chosen}" transform="translate(${x},${y})" data-step-id="${escapeXml(step.step_id)}" data-step-name="${escapeXml(step.step_name)}" data-status="${escapeXml(step.status)}" data-ready="${step.ready ? "true" : "false"}">` +
      `<title>${escapeXml(tooltip(step))}</title>` +
      `<rect width="${NODE_W}" height="${NODE_H}" rx="7" ry="7"/>` +
      `<text class="name" x="10" y="19">${escapeXml(clip(step.step_name, 21))}</text>` +
      `<text class="sub" x="10" y="36">${escapeXml(clip(stepState(step, true), 26))}</text></g>`
    );
  });
  parts.push("</g></svg>");
  return parts.join("");
}
