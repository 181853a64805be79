// Batch page: upload a YAML/JSON batch ({"studies": [StudySpec, ...]}), then follow its studies.

import { api } from "../api.js";
import { el, notice, poll } from "../ui.js";
import { studiesTable } from "./studies.js";

const EXAMPLE = `# batch.yaml: every entry is a StudySpec (a preset, the target, any field to override)
name: widths-sweep
studies:
  - {preset: quick, target_width: 4096, target_depth: 32}
  - {preset: quick, target_width: 8192, target_depth: 48, norm: derf}
  - {preset: quick, target_width: 4096, target_depth: 32, attention: differential}
`;

function uploadForm() {
  const errors = el("div", { id: "batch-errors" });
  const file = el("input", { id: "batch-file", name: "file", type: "file", accept: ".yaml,.yml,.json,application/json,application/yaml,text/yaml", required: true });
  const name = el("input", { id: "batch-name", name: "name", maxlength: 200, placeholder: "defaults to the file's `name:`" });
  const submit = el("button", { class: "primary", id: "batch-submit", type: "submit" }, "Upload and queue");
  const form = el("form", { class: "card", id: "batch-upload" },
    el("h2", {}, "Upload a batch"),
    el("p", { class: "muted" }, "A YAML or JSON file with a list of studies. Nothing is queued unless every entry is valid; errors name the entry, the field and the fix."),
    el("div", { class: "form-grid" },
      el("div", {}, el("label", { for: "batch-file" }, "Batch file (YAML or JSON)"), file),
      el("div", {}, el("label", { for: "batch-name" }, "Name (optional)"), name)),
    el("div", { class: "form-actions" }, submit),
    errors,
    el("details", { style: "margin-top:10px" }, el("summary", {}, "Example batch file"), el("pre", {}, EXAMPLE)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    if (!file.files.length) {
      errors.append(notice("error", "Choose a YAML or JSON file first."));
      return;
    }
    const body = new FormData();
    body.append("file", file.files[0]);
    if (name.value.trim()) body.append("name", name.value.trim());
    submit.disabled = true;
    try {
      const batch = await api("batches", { method: "POST", body });
      location.hash = `#/batch/${batch.id}`;
    } catch (e) {
      const lines = e.message.split("\n");
      errors.append(el("div", { class: "notice error", role: "alert" },
        lines.length > 1 ? `The batch was rejected (${lines.length} problems):` : "The batch was rejected:",
        el("ul", {}, lines.map((l) => el("li", {}, l)))));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function followForm() {
  const input = el("input", { id: "follow-id", placeholder: "batch id", pattern: "[A-Za-z0-9_-]{1,32}", required: true });
  const form = el("form", { class: "card row", style: "align-items:end" },
    el("div", { class: "grow" }, el("label", { for: "follow-id" }, "Follow a batch by id"), el("div", {}, input)),
    el("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/batch/${input.value.trim()}`;
  });
  return form;
}

function batchView(view, id) {
  const head = el("div", { id: "batch-head" });
  const list = el("section", { class: "card", id: "batch-studies" }, el("p", { class: "muted" }, "Loading…"));
  view.append(el("p", { style: "margin:0 0 8px" }, el("a", { href: "#/batch" }, "← upload another batch")), head, list);
  return poll(async () => {
    let batch;
    try {
      batch = await api(`batches/${id}`);
    } catch (e) {
      list.replaceChildren(notice("error", e.message));
      return e.status !== 404;
    }
    const counts = Object.entries(batch.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    head.replaceChildren(
      el("h1", {}, `Batch ${batch.name || batch.id}`),
      el("p", {}, el("span", { class: "mono" }, batch.id), ` · ${batch.studies.length} studies · ${batch.status} · ${counts}`));
    list.replaceChildren(studiesTable(batch.studies));
    list.dataset.loaded = "true";
    list.dataset.status = batch.status;
    return batch.status !== "finished";
  }, 2500);
}

export function batchPage(view, id) {
  if (id) return batchView(view, id);
  view.append(el("h1", {}, "Batch upload"), uploadForm(), followForm());
  return null;
}
