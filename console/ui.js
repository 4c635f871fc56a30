// Small DOM helpers: elements are built with text nodes only (no HTML from strings), so
// nothing the API returns is ever read as markup.

const SVG = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    // Booleans of HTML elements are properties (checked, disabled, open…); everything
    // else, and every SVG attribute, is an attribute.
    else if (typeof v === "boolean" && !(node instanceof SVGElement) && k in node) node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** An HTML element: `el("a", {href: "#/x"}, "text", child…)`. */
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

// Which page is current: a page loads its data asynchronously, and one the user has left
// meanwhile must not replace the page they went to when its answers arrive.
let page = 0;

/** A new page starts: the timers of the one before stop, and it can show nothing more. */
export function nextPage() {
  stopTimers();
  page += 1;
  return page;
}

/** The current page, to be taken by a page before its first `await`. */
export function pageNow() {
  return page;
}

/** Whether `mine` (from `pageNow`) is still the page shown. */
export function isCurrent(mine) {
  return mine === page;
}

/** Replaces the content of the page when `mine` is still current; false when the user
 * has gone elsewhere since (the caller then stops: no timers for a page left). */
export function showPage(mine, ...nodes) {
  if (!isCurrent(mine)) return false;
  show(...nodes);
  return true;
}

/** Replaces the content of the page. */
export function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat());
  return main;
}

let noticeTimer;
/** A message for a few seconds (errors stay until the next one). */
export function notice(text, kind = "info") {
  const n = document.getElementById("notice");
  n.replaceChildren(el("p", { class: "notice " + kind }, text));
  clearTimeout(noticeTimer);
  if (kind !== "error") noticeTimer = setTimeout(() => n.replaceChildren(), 5000);
}

export function clearNotice() {
  document.getElementById("notice").replaceChildren();
}

/** An RFC 3339 time as local date and time, to the second; "–" for none. */
export function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** How long between two RFC 3339 times, for people. */
export function span(from, to) {
  if (!from || !to) return "";
  const ms = new Date(to) - new Date(from);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.round(ms / 60000)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

export function badge(status) {
  return el("span", { class: "badge s-" + (status || "none") }, status || "–");
}

/** The current route: `#/tasks?status=failed` → {page: "tasks", rest: [], params}. */
export function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "tasks", rest: parts.slice(1), params: new URLSearchParams(query || "") };
}

/** A hash link to a page with parameters. */
export function href(page, params) {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)) : null;
  const s = q && [...q].length ? "?" + q.toString() : "";
  return "#/" + page + s;
}

export function taskHref(t) {
  return "#/task/" + encodeURIComponent(t.id) + "?tenant=" + encodeURIComponent(t.tenant);
}

/** A button that is busy (disabled) while `f` runs. */
export function action(label, f, attrs = {}) {
  const b = el("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await f(b);
    } catch (e) {
      notice(e.message || String(e), "error");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input, hint ? el("small", { class: "muted" }, hint) : null);
}

const timers = new Set();

/** A repeating timer, stopped when the next page is shown; skipped while hidden. */
export function every(ms, f) {
  const id = setInterval(() => {
    if (!document.hidden) f();
  }, ms);
  timers.add(id);
  return () => {
    clearInterval(id);
    timers.delete(id);
  };
}

/** Stops every timer of the page shown before. */
export function stopTimers() {
  for (const id of timers) clearInterval(id);
  timers.clear();
}
