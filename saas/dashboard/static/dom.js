// Building the page from data without HTML strings: every value goes in as text, never as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell))))),
  );
}

export const short = (id) => (id ? `${id.slice(0, 10)}…` : "-");
export const when = (ms) => (ms ? new Date(ms).toLocaleString() : "-");
export const link = (href, text, attrs = {}) => h("a", { href, ...attrs }, text);

// A message line that replaces itself: `note(el, text, "error" | "ok")`.
export function note(el, text, kind = "ok") {
  el.replaceChildren(text ? h("p", { class: `note ${kind}` }, text) : "");
}
