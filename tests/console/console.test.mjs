// Drives the Tidewater console in headless Chromium against a live `tidewater serve`, a
// scheduler and a broker that scripts/console-test.sh started. Every step is what a
// person does; screenshots of each page go to docs/console/.
//
//   node tests/console/console.test.mjs   (environment: see scripts/console-test.sh)

import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_ = env("TW_CONSOLE_URL");
const ADMIN = env("TW_CONSOLE_ADMIN_TOKEN");
const OTHER = env("TW_CONSOLE_OTHER_TOKEN");
const MARKER = env("TW_CONSOLE_MARKER");
const SCHEDULER_ID = env("TW_CONSOLE_SCHEDULER_ID");
const SHOTS = process.env.TW_CONSOLE_SCREENSHOTS || "";
const WIDTH = 1280;

let passed = 0;
let failed = 0;
async function step(name, f) {
  const t0 = Date.now();
  try {
    await f();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}
function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const profile = mkdtempSync(join(tmpdir(), "tw-console-"));
// A fresh profile each run (launchPersistentContext is how Playwright takes one).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.TW_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: WIDTH, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => {
  if (m.type() === "error") consoleErrors.push(m.text());
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));
page.on("dialog", (d) => d.accept());
const seenUrls = [];
page.on("request", (r) => seenUrls.push(r.url()));

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.mouse.move(0, 899);
  await page.screenshot({ path: join(SHOTS, name + ".png"), fullPage: false });
}
async function noHorizontalScroll(where) {
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  check(w <= WIDTH, `${where}: the page is ${w} px wide at ${WIDTH} px`);
}
async function signIn(token) {
  await page.goto(URL_ + "/");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Tasks" }).waitFor();
}
const rows = () => page.locator("table.tasks tbody tr");

