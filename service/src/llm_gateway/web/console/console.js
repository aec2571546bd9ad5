// The console's shell: sign-in, the navigation and a router over the pages (each registered by
// its module with `page`).

import { api, ApiError, errorBox, field, h, KEY, page, pages } from "./lib.js";
import "./playground.js";
import "./views.js";

let stopCurrent = null;
let generation = 0;

async function route() {
  if (stopCurrent) stopCurrent();
  stopCurrent = null;
  const mine = ++generation;
  const signedIn = sessionStorage.getItem(KEY) !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const name = signedIn ? location.hash.replace(/^#\//, "") || "playground" : "sign-in";
  const found = pages[name] || pages.playground;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${found.title} · LLM Gateway console`;
  // Each visit renders into a view of its own: one still loading when another starts is dropped.
  const view = h("div", {}, h("h1", {}, found.title));
  document.getElementById("main").replaceChildren(view);
  try {
    const stop = (await found.render(view)) || null;
    if (mine === generation) stopCurrent = stop;
    else if (stop) stop();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signOut();
    view.append(errorBox(error));
  }
}

function show(hash) {
  if (location.hash === hash) route();
  else location.hash = hash; // the hashchange routes
}

function signOut() {
  sessionStorage.removeItem(KEY);
  show("");
}

page("sign-in", "Sign in", (main) => {
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const problem = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card signin" },
    field("Gateway key", input),
    h("p", { class: "muted" }, "Kept in this browser tab only, and sent to this gateway only."),
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await api("/v1/models", { key: input.value });
    } catch (error) {
      problem.append(errorBox(error.status === 401 ? "That key was refused." : error));
      return;
    }
    sessionStorage.setItem(KEY, input.value);
    show("#/playground");
  });
  main.append(form);
  input.focus();
});

// A module script runs once the document is parsed: the shell's elements are there.
window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", signOut);
// The first page drawn and ready for input: bench/console.py reads the mark.
route().then(() => performance.mark("console-ready"));
