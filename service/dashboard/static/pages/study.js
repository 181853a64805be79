// Study page: status and progress (polled), cancel, then for a completed study the recommendation card,
// the alpha*-vs-width plot, one heatmap per proxy width plus the extrapolated one, and the trials.

import { api, API } from "../api.js";
import {
  alphaPlot, gradNormPlot, heatmapPlot, inputRmsPlot, lossCurvesPlot, purge, saturationPlot, widthPlot,
} from "../plots.js";
import {
  copyText, el, fmtAlpha, fmtDuration, fmtLoss, fmtWhen, notice, OUTCOME_GLYPH, poll, progressBar, statusBadge, toast,
} from "../ui.js";
import { validationPanel } from "./validation.js";

const ACTIVE = new Set(["queued", "running"]);
const PARAMS = ["alpha_attn", "alpha_ffn", "alpha_final"];
// The DESIGN §7 recommendation keys: what "Copy JSON" gives (per-width details stay on the page).
const REC_KEYS = ["width", "depth", "norm", "alpha_attn", "alpha_ffn", "alpha_final", "interval", "fit",
  "proxy_widths", "extrapolation_factor", "warnings", "studies", "evidence", "next_steps"];

/** The DyT reference code's flags; 3 significant digits, the precision the interval supports. */
export function dytFlags(rec) {
  const v = (x) => Number(x.toPrecision(3)).toString();
  return `--attn_alpha_init_value ${v(rec.alpha_attn)} --ffn_alpha_init_value ${v(rec.alpha_ffn)} ` +
    `--dec_alpha_init_value ${v(rec.alpha_final)}`;
}

export function recommendationJson(rec) {
  return JSON.stringify(Object.fromEntries(REC_KEYS.filter((k) => k in rec).map((k) => [k, rec[k]])), null, 2);
}

function basisText(rec, param) {
  const p = param === "alpha_final" ? "alpha_ffn" : param;
  const basis = (rec.basis || {})[p];
  const fit = (rec.fit || {})[p] || {};
  const ci = fit.exponent_interval;
  const exp = fit.exponent === null || fit.exponent === undefined ? null
    : `exponent ${fit.exponent.toFixed(2)}${ci && ci[0] !== null ? ` [${ci[0].toFixed(2)}, ${ci[1].toFixed(2)}]` : ""}`;
  if (basis === "power_law") return `power law in width, ${exp}`;
  if (basis === "pooled") return `pooled over widths: no significant width trend${exp ? ` (${exp})` : ""}`;
  if (basis === "single_width") return "one proxy width: no trend fitted";
  return exp || "";
}

