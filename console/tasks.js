// The task list: the filters of GET /v1/tasks, kept in the URL so a view can be shared,
// keyset paging (a page never repeats or skips a task), and auto-refresh.

import { api } from "./api.js";
import { el, showPage, pageNow, isCurrent, field, badge, when, href, taskHref, every, route } from "./ui.js";

const STATUSES = ["queued", "running", "retrying", "succeeded", "failed", "stopped", "expired"];
const FILTERS = [
  ["id_prefix", "Id starts with", "order-"],
  ["function", "Function", ""],
  ["submitted_after", "Submitted after", "24h or 2026-11-28T00:00:00Z"],
  ["submitted_before", "Submitted before", ""],
  ["finished_after", "Finished after", ""],
  ["finished_before", "Finished before", ""],
];

/** The query of GET /v1/tasks from the page's parameters. */
export function listQuery(params) {
  const q = new URLSearchParams();
  for (const k of ["status", "tenant", ...FILTERS.map((f) => f[0]), "cursor", "limit"]) {
    const v = params.get(k);
    if (v) q.set(k, v);
  }
  if (!q.has("limit")) q.set("limit", "50");
  return q;
}

function filterForm(params, who) {
  const chosen = new Set((params.get("status") || "").split(",").filter(Boolean));
  const boxes = STATUSES.map((s) =>
    el(
      "label",
      { class: "check" },
      el("input", { type: "checkbox", name: "status", value: s, checked: chosen.has(s) }),
      " ",
      s,
    ),
  );
  const inputs = FILTERS.map(([name, label, placeholder]) =>
    field(label, el("input", { name, value: params.get(name) || "", placeholder, autocomplete: "off" })),
  );
  if (who.principal === "admin") {
    inputs.splice(1, 0, field("Tenant", el("input", { name: "tenant", value: params.get("tenant") || "", autocomplete: "off" })));
  }
  const refresh = el("input", { type: "checkbox", name: "refresh", checked: params.get("refresh") === "1" });
  const form = el(
    "form",
    { class: "filters", "aria-label": "Filters" },
    el("fieldset", { class: "statuses" }, el("legend", {}, "Status"), boxes),
    el("div", { class: "grid" }, inputs),
    el(
      "div",
      { class: "row" },
      el("button", { type: "submit", class: "primary" }, "Apply"),
      el("a", { href: "#/tasks", class: "button" }, "Clear"),
      el("label", { class: "check" }, refresh, " Refresh every 5 s"),
    ),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const next = {};
    const statuses = data.getAll("status");
    if (statuses.length) next.status = statuses.join(",");
    for (const [k, v] of data) if (k !== "status" && k !== "refresh" && String(v).trim()) next[k] = String(v).trim();
    if (refresh.checked) next.refresh = "1";
    location.hash = href("tasks", next);
  });
  refresh.addEventListener("change", () => {
    const p = route().params;
    if (refresh.checked) p.set("refresh", "1");
    else p.delete("refresh");
    location.hash = href("tasks", Object.fromEntries(p));
  });
  return form;
}

function errorText(t) {
  if (t.status === "succeeded") return "";
  return [t.reason, t.error].filter(Boolean).join(": ");
}

export function taskTable(tasks, { selectable = false } = {}) {
  const rows = tasks.map((t) =>
    el(
      "tr",
      {},
      selectable ? el("td", {}, el("input", { type: "checkbox", class: "pick", value: t.id, "data-tenant": t.tenant, "aria-label": "Select " + t.id })) : null,
      el("td", { class: "id" }, el("a", { href: taskHref(t) }, t.id)),
      el("td", {}, t.tenant),
      el("td", {}, t.function || "–"),
      el("td", {}, badge(t.status), t.redrive_id ? el("span", { class: "tag", title: "redrive " + t.redrive_id }, "redriven") : null),
      el("td", { class: "time" }, when(t.submitted_at)),
      el("td", { class: "num" }, String(t.attempts)),
      el("td", { class: "time" }, when(t.finished_at)),
      el("td", { class: "err", title: errorText(t) }, errorText(t)),
    ),
  );
  return el(
    "table",
    { class: "tasks" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        selectable ? el("th", { scope: "col", class: "pickcol" }, el("span", { class: "sr" }, "Select")) : null,
        ...["Id", "Tenant", "Function", "Status", "Submitted", "Attempts", "Finished", "Error"].map((h) => el("th", { scope: "col" }, h)),
      ),
    ),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: selectable ? 9 : 8, class: "muted" }, "No tasks match."))),
  );
}

export async function tasksPage(params, session) {
  const mine = pageNow();
  const query = listQuery(params);
  const results = el("div", { id: "results", "aria-live": "polite" });
  const back = (params.get("back") || "").split(" ").filter(Boolean);
  async function load() {
    const page = await api("GET", "tasks", { query });
    const pager = el("nav", { class: "pager", "aria-label": "Pages of tasks" });
    const here = Object.fromEntries(params);
    if (params.get("cursor")) {
      const prev = back.slice(0, -1);
      const p = { ...here, cursor: back[back.length - 1] || "", back: prev.join(" ") };
      pager.append(el("a", { class: "button", href: href("tasks", p) }, "← Newer"));
      pager.append(el("a", { class: "button", href: href("tasks", { ...here, cursor: "", back: "" }) }, "Newest"));
    }
    if (page.next_cursor) {
      const p = { ...here, cursor: page.next_cursor, back: [...back, params.get("cursor") || "-"].join(" ") };
      pager.append(el("a", { class: "button", href: href("tasks", p) }, "Older →"));
    }
    results.replaceChildren(
      el("p", { class: "muted" }, `${page.tasks.length} task${page.tasks.length === 1 ? "" : "s"} on this page · updated ${when(new Date().toISOString())}`),
      taskTable(page.tasks),
      pager,
    );
  }
  if (!showPage(mine, el("h1", {}, "Tasks"), filterForm(params, session.who), results)) return;
  // "-" in the back stack stands for the first page (no cursor).
  if (params.get("cursor") === "-") {
    params.delete("cursor");
    query.delete("cursor");
  }
  await load();
  if (params.get("refresh") === "1" && isCurrent(mine)) every(5000, () => load().catch(() => {}));
}
