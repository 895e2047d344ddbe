// The provenance graph of a data object drawn as SVG: data objects (by c_hash) and processor steps as boxes in
// columns by depth (inputs left, the object right), arrows for what each step consumed and produced. Ancestors
// that no node could show are drawn dashed ("missing").

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 190;
const BOX_H = 46;
const GAP_X = 70;
const GAP_Y = 22;

function svg(tag, attrs = {}, text = undefined) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Graph nodes and edges from the node's DataObjectProvenance.
export function layout(provenance) {
  const nodes = new Map();
  const edges = [];
  const missing = new Set(provenance.missing || []);
  const dataNode = (c_hash) => {
    if (!nodes.has(c_hash)) {
      const d = provenance.data_nodes[c_hash] || {};
      const kind = missing.has(c_hash) || !provenance.data_nodes[c_hash] ? "missing" : "data";
      const title = d.content !== undefined ? `value ${JSON.stringify(d.content)}` : d.obj_id || c_hash;
      nodes.set(c_hash, { id: c_hash, kind, title, sub: `${d.data_type || "?"}/${d.data_format || "?"}`, data: d });
    }
    return c_hash;
  };
  Object.keys(provenance.data_nodes).forEach(dataNode);
  (provenance.steps || []).forEach((step, i) => {
    const id = `step-${i}`;
    const proc = provenance.proc_nodes[step.processor] || {};
    const sub = step.verified ? "recipe verified" : "recipe NOT verified";
    nodes.set(id, { id, kind: "step", title: proc.name || "processor", sub, data: step });
    for (const c_hash of Object.values(step.consumes || {})) if (c_hash) edges.push([dataNode(c_hash), id]);
    for (const c_hash of Object.values(step.produces || {})) edges.push([id, dataNode(c_hash)]);
  });
  // depth: the longest path from a source (the graph is acyclic: recipes point at earlier content)
  const incoming = new Map([...nodes.keys()].map((k) => [k, []]));
  edges.forEach(([from, to]) => incoming.get(to).push(from));
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...incoming.get(id).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  nodes.forEach((_, id) => depthOf(id));
  const columns = [];
  nodes.forEach((node, id) => {
    const d = depth.get(id);
    (columns[d] = columns[d] || []).push(node);
  });
  columns.forEach((column, x) =>
    column.forEach((node, y) => Object.assign(node, { x: 10 + x * (BOX_W + GAP_X), y: 10 + y * (BOX_H + GAP_Y) })),
  );
  return { nodes: [...nodes.values()], edges, columns };
}

export function drawProvenance(provenance, onSelect) {
  const { nodes, edges, columns } = layout(provenance);
  const rows = Math.max(1, ...columns.map((c) => c.length));
  const width = 20 + columns.length * (BOX_W + GAP_X) - GAP_X;
  const height = 20 + rows * (BOX_H + GAP_Y) - GAP_Y;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "provenance", role: "img" });
  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow",
    viewBox: "0 0 10 10",
    refX: 10,
    refY: 5,
    markerWidth: 8,
    markerHeight: 8,
    orient: "auto",
  });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.append(marker);
  root.append(defs);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const [from, to] of edges) {
    const a = byId.get(from);
    const b = byId.get(to);
    root.append(
      svg("line", {
        x1: a.x + BOX_W,
        y1: a.y + BOX_H / 2,
        x2: b.x,
        y2: b.y + BOX_H / 2,
        class: "edge",
        "marker-end": "url(#arrow)",
      }),
    );
  }
  for (const node of nodes) {
    const group = svg("g", { class: `gnode ${node.kind}`, "data-id": node.id, tabindex: 0 });
    group.append(svg("rect", { x: node.x, y: node.y, width: BOX_W, height: BOX_H, rx: node.kind === "step" ? 16 : 4 }));
    const title = node.title.length > 22 ? `${node.title.slice(0, 21)}…` : node.title;
    group.append(svg("text", { x: node.x + 8, y: node.y + 19, class: "title" }, title));
    group.append(svg("text", { x: node.x + 8, y: node.y + 37, class: "sub" }, node.sub));
    group.append(svg("title", {}, `${node.title}\n${node.sub}`));
    if (onSelect) group.addEventListener("click", () => onSelect(node));
    root.append(group);
  }
  return root;
}