function recCard(rec) {
  const level = Math.round(100 * rec.interval.level);
  // Not enough evidence: the point values stay in the JSON, but no number is shown in large type and no
  // flags are offered to copy; the card says what to run instead.
  const insufficient = rec.evidence === "insufficient";
  const usable = !insufficient && PARAMS.every((p) => Number.isFinite(rec[p]));
  const flags = usable ? dytFlags(rec) : "(no finite recommendation)";
  const json = recommendationJson(rec);
  const copy = async (text, what) => {
    const ok = await copyText(text);
    toast(ok ? `Copied ${what}` : `Select and copy the ${what} by hand (clipboard unavailable)`);
  };
  const maxProxy = Math.max(...(rec.proxy_widths || [0]));
  return el(
    "section",
    { class: "card rec", id: "recommendation" },
    el("h2", {}, `Recommendation for width ${rec.width}, depth ${rec.depth} (${rec.norm})`),
    insufficient
      ? el("div", { id: "insufficient" },
        el("p", { class: "value insufficient" }, "Not enough evidence"),
        el("p", {}, `The data do not pin the best α0 at the target down to an interval you can act on. `,
          "The tentative values below are not a recommendation. To get one, run:"),
        el("ol", { id: "next-steps" }, (rec.next_steps || []).map((s) => el("li", {}, s))))
      : null,
    el("table", {},
      el("tbody", {}, PARAMS.map((p) => {
        const iv = rec.interval[p] || [null, null];
        return el("tr", { dataset: { param: p } },
          el("th", {}, p),
          el("td", { class: insufficient ? "tentative" : "value", dataset: { value: rec[p] } },
            insufficient ? `tentative ${fmtAlpha(rec[p])}` : fmtAlpha(rec[p])),
          el("td", { class: "mono" }, `${level}%: ${fmtAlpha(iv[0])} – ${fmtAlpha(iv[1])}`),
          el("td", { class: "muted" }, basisText(rec, p)));
      }))),
    el("p", { class: "muted" },
      `Interval: ${level}% prediction interval for the best α0 at the target. `,
      rec.extrapolation_factor ? `Target is ${Number(rec.extrapolation_factor.toPrecision(3))}× the largest proxy width (${maxProxy}). ` : "",
      "alpha_final (final norm) follows alpha_ffn, as in the published LLaMA runs."),
    insufficient ? null : el("pre", { id: "flags-preview", "aria-label": "DyT reference code flags" }, flags),
    el("div", { class: "actions" },
      el("button", { class: "primary", id: "copy-json", type: "button", onclick: () => copy(json, "recommendation JSON") }, "Copy JSON"),
      el("button", { id: "copy-flags", type: "button", disabled: !usable, onclick: () => copy(flags, "DyT flags") }, "Copy DyT flags"),
      el("a", { class: "button", href: `${API}/studies/${rec.studies[0] || ""}/recommendation`, target: "_blank", rel: "noopener" }, "Raw JSON")),
    rec.warnings && rec.warnings.length
      ? el("div", {}, el("h3", { style: "margin-top:12px" }, `Warnings (${rec.warnings.length})`),
        el("ul", { class: "warnings", id: "warnings" }, rec.warnings.map((w) => el("li", {}, w))))
      : el("p", { class: "muted" }, "No warnings."),
  );
}

