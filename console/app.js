// The console's entry: sign-in, navigation and the router. Pages are views of the hash
// (`#/tasks?status=failed`), so every view with its filters is a link to share; the
// token is never part of it.

import { setToken, signOut, token, whoami } from "./api.js";
import { el, show, notice, clearNotice, route, nextPage, isCurrent } from "./ui.js";
import { tasksPage } from "./tasks.js";
import { taskPage } from "./task.js";
import { queuesPage } from "./queues.js";
import { deadPage } from "./dead.js";

/** Who the token speaks for: `{principal: "admin"|"tenant", tenant}`. */
export const session = { who: null };

function signInPage(message) {
  // Nothing a page was loading may replace the form.
  nextPage();
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  const input = el("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const error = el("p", { class: "error", role: "alert" }, message || "");
  const form = el(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el("p", { class: "muted" }, "Paste an API token from the [api] tokens of this Tidewater. It is kept for this browser tab only."),
    el("div", { class: "field" }, el("label", { for: "token" }, "API token"), input),
    error,
    el("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      session.who = await whoami();
    } catch (err) {
      signOut();
      error.textContent = err.status === 401 ? "That token is not known here." : err.message;
      input.focus();
      return;
    }
    input.value = "";
    start();
  });
  show(form);
  input.focus();
}

function markNav(page) {
  for (const a of document.querySelectorAll("#nav a")) {
    const here = a.dataset.page === page || (page === "task" && a.dataset.page === "tasks");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function render({ keepNotice = false } = {}) {
  const mine = nextPage();
  if (!keepNotice) clearNotice();
  if (!token()) return signInPage();
  const r = route();
  markNav(r.page);
  try {
    switch (r.page) {
      case "task":
        return await taskPage(r.rest[0] || "", r.params, session);
      case "queues":
        return await queuesPage(r.params, session);
      case "dead":
        return await deadPage(r.params, session);
      default:
        return await tasksPage(r.params, session);
    }
  } catch (e) {
    if (e.status === 401 || !isCurrent(mine)) return;
    show(el("h1", {}, "Something went wrong"), el("p", { class: "error" }, e.message || String(e)));
  }
}

async function start() {
  if (!token()) return signInPage();
  if (!session.who) {
    try {
      session.who = await whoami();
    } catch (e) {
      return signInPage(e.status === 401 ? "" : e.message);
    }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent =
    session.who.principal === "admin" ? "admin" : "tenant " + session.who.tenant;
  await render();
  document.getElementById("main").focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => {
  render().then(() => document.getElementById("main").focus({ preventScroll: true }));
});
window.addEventListener("tidewater:refresh", () => render({ keepNotice: true }));
window.addEventListener("tidewater:signed-out", () => {
  session.who = null;
  signInPage("Signed out: the token was refused.");
});
document.getElementById("signout").addEventListener("click", () => {
  signOut();
  session.who = null;
  notice("Signed out.");
  signInPage();
});

// Keyboard: g then t / q / d goes to a page; "/" focuses the first filter.
let pendingG = false;
document.addEventListener("keydown", (e) => {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement?.tagName || "");
  if (typing || e.ctrlKey || e.metaKey || e.altKey || !token()) return;
  if (e.key === "/") {
    const first = document.querySelector("#main form input, #main form select");
    if (first) {
      e.preventDefault();
      first.focus();
    }
    return;
  }
  if (pendingG) {
    pendingG = false;
    const to = { t: "#/tasks", q: "#/queues", d: "#/dead" }[e.key];
    if (to) location.hash = to;
    return;
  }
  pendingG = e.key === "g";
});

start();
