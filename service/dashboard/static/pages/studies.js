// Studies page: every study with status, progress and ETA (polled), and a form to submit a new one.

import { api } from "../api.js";
import { el, fmtDuration, fmtWhen, notice, poll, progressBar, statusBadge } from "../ui.js";

const ACTIVE = new Set(["queued", "running"]);
const PRESETS = ["smoke", "quick", "standard", "paper-like"];

/** Table of studies (shared with the batch page). */
export function studiesTable(studies) {
  if (!studies.length) return notice("info", "No studies yet. Submit one below, upload a batch, or POST /api/v1/studies.");
  const rows = studies.map((s) =>
    el(
      "tr",
      { dataset: { studyId: s.id, status: s.status } },
      el("td", {}, el("a", { href: `#/study/${s.id}` }, s.name || s.id), s.name ? el("div", { class: "muted mono" }, s.id) : null),
      el("td", {}, statusBadge(s.status, s.cancel_requested)),
      el("td", { class: "mono" }, `${s.target_width} × ${s.target_depth}`, el("div", { class: "muted" }, `${s.norm}, ${s.spec.preset || "custom"}`)),
      el("td", {}, progressBar(s.progress)),
      el("td", { class: "num" }, s.status === "running" ? (s.progress.eta_s === null ? "estimating…" : fmtDuration(s.progress.eta_s)) : "—"),
      el("td", { title: s.created_at }, fmtWhen(s.created_at)),
    ),
  );
  return el(
    "div",
    { class: "scroll", style: "max-height:none" },
    el(
      "table",
      { class: "studies" },
      el("thead", {}, el("tr", {}, ...["Study", "Status", "Target width × depth", "Progress (trials)", "ETA", "Submitted"].map((h) => el("th", { class: h === "ETA" ? "num" : "" }, h)))),
      el("tbody", {}, rows),
    ),
  );
}

function submitForm() {
  const error = el("div");
  const form = el(
    "form",
    { class: "card", id: "new-study" },
    el("h2", {}, "New study"),
    el(
      "div",
      { class: "form-grid" },
      el("div", {}, el("label", { for: "ns-preset" }, "Preset"),
        el("select", { id: "ns-preset", name: "preset" }, PRESETS.map((p) => el("option", { value: p, selected: p === "quick" }, p)))),
      el("div", {}, el("label", { for: "ns-width" }, "Target width"), el("input", { id: "ns-width", name: "target_width", type: "number", min: 8, value: 4096, required: true })),
      el("div", {}, el("label", { for: "ns-depth" }, "Target depth"), el("input", { id: "ns-depth", name: "target_depth", type: "number", min: 1, value: 32, required: true })),
      el("div", {}, el("label", { for: "ns-norm" }, "Norm"), el("select", { id: "ns-norm", name: "norm" }, el("option", { value: "dyt" }, "dyt"), el("option", { value: "derf" }, "derf"))),
      el("div", {}, el("label", { for: "ns-name" }, "Name (optional)"), el("input", { id: "ns-name", name: "name", maxlength: 200 })),
    ),
    el("div", { style: "margin-top:10px" },
      el("label", { for: "ns-extra" }, "Other StudySpec fields (JSON, optional)"),
      el("textarea", { id: "ns-extra", name: "extra", placeholder: '{"proxy_widths": [64, 128, 256], "trials_per_width": 16}' })),
    el("div", { class: "form-actions" }, el("button", { class: "primary", type: "submit" }, "Submit study"),
      el("span", { class: "muted" }, "Presets: smoke (seconds), quick (minutes on a laptop), standard, paper-like (GPU cluster).")),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.replaceChildren();
    const data = new FormData(form);
    let body = {
      preset: data.get("preset"),
      target_width: Number(data.get("target_width")),
      target_depth: Number(data.get("target_depth")),
      norm: data.get("norm"),
    };
    if (data.get("name")) body.name = data.get("name");
    const extra = String(data.get("extra") || "").trim();
    if (extra) {
      try {
        body = { ...body, ...JSON.parse(extra) };
      } catch (e) {
        error.append(notice("error", `Other fields: not valid JSON (${e.message})`));
        return;
      }
    }
    try {
      const study = await api("studies", { method: "POST", json: body });
      location.hash = `#/study/${study.id}`;
    } catch (e) {
      error.append(notice("error", e.message));
    }
  });
  return form;
}

export function studiesPage(view) {
  const list = el("div", { id: "studies-list" }, el("p", { class: "muted" }, "Loading…"));
  const filter = el("select", { id: "status-filter", "aria-label": "filter by status" },
    ["all", "queued", "running", "completed", "failed", "cancelled"].map((s) => el("option", { value: s }, s)));
  const updated = el("span", { class: "muted", id: "studies-updated" });
  view.append(
    el("div", { class: "row", style: "align-items:center" }, el("h1", { class: "grow" }, "Studies"),
      el("label", { for: "status-filter" }, "Status"), filter, updated),
    el("section", { class: "card" }, list),
    submitForm(),
  );
  let active = true;
  const load = async () => {
    const q = filter.value === "all" ? "" : `&status=${filter.value}`;
    try {
      const res = await api(`studies?limit=200${q}`);
      list.replaceChildren(studiesTable(res.data));
      if (res.count > res.data.length) list.append(el("p", { class: "muted" }, `showing the newest ${res.data.length} of ${res.count}`));
      list.dataset.loaded = "true";
      active = res.data.some((s) => ACTIVE.has(s.status));
      updated.textContent = `updated ${new Date().toLocaleTimeString()}${active ? " · live" : ""}`;
    } catch (e) {
      list.replaceChildren(notice("error", e.message));
    }
  };
  filter.addEventListener("change", load);
  // Live while something is queued or running; a slow heartbeat otherwise (new submissions appear too).
  let tick = 0;
  const stop = poll(async () => {
    tick += 1;
    if (active || tick % 5 === 0) await load();
  }, 2000);
  return stop;
}
