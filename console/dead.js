// Dead letters: the tasks that ended failed, expired or stopped, grouped by function
// and reason, each group redriven in bulk (by id, 1000 at a time, under one redrive id
// so a retry of an interrupted bulk redrive submits nothing twice).

import { api, redrive } from "./api.js";
import { el, showPage, pageNow, field, href, when, action, notice, taskHref } from "./ui.js";

const MAX_TASKS = 5000;

async function collect(params) {
  const q = new URLSearchParams({ status: params.get("status") || "failed,expired,stopped", limit: "1000" });
  for (const k of ["tenant", "function", "submitted_after"]) if (params.get(k)) q.set(k, params.get(k));
  if (!q.has("submitted_after")) q.set("submitted_after", "7d");
  const tasks = [];
  let more = false;
  for (;;) {
    const page = await api("GET", "tasks", { query: q });
    tasks.push(...page.tasks);
    if (!page.next_cursor) break;
    if (tasks.length >= MAX_TASKS) {
      more = true;
      break;
    }
    q.set("cursor", page.next_cursor);
  }
  return { tasks, more };
}

function groups(tasks) {
  const by = new Map();
  for (const t of tasks) {
    const reason = t.status === "failed" ? t.reason || "failed" : t.status;
    const k = `${t.tenant}\u0001${t.function}\u0001${reason}`;
    if (!by.has(k)) by.set(k, { tenant: t.tenant, function: t.function, reason, tasks: [] });
    by.get(k).tasks.push(t);
  }
  return [...by.values()].sort((a, b) => b.tasks.length - a.tasks.length);
}

/** Redrives `tasks` by id in chunks, showing progress; returns the totals. */
async function bulk(tasks, progress, dryRun) {
  const id = "console-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 8);
  const byTenant = new Map();
  for (const t of tasks) {
    if (!byTenant.has(t.tenant)) byTenant.set(t.tenant, []);
    byTenant.get(t.tenant).push(t.id);
  }
  let done = 0, submitted = 0, skipped = 0;
  const reasons = new Map();
  for (const [tenant, ids] of byTenant) {
    for (let i = 0; i < ids.length; i += 1000) {
      const chunk = ids.slice(i, i + 1000);
      const r = await redrive({ redrive_id: id, ids: chunk, tenant, dry_run: dryRun });
      submitted += r.submitted;
      skipped += r.skipped;
      for (const it of r.tasks) if (it.reason) reasons.set(it.reason, (reasons.get(it.reason) || 0) + 1);
      done += chunk.length;
      progress.value = done;
      progress.textContent = `${done} / ${tasks.length}`;
    }
  }
  return { id, submitted, skipped, reasons };
}

function groupRow(g) {
  const progress = el("progress", { max: g.tasks.length, value: 0, "aria-label": `Redrive progress of ${g.function}` });
  progress.hidden = true;
  const result = el("span", { class: "muted", "aria-live": "polite" });
  const run = (dry) => async () => {
    if (!dry && !confirm(`Redrive ${g.tasks.length} task(s) of ${g.function} (${g.reason})?`)) return;
    progress.hidden = false;
    const r = await bulk(g.tasks, progress, dry);
    const why = [...r.reasons].map(([k, v]) => `${v} ${k}`).join(", ");
    result.textContent = dry
      ? `would redrive ${r.submitted}, skip ${r.skipped}${why ? " (" + why + ")" : ""}`
      : `redrive ${r.id}: ${r.submitted} submitted, ${r.skipped} skipped${why ? " (" + why + ")" : ""}`;
    if (!dry) notice(`Redrive ${r.id}: ${r.submitted} task(s) sent through again.`);
  };
  const newest = g.tasks[0];
  const sample = g.tasks.find((t) => t.error);
  return el(
    "tr",
    {},
    el("td", {}, g.tenant),
    el("td", {}, g.function || "–"),
    el("td", {}, g.reason),
    el("td", { class: "num" }, String(g.tasks.length)),
    el("td", { class: "time" }, when(newest.finished_at || newest.submitted_at)),
    el("td", { class: "err", title: sample ? sample.error : "" }, sample ? el("a", { href: taskHref(sample) }, sample.error) : ""),
    el(
      "td",
      { class: "acts" },
      el("a", { class: "button", href: href("tasks", { status: newest.status, tenant: g.tenant, function: g.function }) }, "List"),
      action("Preview", run(true)),
      action("Redrive all", run(false), { class: "primary" }),
      progress,
      result,
    ),
  );
}

export async function deadPage(params, session) {
  const mine = pageNow();
  const form = el(
    "form",
    { class: "filters row", "aria-label": "Dead letters filter" },
    field("Since", el("input", { name: "submitted_after", value: params.get("submitted_after") || "7d" }), "a duration or RFC 3339"),
    field("Function", el("input", { name: "function", value: params.get("function") || "" })),
    session.who.principal === "admin" ? field("Tenant", el("input", { name: "tenant", value: params.get("tenant") || "" })) : null,
    el("button", { type: "submit", class: "primary" }, "Apply"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = {};
    for (const [k, v] of new FormData(form)) if (String(v).trim()) next[k] = String(v).trim();
    location.hash = href("dead", next);
  });
  const { tasks, more } = await collect(params);
  const gs = groups(tasks);
  showPage(
    mine,
    el("h1", {}, "Dead letters"),
    el("p", { class: "muted" }, "Tasks that ended failed, expired or stopped, grouped by function and reason. A redrive sends them through again with their id and payload."),
    form,
    el("p", { class: "summary" }, `${tasks.length}${more ? "+" : ""} task(s) in ${gs.length} group(s)`),
    el(
      "table",
      { class: "dead" },
      el("thead", {}, el("tr", {}, ...["Tenant", "Function", "Reason", "Tasks", "Latest", "Error (sample)", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, gs.length ? gs.map(groupRow) : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "Nothing failed in this window."))),
    ),
  );
}
