// Entry point: hash router (#/, #/study/<id>, #/batch, #/batch/<id>) and the API token field.

import { getToken, setToken } from "./api.js";
import { batchPage } from "./pages/batch.js";
import { studiesPage } from "./pages/studies.js";
import { studyPage } from "./pages/study.js";
import { el, notice, toast } from "./ui.js";

const ROUTES = [
  [/^#?\/?$/, studiesPage, "studies"],
  [/^#\/study\/([A-Za-z0-9_-]{1,32})$/, studyPage, "studies"],
  [/^#\/batch\/?$/, batchPage, "batch"],
  [/^#\/batch\/([A-Za-z0-9_-]{1,32})$/, batchPage, "batch"],
];

const view = document.getElementById("view");
let cleanup = null;

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  view.replaceChildren();
  const hash = location.hash || "#/";
  for (const [pattern, page, nav] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    cleanup = page(view, ...m.slice(1)) || null;
    return;
  }
  view.append(el("h1", {}, "Not found"), notice("error", `No page at ${hash}.`), el("a", { href: "#/" }, "All studies"));
}

function tokenField(required) {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const state = document.getElementById("token-state");
  const show = () => {
    state.textContent = getToken() ? "✓ saved" : required ? "not set: writes will be refused" : "";
  };
  form.hidden = !required;
  input.value = getToken();
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    show();
    toast(input.value.trim() ? "API token saved in this browser" : "API token removed");
  });
  // A write refused for want of a token: show the field even if config said none was needed.
  window.addEventListener("alphasearch:auth", (event) => {
    form.hidden = false;
    state.textContent = "needed: the server refused the request";
    input.focus();
    toast(event.detail);
  });
}

async function start() {
  window.alphasearch = window.alphasearch || {};
  let config = { token_required: false };
  try {
    const res = await fetch("/dashboard/config.json");
    if (res.ok) config = await res.json();
  } catch {
    /* the pages show the connection error themselves */
  }
  window.alphasearch.config = config;
  tokenField(Boolean(config.token_required));
  if (!window.Plotly) view.before(notice("error", "Plotly did not load; plots cannot be drawn."));
  window.addEventListener("hashchange", route);
  route();
}

start();
