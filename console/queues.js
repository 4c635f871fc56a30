// Queues: the schedulers at work and their partitions, backlog per queue and partition,
// and the per-minute counts (submitted, completed, failed, running, queued) as charts
// drawn in SVG.

import { api } from "./api.js";
import { el, svg, showPage, pageNow, isCurrent, when, href, every } from "./ui.js";

const SERIES = [
  ["submitted", "Submitted"],
  ["completed", "Completed"],
  ["failed", "Failed"],
  ["running", "Running"],
  ["queued", "In queue"],
];

/** A small line chart of one count per minute. */
function chart(perMinute, key, label) {
  const W = 260, H = 90, pad = 18;
  const values = perMinute.map((m) => m[key] || 0);
  const max = Math.max(1, ...values);
  const n = Math.max(1, values.length - 1);
  const x = (i) => pad + (i / n) * (W - pad - 4);
  const y = (v) => H - pad - (v / max) * (H - pad - 10);
  const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const total = key === "running" || key === "queued" ? values[values.length - 1] || 0 : values.reduce((a, b) => a + b, 0);
  const summary = key === "running" || key === "queued" ? `${total} now` : `${total} in ${values.length} min`;
  const g = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "chart c-" + key, role: "img", "aria-label": `${label} per minute: ${summary}, at most ${max}` },
    svg("line", { x1: pad, y1: H - pad, x2: W - 4, y2: H - pad, class: "axis-line" }),
    svg("text", { x: 2, y: 12, class: "axis" }, String(max)),
    svg("text", { x: 2, y: H - pad, class: "axis" }, "0"),
    svg("polyline", { points: pts, class: "line" }),
  );
  if (perMinute.length) {
    g.append(
      svg("text", { x: pad, y: H - 3, class: "axis" }, when(perMinute[0].minute).slice(11, 16)),
      svg("text", { x: W - 4, y: H - 3, class: "axis", "text-anchor": "end" }, when(perMinute[perMinute.length - 1].minute).slice(11, 16)),
    );
  }
  return el("figure", { class: "chart" }, el("figcaption", {}, `${label} · ${summary}`), g);
}

function partitions(q) {
  return el(
    "table",
    { class: "parts" },
    el("thead", {}, el("tr", {}, ...["Partition", "Backlog", "Running", "Committed", "High watermark", "Low watermark"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      q.partitions.map((p) =>
        el(
          "tr",
          {},
          el("td", { class: "num" }, String(p.partition)),
          el("td", { class: "num" }, String(p.backlog)),
          el("td", { class: "num" }, String(p.running)),
          el("td", { class: "num" }, p.committed == null ? "–" : String(p.committed)),
          el("td", { class: "num" }, String(p.high_watermark)),
          el("td", { class: "num" }, String(p.low_watermark)),
        ),
      ),
    ),
  );
}

/** Partitions grouped by topic: [[topic, [0, 1]], ...]. */
function byTopic(partitions) {
  const m = new Map();
  for (const p of partitions) {
    if (!m.has(p.topic)) m.set(p.topic, []);
    m.get(p.topic).push(p.partition);
  }
  return [...m.entries()];
}

/** The schedulers that started tasks in the window, and the partitions they served. */
function schedulers(list, minutes) {
  if (!list.length) {
    return el("p", { class: "muted", id: "schedulers" }, `No scheduler started a task in the last ${minutes} minutes.`);
  }
  return el(
    "section",
    { class: "card", id: "schedulers" },
    el("h2", {}, `Schedulers (${list.length})`),
    el("p", { class: "muted" }, `Schedulers that started tasks in the last ${minutes} minutes, and the queue partitions those tasks came from.`),
    el(
      "table",
      { class: "parts" },
      el("thead", {}, el("tr", {}, ...["Scheduler", "Tasks started", "Last start", "Partitions"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        list.map((s) =>
          el(
            "tr",
            {},
            el("td", {}, el("code", {}, s.scheduler_id)),
            el("td", { class: "num" }, String(s.tasks_started)),
            el("td", {}, when(s.last_started_at)),
            el("td", { class: "wrap" }, ...byTopic(s.partitions).map(([topic, ps]) => el("div", {}, el("code", {}, topic), ` partition${ps.length === 1 ? "" : "s"} ${ps.join(", ")}`))),
          ),
        ),
      ),
    ),
  );
}

function queueCard(q) {
  const tasks = href("tasks", { tenant: q.tenant, function: q.function || "" });
  return el(
    "section",
    { class: "queue card" },
    el("h2", {}, el("code", {}, q.topic)),
    el(
      "p",
      { class: "muted" },
      `tenant ${q.tenant}`,
      q.function ? ` · exclusive queue of ${q.function}` : " · shared queue",
      ` · backlog ${q.backlog} · running ${q.running} · ${q.partitions.length} partition${q.partitions.length === 1 ? "" : "s"} · `,
      el("a", { href: tasks }, "tasks"),
    ),
    el("div", { class: "charts" }, SERIES.map(([k, label]) => chart(q.per_minute, k, label))),
    partitions(q),
  );
}

export async function queuesPage(params) {
  const mine = pageNow();
  const minutes = params.get("minutes") || "60";
  const body = el("div", { "aria-live": "polite" });
  const select = el(
    "select",
    { id: "minutes", "aria-label": "Time window" },
    ["15", "60", "360", "1440"].map((m) => el("option", { value: m, selected: m === minutes }, `last ${m} minutes`)),
  );
  select.addEventListener("change", () => (location.hash = href("queues", { minutes: select.value })));
  async function load() {
    const o = await api("GET", "queues", { query: { minutes } });
    const backlog = o.queues.reduce((a, q) => a + q.backlog, 0);
    const running = o.queues.reduce((a, q) => a + q.running, 0);
    const parts = o.queues.reduce((a, q) => a + q.partitions.length, 0);
    body.replaceChildren(
      el(
        "p",
        { class: "summary" },
        `${o.queues.length} queue${o.queues.length === 1 ? "" : "s"} · ${parts} partitions · backlog ${backlog} · running ${running} · scheduler group ${o.group_id} · updated ${when(o.generated_at)}`,
      ),
      schedulers(o.schedulers || [], minutes),
      ...(o.queues.length ? o.queues.map(queueCard) : [el("p", { class: "muted" }, "No queues are configured for this token.")]),
    );
  }
  // A failed load (Kafka busy or restarting) keeps the page and tries again on the next
  // refresh; the last overview stays shown with the error above it.
  const problem = el("p", { class: "error", role: "alert", hidden: true });
  async function refresh() {
    try {
      await load();
      problem.hidden = true;
    } catch (e) {
      if (e.status === 401) return;
      problem.textContent = `The overview could not be loaded: ${e.message || e}. Trying again in 10 s.`;
      problem.hidden = false;
    }
  }
  if (!showPage(mine, el("h1", {}, "Queues"), el("div", { class: "row" }, select, el("span", { class: "muted" }, "Refreshes every 10 s")), problem, body)) return;
  await refresh();
  if (isCurrent(mine)) every(10000, refresh);
}