try {
  await step("the page is served with a strict Content-Security-Policy", async () => {
    const res = await page.goto(URL_ + "/");
    const csp = res.headers()["content-security-policy"] || "";
    check(csp.includes("default-src 'none'") && csp.includes("script-src 'self'"), `CSP: ${csp}`);
    check((res.headers()["content-type"] || "").startsWith("text/html"), "content type of /");
    await page.getByLabel("API token").waitFor();
    await shot("signin");
  });

  await step("a wrong token is refused", async () => {
    await page.getByLabel("API token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("That token is not known here.").waitFor();
  });

  await step("sign in as admin; the token stays in sessionStorage only", async () => {
    await signIn(ADMIN);
    const stored = await page.evaluate(() => [sessionStorage.length, localStorage.length]);
    check(stored[0] === 1 && stored[1] === 0, `storage: ${stored}`);
  });

  await step("stop a queued delayed task", async () => {
    await page.goto(URL_ + "/#/task/later-1?tenant=acme");
    await page.getByRole("heading", { name: /Task later-1/ }).waitFor();
    await page.locator("h1 .badge", { hasText: "queued" }).waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    await page.getByText(/Stop requested/).waitFor();
    await page.goto(URL_ + "/#/tasks");
  });

  await step("filter the failed tasks of one function, by keyboard", async () => {
    await page.keyboard.press("/");
    await page.getByRole("checkbox", { name: "failed" }).check();
    await page.getByLabel("Function").fill("flaky");
    await page.getByLabel("Function").press("Enter");
    await page.waitForFunction(() => location.hash.includes("function=flaky") && location.hash.includes("status=failed"));
    await page.locator("table.tasks tbody tr td.id a").first().waitFor();
    const n = await rows().count();
    check(n === 4, `4 failed flaky tasks, not ${n}`);
    const statuses = await page.locator("table.tasks tbody .badge").allTextContents();
    check(statuses.every((s) => s === "failed"), `statuses ${statuses}`);
    await noHorizontalScroll("tasks");
    await shot("tasks");
  });

  await step("the filtered view is a shareable URL", async () => {
    const shared = page.url();
    // A new tab has its own session storage: it asks for the token, then shows the view.
    const other = await context.newPage();
    await other.goto(shared);
    await other.getByLabel("API token").fill(ADMIN);
    await other.getByRole("button", { name: "Sign in" }).click();
    await other.locator("table.tasks tbody tr td.id a").first().waitFor();
    check((await other.locator("table.tasks tbody tr").count()) === 4, "same 4 tasks in a new tab");
    await other.close();
  });

  await step("open a failed task and read its logs", async () => {
    await page.locator("table.tasks tbody tr td.id a", { hasText: "flaky-1" }).click();
    await page.getByRole("heading", { name: /Task flaky-1/ }).waitFor();
    await page.locator("#logs pre", { hasText: "broken on attempt 1" }).first().waitFor();
    await page.locator("#logs pre", { hasText: "broken on attempt 2" }).first().waitFor();
    await page.locator("#record pre.payload", { hasText: "order 1" }).waitFor();
    await page.getByRole("button", { name: "Hex" }).click();
    await page.locator("#record pre.payload", { hasText: "6f 72 64 65 72" }).waitFor();
    check(await page.locator("svg.timeline rect").count() === 2, "two attempts on the timeline");
    await noHorizontalScroll("task");
    await shot("task");
  });

  await step("queues show the scheduler at work, backlog per partition and per-minute charts", async () => {
    await page.getByRole("link", { name: "Queues" }).click();
    await page.getByRole("heading", { name: "Queues" }).waitFor();
    await page.locator("section.queue").first().waitFor();
    // The scheduler that ran this run's tasks, with the queue partitions it took them from.
    const row = page.locator("#schedulers tbody tr", { hasText: SCHEDULER_ID });
    await row.waitFor();
    check(/\.q\.[a-z]+\S* partitions? \d/.test(await row.innerText()), "the scheduler's partitions are listed");
    check((await page.locator("svg.chart").count()) >= 5, "charts");
    check((await page.locator("table.parts tbody tr").count()) >= 1, "partitions");
    await noHorizontalScroll("queues");
    await shot("queues");
  });

  await step("a page left while it loads does not replace the page the user went to", async () => {
    // The task page's record request is held until the Queues page is up.
    const isRecord = (u) => new URL(u).pathname.endsWith("/v1/tasks/flaky-1/record");
    let release;
    const held = new Promise((r) => (release = r));
    const match = (u) => isRecord(u.href);
    await page.route(match, async (route) => {
      await held;
      await route.continue();
    });
    const asked = page.waitForRequest((r) => isRecord(r.url()));
    await page.evaluate(() => (location.hash = "#/task/flaky-1?tenant=acme"));
    await asked;
    await page.keyboard.press("g");
    await page.keyboard.press("q");
    await page.locator("section.queue").first().waitFor();
    const answered = page.waitForResponse((r) => isRecord(r.url()));
    release();
    await answered;
    await page.waitForTimeout(500);
    check(await page.getByRole("heading", { name: "Queues" }).isVisible(), "the Queues page is still shown");
    check((await page.getByRole("heading", { name: /Task flaky-1/ }).count()) === 0, "the task page did not come back");
    await page.unroute(match);
  });

  await step("dead letters are grouped by function and reason", async () => {
    await page.keyboard.press("g");
    await page.keyboard.press("d");
    await page.getByRole("heading", { name: "Dead letters" }).waitFor();
    const group = page.locator("table.dead tbody tr").filter({ hasText: "flaky" }).filter({ hasText: "executor" });
    await group.waitFor();
    check((await group.locator("td").nth(3).textContent()) === "4", "4 flaky tasks in the group");
    await page.locator("table.dead tbody tr", { hasText: "other" }).waitFor();
    await noHorizontalScroll("dead letters");
    await shot("dead");
  });

  await step("the stopped task ends stopped when its time comes", async () => {
    await page.goto(URL_ + "/#/task/later-1?tenant=acme");
    await page.locator("h1 .badge", { hasText: "stopped" }).waitFor({ timeout: 150000 });
    await page.locator("#logs", { hasText: "No output captured." }).waitFor();
  });

  await step("redrive a dead-lettered task after the function is fixed; it succeeds", async () => {
    writeFileSync(MARKER, "");
    await page.goto(URL_ + "/#/task/flaky-1?tenant=acme");
    await page.locator("h1 .badge", { hasText: "failed" }).waitFor();
    await page.getByRole("button", { name: "Redrive" }).click();
    await page.getByText(/Redriven as/).waitFor();
    await page.locator("h1 .badge", { hasText: "succeeded" }).waitFor({ timeout: 60000 });
    await page.locator("td", { hasText: "redrive 1" }).first().waitFor();
    await page.locator("#logs pre", { hasText: "fixed: order 1" }).waitFor();
    await shot("task-redriven");
  });

  await step("bulk redrive of a dead-letter group", async () => {
    await page.goto(URL_ + "/#/dead");
    const group = page.locator("table.dead tbody tr").filter({ hasText: "flaky" }).filter({ hasText: "executor" });
    await group.getByRole("button", { name: "Redrive all" }).click();
    await group.getByText(/3 submitted/).waitFor();
    await page.goto(URL_ + "/#/tasks?function=flaky&status=succeeded&refresh=1");
    await page.waitForFunction(() => document.querySelectorAll("table.tasks tbody tr td.id a").length === 4, null, { timeout: 60000 });
  });

  await step("a tenant token cannot see another tenant's task", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await signIn(OTHER);
    await page.locator("table.tasks tbody tr").first().waitFor();
    const tenants = await page.locator("table.tasks tbody tr td:nth-child(2)").allTextContents();
    check(tenants.length > 0 && tenants.every((t) => t === "globex"), `tenants seen: ${tenants}`);
    await page.goto(URL_ + "/#/task/flaky-1?tenant=acme");
    await page.getByText("no task `flaky-1`").waitFor();
  });

  await step("the token never appeared in a URL", async () => {
    const leaked = seenUrls.filter((u) => u.includes(ADMIN) || u.includes(OTHER));
    check(leaked.length === 0, `token in ${leaked}`);
    const errors = consoleErrors.filter((e) => !e.includes("404") && !e.includes("401"));
    check(errors.length === 0, `console errors: ${errors.join(" | ")}`);
  });
} catch (e) {
  const where = join(process.env.TW_CONSOLE_ARTIFACTS || tmpdir(), "console-failure.png");
  await page.screenshot({ path: where, fullPage: true }).catch(() => {});
  console.log(`screenshot of the failure: ${where}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
