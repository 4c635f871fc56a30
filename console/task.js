// One task: its state, its attempts on a timeline (every run: the first and each
// redrive), errors, the output of each attempt, its payload (text or hex), headers and
// where it came from, with Stop and Redrive.

import { getTask, getLogs, getRecord, stopTask, redrive } from "./api.js";
import { el, svg, showPage, pageNow, badge, when, span, action, notice, every } from "./ui.js";

const ENDED = ["succeeded", "failed", "stopped", "expired"];
const REDRIVABLE = ["failed", "stopped", "expired"];

function runName(run, redriveId) {
  return run === 0 ? "first run" : `redrive ${run}` + (redriveId ? ` (${redriveId})` : "");
}

/** Attempts as bars on one time axis, a row per attempt, grouped by run. */
function timeline(d) {
  const attempts = d.attempt_history;
  if (!attempts.length) return el("p", { class: "muted" }, "No attempt has started yet.");
  const now = Date.now();
  const t = (s) => (s ? new Date(s).getTime() : null);
  const starts = attempts.map((a) => t(a.started_at) ?? t(a.finished_at) ?? now);
  const ends = attempts.map((a, i) => t(a.finished_at) ?? Math.max(now, starts[i]));
  const min = Math.min(t(d.submitted_at) ?? Infinity, ...starts);
  const max = Math.max(...ends, min + 1);
  const W = 900, left = 170, row = 26, H = attempts.length * row + 30;
  const x = (v) => left + ((v - min) / (max - min)) * (W - left - 10);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "timeline", role: "img", "aria-label": "Attempts on a timeline" });
  attempts.forEach((a, i) => {
    const y = i * row + 4;
    const x0 = x(starts[i]);
    const x1 = Math.max(x(ends[i]), x0 + 3);
    const cls = "bar r-" + (a.result || "running");
    g.append(
      svg("text", { x: 4, y: y + 15, class: "label" }, `${a.run ? "redrive " + a.run + " · " : ""}attempt ${a.attempt}`),
      svg("rect", { x: x0, y, width: x1 - x0, height: row - 8, rx: 3, class: cls },
        svg("title", {}, `${runName(a.run, a.redrive_id)}, attempt ${a.attempt}: ${a.result || "running"} ${span(a.started_at, a.finished_at)}${a.error ? " — " + a.error : ""}`)),
    );
  });
  g.append(
    svg("text", { x: left, y: H - 6, class: "axis" }, when(new Date(min).toISOString())),
    svg("text", { x: W - 10, y: H - 6, class: "axis", "text-anchor": "end" }, when(new Date(max).toISOString())),
  );
  return g;
}

function attemptsTable(d) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...["Run", "Attempt", "Started", "Finished", "Took", "Result", "Scheduler", "Error"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      d.attempt_history.map((a) =>
        el(
          "tr",
          {},
          el("td", {}, runName(a.run, a.redrive_id)),
          el("td", { class: "num" }, String(a.attempt)),
          el("td", { class: "time" }, when(a.started_at)),
          el("td", { class: "time" }, when(a.finished_at)),
          el("td", {}, span(a.started_at, a.finished_at)),
          el("td", {}, badge(a.result || "running")),
          el("td", {}, a.scheduler_id || "–"),
          el("td", { class: "err wrap" }, a.error || ""),
        ),
      ),
    ),
  );
}