function perWidthTable(rec) {
  const level = Math.round(100 * rec.interval.level);
  return el("table", { class: "per-width" },
    el("thead", {}, el("tr", {}, ["width", "depth", "alpha_attn", `${level}% CI`, "alpha_ffn", `${level}% CI`, "finished / diverged", "surface"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, (rec.per_width || []).map((o) => el("tr", {},
      el("td", { class: "num" }, o.width), el("td", { class: "num" }, o.depth),
      el("td", { class: "num" }, fmtAlpha(o.alpha_attn)), el("td", { class: "mono" }, `${fmtAlpha(o.interval_attn[0])} – ${fmtAlpha(o.interval_attn[1])}`),
      el("td", { class: "num" }, fmtAlpha(o.alpha_ffn)), el("td", { class: "mono" }, `${fmtAlpha(o.interval_ffn[0])} – ${fmtAlpha(o.interval_ffn[1])}`),
      el("td", { class: "num" }, `${o.n_completed} / ${o.n_diverged}`),
      el("td", {}, o.method + (o.on_edge && o.on_edge.length ? ` · on edge: ${o.on_edge.join(", ")}` : "")),
    ))));
}

function header(study, onCancel) {
  const p = study.progress;
  const spec = study.spec || {};
  const canCancel = ACTIVE.has(study.status) && !study.cancel_requested;
  return [
    el("div", { class: "row", style: "align-items:center" },
      el("h1", { class: "grow" }, study.name || `Study ${study.id}`, " ", statusBadge(study.status, study.cancel_requested)),
      ACTIVE.has(study.status)
        ? el("button", { class: "danger", id: "cancel-study", type: "button", disabled: !canCancel, onclick: onCancel },
          study.cancel_requested ? "Cancelling…" : "Cancel study")
        : null),
    el("div", { class: "kv" },
      el("div", {}, el("span", {}, "id"), el("span", { class: "mono" }, study.id)),
      el("div", {}, el("span", {}, "target"), `width ${study.target_width}, depth ${study.target_depth}`),
      el("div", {}, el("span", {}, "norm"), `${study.norm}, ${spec.attention || "standard"} attention`),
      el("div", {}, el("span", {}, "proxies"), `widths ${(spec.proxy_widths || []).join(", ")} · depth ${(spec.proxy_depths || []).join(", ")}`),
      el("div", {}, el("span", {}, "search"), `${spec.sampler} sampler, ${spec.trials_per_width} trials/width, preset ${spec.preset || "custom"}`),
      el("div", {}, el("span", {}, "submitted"), fmtWhen(study.created_at)),
      study.finished_at ? el("div", {}, el("span", {}, "finished"), fmtWhen(study.finished_at)) : null,
      study.batch_id ? el("div", {}, el("span", {}, "batch"), el("a", { href: `#/batch/${study.batch_id}` }, study.batch_id)) : null),
    el("div", { class: "row", style: "align-items:center;margin-top:8px" },
      el("div", { style: "width:340px" }, progressBar(p)),
      el("span", { id: "eta" }, study.status === "running"
        ? `ETA ${p.eta_s === null ? "estimating… (after the first trial)" : fmtDuration(p.eta_s)}` : "")),
    el("div", { class: "lanes" }, (p.lanes || []).map((lane) =>
      el("span", { class: "lane" }, el("strong", {}, lane.label), ` ${lane.done}/${lane.total}`,
        lane.best !== null && lane.best !== undefined ? el("span", { class: "muted" }, ` · best ${fmtLoss(lane.best)}`) : null))),
    study.cancel_requested && ACTIVE.has(study.status)
      ? notice("info", "Cancellation requested: the scheduler stops the study within seconds.") : null,
    study.error ? notice("error", study.error) : null,
    study.status === "cancelled" ? notice("info", "This study was cancelled; finished trials are kept below.") : null,
    el("details", { class: "spec" }, el("summary", {}, "Full spec"), el("pre", {}, JSON.stringify(spec, null, 2))),
  ].filter(Boolean);
}

function trialsTable(trials, onSelect, selectedKey = null) {
  const cols = [
    ["lane", "Lane", (t) => t.lane], ["number", "#", (t) => t.number],
    ["outcome", "Outcome", (t) => t.outcome || t.state.toLowerCase()],
    ["alpha_attn", "α_attn", (t) => t.alpha_attn], ["alpha_ffn", "α_ffn", (t) => t.alpha_ffn],
    ["value", "Final val loss", (t) => t.value], ["diverged_at_step", "Diverged at", (t) => t.diverged_at_step],
    ["duration_s", "Time", (t) => t.duration_s],
  ];
  let sortKey = "lane";
  let asc = true;
  const tbody = el("tbody");
  const render = () => {
    const get = cols.find((c) => c[0] === sortKey)[2];
    const rows = [...trials].sort((a, b) => {
      const x = get(a), y = get(b);
      if (x === y) return a.lane === b.lane ? a.number - b.number : a.lane < b.lane ? -1 : 1;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (asc ? 1 : -1);
    });
    tbody.replaceChildren(...rows.map((t) => {
      const outcome = t.outcome || t.state.toLowerCase();
      const key = `${t.lane}#${t.number}`;
      const tr = el("tr", { class: key === selectedKey ? "selected" : null, dataset: { key, outcome } },
        el("td", { class: "mono" }, t.lane), el("td", { class: "num" }, t.number),
        el("td", { title: t.reason || null },
          el("span", { class: "outcome", dataset: { glyph: OUTCOME_GLYPH[outcome] || "·" } }, outcome)),
        el("td", { class: "num" }, fmtAlpha(t.alpha_attn)), el("td", { class: "num" }, fmtAlpha(t.alpha_ffn)),
        el("td", { class: "num" }, fmtLoss(t.value)), el("td", { class: "num" }, t.diverged_at_step ?? "—"),
        el("td", { class: "num" }, fmtDuration(t.duration_s)));
      tr.addEventListener("click", () => {
        tbody.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
        tr.classList.add("selected");
        selectedKey = tr.dataset.key;
        onSelect(tr.dataset.key);
      });
      return tr;
    }));
  };
  const head = el("tr", {}, cols.map(([key, label]) => {
    const th = el("th", { class: `sortable${["lane", "outcome"].includes(key) ? "" : " num"}`, scope: "col", title: "sort" }, label);
    th.addEventListener("click", () => {
      asc = sortKey === key ? !asc : true;
      sortKey = key;
      render();
    });
    return th;
  }));
  render();
  return el("div", { class: "scroll" }, el("table", { class: "trials" }, el("thead", {}, head), tbody));
}

// Outcome of one trial: glyph + word + colour (never colour alone), as the table's outcome column.
function outcomeBadge(outcome) {
  return el("span", { class: `outcome-badge ${outcome}`, id: "trial-outcome", dataset: { outcome, glyph: OUTCOME_GLYPH[outcome] || "·" } },
    outcome);
}

const OUTCOME_TEXT = {
  completed: "finished its steps and learned (final val loss below the unigram entropy).",
  diverged: "diverged: a non-finite loss, or the smoothed train loss rose far above its running minimum.",
  stalled: "stalled: the val loss never got clearly below the corpus's unigram entropy (learned nothing input-dependent).",
  pruned: "pruned by the search's pruner (its intermediate loss was not competitive).",
  failed: "failed: the run crashed (see the errors below).",
  cancelled: "cancelled before it finished.",
  interrupted: "interrupted (the driver stopped); its alpha point is re-queued.",
  stale: "went stale: the driver running it died or was killed (no heartbeat); its alpha point is re-queued.",
};

/** The trial view: outcome badge, the trial's numbers and its per-run diagnostics charts. */
function trialView(box, trial, seedIndex = 0) {
  purge(box);
  const outcome = trial.outcome || trial.state.toLowerCase();
  const runs = trial.runs || [];
  const run = runs[Math.min(seedIndex, Math.max(0, runs.length - 1))];
  const diag = (run && run.diagnostics) || {};
  const hasDiag = Array.isArray(diag.steps) && diag.steps.length > 0;
  const stop = (trial.runs || []).map((r) => r.stalled_at_step).find((x) => x !== null && x !== undefined);
  const seedPicker = runs.length > 1
    ? el("label", {}, "Run ", el("select", { id: "trial-seed", onchange: (e) => trialView(box, trial, Number(e.target.value)) },
      runs.map((_, i) => el("option", { value: i, selected: i === seedIndex }, `run ${i + 1} of ${runs.length}`))))
    : null;
  const charts = {
    saturation: el("div", { class: "plot diag", id: "diag-saturation" }),
    rms: el("div", { class: "plot diag", id: "diag-rms" }),
    alpha: el("div", { class: "plot diag", id: "diag-alpha" }),
    grad: el("div", { class: "plot diag", id: "diag-grad" }),
  };
  box.replaceChildren(...[
    el("div", { class: "row", style: "align-items:center" },
      el("h2", { class: "grow" }, `Trial ${trial.lane} #${trial.number} `, outcomeBadge(outcome)), seedPicker),
    el("p", { class: "muted" }, `This trial ${OUTCOME_TEXT[outcome] || outcome}`),
    trial.reason ? el("p", { id: "trial-reason" }, el("strong", {}, "Why: "), trial.reason) : null,
    el("div", { class: "kv" },
      el("div", {}, el("span", {}, "α_attn"), fmtAlpha(trial.alpha_attn)),
      el("div", {}, el("span", {}, "α_ffn"), fmtAlpha(trial.alpha_ffn)),
      el("div", {}, el("span", {}, "norm"), trial.norm),
      el("div", {}, el("span", {}, "final val loss"), fmtLoss(trial.value)),
      trial.diverged_at_step !== null && trial.diverged_at_step !== undefined
        ? el("div", {}, el("span", {}, "diverged at step"), trial.diverged_at_step) : null,
      stop !== undefined ? el("div", {}, el("span", {}, "stalled at step"), stop) : null,
      run ? el("div", {}, el("span", {}, "steps run"), run.steps_done) : null,
      el("div", {}, el("span", {}, "time"), fmtDuration(trial.duration_s))),
    (trial.errors || []).length ? el("details", {}, el("summary", {}, `Errors (${trial.errors.length})`),
      el("pre", {}, trial.errors.join("\n\n"))) : null,
    hasDiag
      ? el("div", { class: "diag-grid" }, charts.saturation, charts.rms, charts.alpha, charts.grad)
      : notice("info", run ? "This run recorded no diagnostics (diagnostics are taken at evaluation steps)."
        : "This trial has no finished run yet."),
    hasDiag ? el("p", { class: "caption" },
      `Measured at each evaluation step on a fixed validation batch. Saturation near 1: the norm acts as a sign `,
      `function and passes almost no gradient; near 0: it is linear. Profiles go from light (early) to dark (late).`) : null,
  ].filter(Boolean));
  box.hidden = false;
  box.dataset.key = `${trial.lane}#${trial.number}`;
  box.dataset.outcome = outcome;
  if (hasDiag) {
    saturationPlot(charts.saturation, diag);
    inputRmsPlot(charts.rms, diag);
    alphaPlot(charts.alpha, diag);
    gradNormPlot(charts.grad, diag);
  }
  box.dataset.rendered = "true";
}

export function studyPage(view, id) {
  const top = el("section", { class: "card", id: "study-header" }, el("p", { class: "muted" }, "Loading…"));
  const results = el("div", { id: "results" });
  const trialsBox = el("section", { class: "card", id: "trials-section", hidden: true });
  view.append(el("p", { style: "margin:0 0 8px" }, el("a", { href: "#/" }, "← all studies")), top, results, trialsBox);

  let shown = false;
  let polls = 0;
  let selectedKey = null; // the trial open in the trial view; kept across refreshes
  const cancel = async () => {
    if (!window.confirm("Cancel this study? Finished trials are kept; the rest are not run.")) return;
    try {
      const study = await api(`studies/${id}/cancel`, { method: "POST" });
      top.replaceChildren(...header(study, cancel));
      toast("Cancellation requested");
    } catch (e) {
      top.append(notice("error", `Cancel failed: ${e.message}`));
    }
  };
  const loadTrials = async () => {
    const res = await api(`studies/${id}/trials?limit=1000`);
    const curves = el("div", { class: "plot small", id: "loss-curves" });
    const detail = el("section", { class: "trial-view", id: "trial-detail", hidden: true, "aria-live": "polite" });
    trialsBox.hidden = false;
    purge(trialsBox);
    const more = res.count > res.data.length ? ` (showing ${res.data.length})` : "";
    const byKey = new Map(res.data.map((t) => [`${t.lane}#${t.number}`, t]));
    let highlight = () => {};
    const select = (key) => {
      selectedKey = key;
      highlight(key);
      if (byKey.has(key)) trialView(detail, byKey.get(key));
    };
    trialsBox.replaceChildren(
      el("div", { class: "row", style: "align-items:baseline" }, el("h2", { class: "grow" }, `Trials (${res.count})${more}`),
        el("a", { href: `${API}/studies/${id}/trials?format=csv` }, "Download CSV")),
      res.count === 0 ? el("p", { class: "muted" }, "No trial has started yet.") :
        el("div", { class: "split" },
          el("div", {}, el("h3", {}, "Validation loss curves"), curves,
            el("p", { class: "caption" }, "Dotted lines with ✕: diverged runs. Click a table row to highlight its curve and open the trial below.")),
          el("div", {}, el("h3", {}, "Trial table"), trialsTable(res.data, (key) => select(key), selectedKey))),
      detail,
    );
    if (res.count) highlight = lossCurvesPlot(curves, res.data);
    if (selectedKey && byKey.has(selectedKey)) select(selectedKey);
    trialsBox.dataset.loaded = "true";
  };
  let validations = null;
  const loadResults = async (study) => {
    const [rec, maps, trend] = await Promise.all([
      api(`studies/${id}/recommendation`),
      api(`studies/${id}/heatmaps`),
      api(`/dashboard/studies/${id}/width-fit.json`).catch(() => ({ params: {} })),
    ]);
    const widthDiv = el("div", { class: "plot", id: "width-plot" });
    const panels = [...maps.data].sort((a, b) => (a.extrapolated - b.extrapolated) || (a.width - b.width) || (a.depth - b.depth));
    const heatmaps = el("div", { class: "heatmaps" });
    results.replaceChildren(
      el("div", { class: "split" },
        recCard(rec),
        el("section", { class: "card", id: "width-section" },
          el("h2", {}, "Best α0 against width (log-log)"),
          widthDiv,
          el("p", { class: "caption" },
            "Markers: per-width optima with their intervals (circle/square); line and band: the fitted power law and its ",
            `${Math.round(100 * rec.interval.level)}% interval; stars: the recommendation at the target width.`),
          el("details", {}, el("summary", {}, "Per-width optima"), perWidthTable(rec)))),
      el("section", { class: "card", id: "heatmaps-section" },
        el("h2", {}, "Loss landscape"),
        el("p", { class: "caption", style: "margin-bottom:8px" },
          "Colour: final validation loss (Cividis: dark = low = better). ○ finished trial · ✕ diverged · ▼ stalled · ★ estimated optimum. ",
          "The EXTRAPOLATED map is a model's prediction at the target width, not measured data."),
        heatmaps),
    );
    for (const h of panels) {
      const div = el("div", { class: "plot", dataset: { key: h.key } });
      const caption = el("p", { class: "caption" });
      heatmaps.append(el("div", { class: `heatmap-panel${h.extrapolated ? " extrapolated" : ""}`, dataset: { key: h.key } },
        h.extrapolated
          ? el("div", {}, el("span", { class: "badge-extrap" }, "EXTRAPOLATED"), ` target width ${h.width}, depth ${h.depth} — predicted, not measured`)
          : null,
        div, caption, el("a", { class: "caption", href: h.png_url, target: "_blank", rel: "noopener" }, "PNG")));
      caption.textContent = heatmapPlot(div, h.grid);
    }
    widthPlot(widthDiv, rec, trend.params);
    if (validations) validations.stop();
    validations = validationPanel(id, study);
    results.append(validations.node);
    results.dataset.loaded = "true";
  };

  const stop = poll(async () => {
    let study;
    try {
      study = await api(`studies/${id}`);
    } catch (e) {
      top.replaceChildren(notice("error", e.message));
      return e.status !== 404;
    }
    const specOpen = Boolean(top.querySelector("details.spec[open]"));
    top.replaceChildren(...header(study, cancel));
    if (specOpen) top.querySelector("details.spec").open = true;
    top.dataset.status = study.status;
    polls += 1;
    try {
      if (study.status === "completed" && !shown) {
        shown = true;
        await loadResults(study);
      }
      const done = !ACTIVE.has(study.status);
      if (study.status !== "queued" && (done || polls % 2 === 1)) await loadTrials();
      return !done;
    } catch (e) {
      if (results.dataset.loaded !== "true") shown = false; // try again on the next poll
      results.replaceChildren(notice("error", e.message));
      return true;
    }
  }, 2500);
  return () => {
    stop();
    if (validations) validations.stop();
    purge(view);
  };
}
