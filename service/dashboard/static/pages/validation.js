// The study page's validation panel: start a validation of a completed study (train its recommendation,
// (1, 1), (0.5, 0.5) and the x2 / ÷2 neighbours at a width beyond the proxies, same seeds for every
// point), follow its progress, and read the regret table with its noise.

import { api } from "../api.js";
import { el, fmtAlpha, fmtLoss, notice, poll, progressBar, statusBadge, toast } from "../ui.js";

const ACTIVE = new Set(["queued", "running"]);

/** The width a validation takes by default: twice the widest proxy, or the target when it fits. */
export function defaultWidth(spec, targetWidth) {
  const twice = 2 * Math.max(...(spec.proxy_widths || [0]));
  return targetWidth <= twice ? targetWidth : twice;
}

function fmtNats(x) {
  return x === null || x === undefined ? "—" : `${x >= 0 ? "+" : ""}${x.toFixed(4)}`;
}

function regretLine(role, r) {
  if (!r || r.nats === null || r.nats === undefined) {
    return el("li", { dataset: { role } }, `${role}: not measured (a run of that point diverged or failed)`);
  }
  const noise = r.noise === null || r.noise === undefined
    ? " (noise unknown: one seed and no proxy seed std)"
    : ` = ${r.in_noise.toFixed(1)} × its noise ${r.noise.toPrecision(2)} (${r.noise_kind})`;
  return el("li", { dataset: { role, nats: r.nats } },
    el("strong", {}, `${role}: `), `${r.nats.toFixed(4)} nats${r.is_best ? " (the best point)" : ""}${noise}`);
}

function validationCard(v) {
  const result = v.result || {};
  const best = result.best || {};
  const p = v.progress;
  const rows = (result.points || []).map((pt) => el("tr", { dataset: { label: pt.label } },
    el("td", {}, pt.label, best.label === pt.label ? el("strong", {}, " ★ best") : null),
    el("td", { class: "num" }, fmtAlpha(pt.alpha_attn)), el("td", { class: "num" }, fmtAlpha(pt.alpha_ffn)),
    el("td", { class: "num" }, pt.mean === null ? pt.outcome : fmtLoss(pt.mean)),
    el("td", { class: "num" }, pt.seed_std === null ? "—" : pt.seed_std.toFixed(4)),
    el("td", { class: "num" }, pt.mean === null || best.mean === undefined ? "—" : fmtNats(pt.mean - best.mean))));
  return el("div", { class: "validation", dataset: { id: v.id, status: v.status } },
    el("div", { class: "row", style: "align-items:center" },
      el("h3", { class: "grow" }, `Width ${v.width}, ${v.seeds} seed${v.seeds === 1 ? "" : "s"} per point `, statusBadge(v.status)),
      el("div", { style: "width:260px" }, progressBar({ fraction: p.fraction, trials_done: p.done, trials_total: p.total }))),
    v.error ? notice("error", v.error) : null,
    rows.length ? el("div", { class: "scroll" }, el("table", { class: "validation-points" },
      el("thead", {}, el("tr", {}, ["point", "α_attn", "α_ffn", "mean loss", "seed std", "above best"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))) : el("p", { class: "muted" }, v.status === "queued" ? "Waiting for the scheduler." : "Training…"),
    v.regret ? el("ul", { class: "regret" },
      ["recommended", "(1, 1)", "(0.5, 0.5)"].map((role) => regretLine(role, v.regret[role]))) : null);
}

/** The panel for study `id` (completed): a start form and every validation of the study, polled while one runs. */
export function validationPanel(id, study) {
  const list = el("div", { id: "validations" });
  const width = el("input", { id: "validation-width", type: "number", min: 1, placeholder: String(defaultWidth(study.spec || {}, study.target_width)) });
  const seeds = el("input", { id: "validation-seeds", type: "number", min: 1, max: 16, placeholder: "2" });
  let stopPolling = null;
  const render = (res) => {
    list.replaceChildren(...(res.data.length ? res.data.map(validationCard)
      : [el("p", { class: "muted" }, "No validation yet.")]));
    list.dataset.loaded = "true";
  };
  const refresh = () => {
    if (stopPolling) stopPolling();
    stopPolling = poll(async () => {
      try {
        const res = await api(`studies/${id}/validations`);
        render(res);
        return res.data.some((v) => ACTIVE.has(v.status));
      } catch (e) {
        list.replaceChildren(notice("error", e.message));
        return false;
      }
    }, 2000);
  };
  const start = async (event) => {
    event.preventDefault();
    const body = {};
    if (width.value) body.width = Number(width.value);
    if (seeds.value) body.seeds = Number(seeds.value);
    try {
      const v = await api(`studies/${id}/validations`, { method: "POST", json: body });
      toast(`Validation at width ${v.width} ${v.status}`);
      refresh();
    } catch (e) {
      list.prepend(notice("error", `Validation not started: ${e.message}`));
    }
  };
  const section = el("section", { class: "card", id: "validation-section" },
    el("h2", {}, "Validation at a wider width"),
    el("p", { class: "caption" },
      "Trains the recommendation (as the study's analysis reads it at that width), (1, 1), (0.5, 0.5) and the ×2 / ÷2 ",
      "neighbours of the recommendation at a width beyond every proxy, with the same seeds for every point. ",
      "Regret = the point's mean loss minus the best point's; its noise is the std of the per-seed differences / √N."),
    el("form", { id: "validation-form", class: "row", style: "align-items:end;gap:8px", onsubmit: start },
      el("label", {}, "width ", width), el("label", {}, "seeds ", seeds),
      el("button", { class: "primary", id: "start-validation", type: "submit" }, "Validate")),
    list);
  refresh();
  return { node: section, stop: () => stopPolling && stopPolling() };
}