function facts(d) {
  const q = d.queue ? `${d.queue.topic} [${d.queue.partition}] @ ${d.queue.offset}` : "–";
  const rows = [
    ["Tenant", d.tenant],
    ["Function", d.function || "–"],
    ["Status", badge(d.status)],
    ["Submitted", when(d.submitted_at)],
    ["Started", when(d.started_at)],
    ["Finished", when(d.finished_at)],
    ["Attempts", String(d.attempts)],
    ["Reason", d.reason || "–"],
    ["Scheduler", d.scheduler_id || "–"],
    ["Queue record", q],
    ["Redrive", d.redrive_id || "–"],
  ];
  return el("dl", { class: "facts" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** Logs grouped by run and attempt. */
function logsView(logs, d) {
  if (!logs.length) return el("p", { class: "muted" }, "No output captured.");
  const runOf = new Map(d.attempt_history.map((a) => [a.redrive_id || "", a.run]));
  const groups = new Map();
  for (const l of logs) {
    const k = `${l.redrive_id || ""}\u0001${l.attempt}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(l);
  }
  return el(
    "div",
    { class: "logs" },
    [...groups.values()].map((chunks) => {
      const first = chunks[0];
      const run = runOf.get(first.redrive_id || "") ?? (first.redrive_id ? 1 : 0);
      return el(
        "details",
        { open: true, class: "attempt-log" },
        el("summary", {}, `${runName(run, first.redrive_id)} · attempt ${first.attempt}`),
        chunks.map((c) =>
          el("section", {}, el("h4", {}, `${c.stream} · ${when(c.at)}${c.truncated ? " · truncated" : ""}`), el("pre", { class: "out " + c.stream }, c.data)),
        ),
      );
    }),
  );
}

/** The final attempt's output of a succeeded task: what the function returned. */
function resultView(d, logs) {
  if (d.status !== "succeeded") return el("p", { class: "muted" }, "No result: the task has not succeeded.");
  const last = d.attempt_history[d.attempt_history.length - 1];
  const out = logs.filter(
    (l) => last && l.attempt === last.attempt && (l.redrive_id || null) === (last.redrive_id || null) && l.stream !== "stderr",
  );
  if (!out.length) return el("p", { class: "muted" }, "Succeeded; no output was captured.");
  return el("pre", { class: "out" }, out.map((l) => l.data).join(""));
}

function hexDump(hex) {
  const lines = [];
  for (let i = 0; i < hex.length; i += 32) {
    const bytes = hex.slice(i, i + 32).match(/../g) || [];
    const ascii = bytes.map((b) => {
      const c = parseInt(b, 16);
      return c >= 32 && c < 127 ? String.fromCharCode(c) : ".";
    });
    lines.push(`${(i / 2).toString(16).padStart(8, "0")}  ${bytes.join(" ").padEnd(47)}  ${ascii.join("")}`);
  }
  return lines.join("\n");
}

function payloadView(rec) {
  const p = rec.payload;
  const out = el("pre", { class: "out payload" });
  const mode = el("div", { class: "row", role: "group", "aria-label": "Payload as" });
  const set = (m) => {
    out.textContent = m === "text" ? p.text ?? "" : hexDump(p.hex);
    for (const b of mode.children) b.setAttribute("aria-pressed", String(b.dataset.mode === m));
  };
  for (const m of ["text", "hex"]) {
    const b = el("button", { type: "button", "data-mode": m, disabled: m === "text" && p.text == null }, m === "text" ? "Text" : "Hex");
    b.addEventListener("click", () => set(m));
    mode.append(b);
  }
  set(p.text != null ? "text" : "hex");
  return el("div", {}, el("p", { class: "muted" }, `${p.size} bytes${p.truncated ? " (preview cut short)" : ""}${rec.decode_error ? " · not a task: " + rec.decode_error : ""}`), mode, out);
}

function kv(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return el("p", { class: "muted" }, "None.");
  return el("table", { class: "kv" }, el("tbody", {}, entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", { class: "wrap" }, v)))));
}

function recordView(rec) {
  return el(
    "div",
    {},
    el("h3", {}, "Payload"),
    payloadView(rec),
    el("h3", {}, "Task headers"),
    kv(rec.task ? rec.task.headers : {}),
    el("h3", {}, "Where it came from"),
    kv({
      topic: rec.topic,
      partition: String(rec.partition),
      offset: String(rec.offset),
      key: rec.key ?? "–",
      "record time": when(rec.timestamp),
      "not before": rec.task ? when(rec.task.not_before) : "–",
    }),
    el("h3", {}, "Record headers"),
    kv(rec.headers),
  );
}

async function allLogs(id, tenant) {
  const out = [];
  let after;
  for (let i = 0; i < 20; i++) {
    const page = await getLogs(id, tenant, after);
    out.push(...page.logs);
    if (page.next_after == null) break;
    after = page.next_after;
  }
  return out;
}

export async function taskPage(id, params) {
  const mine = pageNow();
  const tenant = params.get("tenant") || "";
  const d = await getTask(id, tenant);
  const [logs, rec] = await Promise.all([
    allLogs(id, d.tenant),
    getRecord(id, d.tenant).catch((e) => ({ missing: e.message })),
  ]);
  const buttons = el("div", { class: "row actions" });
  if (!ENDED.includes(d.status)) {
    buttons.append(
      action("Stop", async () => {
        if (!confirm(`Stop task ${d.id}?`)) return;
        const r = await stopTask(d.id, d.tenant);
        notice(`Stop requested: ${r.note}`);
        setTimeout(() => refresh(), 1500);
      }, { class: "danger", id: "stop" }),
    );
  }
  if (REDRIVABLE.includes(d.status)) {
    buttons.append(
      action("Redrive", async () => {
        if (!confirm(`Send task ${d.id} through again? It keeps its id and payload.`)) return;
        const r = await redrive({ ids: [d.id], tenant: d.tenant });
        const item = r.tasks[0];
        if (item && item.action === "submitted") notice(`Redriven as ${r.redrive_id} to ${item.topic}.`);
        else notice(`Not redriven: ${item ? item.reason + (item.detail ? " — " + item.detail : "") : "nothing selected"}`, "error");
        setTimeout(() => refresh(), 1500);
      }, { class: "primary", id: "redrive" }),
    );
  }
  const errors = d.attempt_history.filter((a) => a.error);
  const shown = showPage(
    mine,
    el("p", {}, el("a", { href: "#/tasks" }, "← Tasks")),
    el("h1", { class: "taskid" }, "Task ", el("code", {}, d.id), " ", badge(d.status)),
    buttons,
    el("div", { class: "cols" }, el("section", {}, el("h2", {}, "State"), facts(d)), el("section", {}, el("h2", {}, "Attempts"), timeline(d))),
    el("section", {}, attemptsTable(d)),
    el("section", {}, el("h2", {}, "Errors"), errors.length ? el("ul", { class: "errors" }, errors.map((a) => el("li", {}, el("strong", {}, `${runName(a.run, a.redrive_id)}, attempt ${a.attempt}: `), a.error))) : el("p", { class: "muted" }, d.error || "None.")),
    el("section", {}, el("h2", {}, "Result"), resultView(d, logs)),
    el("section", { id: "logs" }, el("h2", {}, "Logs"), logsView(logs, d)),
    el("section", { id: "record" }, el("h2", {}, "Task record"), rec.missing ? el("p", { class: "muted" }, rec.missing) : recordView(rec)),
  );
  async function refresh() {
    if (location.hash.startsWith("#/task/")) window.dispatchEvent(new Event("tidewater:refresh"));
  }
  if (shown && !ENDED.includes(d.status)) every(3000, refresh);
}
