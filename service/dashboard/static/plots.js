// Plotly figures: loss heatmaps, the alpha*-vs-width trend, loss curves.
// Colour-blind safe: Cividis for loss (perceptually uniform, readable with any colour vision), Okabe-Ito
// for lines; every marker kind has its own shape (circle trial, X diverged, triangle stalled, star optimum).

const OKABE_ITO = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];
const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 12, color: "#1b1f24" };
const PARAM_STYLE = {
  alpha_attn: { color: "#0072b2", symbol: "circle", dash: "solid", label: "alpha_attn" },
  alpha_ffn: { color: "#e69f00", symbol: "square", dash: "dash", label: "alpha_ffn" },
};

function plotly() {
  if (!window.Plotly) throw new Error("Plotly did not load (/dashboard/vendor/plotly.min.js)");
  return window.Plotly;
}

// Plotly chokes on keys that are present but undefined (`marker: undefined`): drop them.
function compact(traces) {
  return traces.map((t) => Object.fromEntries(Object.entries(t).filter(([, v]) => v !== undefined)));
}

export function purge(node) {
  if (window.Plotly) node.querySelectorAll(".js-plotly-plot").forEach((p) => window.Plotly.purge(p));
}

const log10 = (x) => Math.log10(x);
const positive = (xs) => xs.filter((x) => x !== null && x !== undefined && x > 0);

// Log-axis range covering the grid's cells (half a log-step past the first and last centres).
function logRange(axis) {
  const xs = positive(axis);
  const lo = log10(Math.min(...xs));
  const hi = log10(Math.max(...xs));
  const half = xs.length > 1 ? (hi - lo) / (xs.length - 1) / 2 : 0.1;
  return [lo - half, hi + half];
}

// Readable log ticks: 1-2-5 per decade (1 only when the range spans many decades).
function logTicks(range) {
  const vals = [];
  const decades = range[1] - range[0];
  const mantissas = decades > 4 ? [1] : decades > 2.5 ? [1, 3] : [1, 2, 5];
  const every = Math.max(1, Math.ceil(decades / 6)); // at most ~6 labels: they must not collide
  for (let k = Math.floor(range[0]); k <= Math.ceil(range[1]); k++) {
    if (every > 1 && k % every !== 0) continue;
    for (const m of mantissas) {
      const v = m * 10 ** k;
      if (log10(v) >= range[0] && log10(v) <= range[1]) vals.push(Number(v.toPrecision(3)));
    }
  }
  const text = vals.map((v) => (v >= 1e4 || v < 1e-3 ? v.toExponential(0).replace("e+", "e") : String(v)));
  return { tickmode: "array", tickvals: vals, ticktext: text };
}

// Wrap a long axis/colorbar title onto lines of about `width` characters.
function wrap(text, width = 24) {
  const lines = [""];
  for (const word of String(text).split(" ")) {
    const cur = lines[lines.length - 1];
    if (cur && (cur + " " + word).length > width) lines.push(word);
    else lines[lines.length - 1] = cur ? `${cur} ${word}` : word;
  }
  return lines.join("<br>");
}

const inside = (range, x) => x > 0 && log10(x) >= range[0] && log10(x) <= range[1];
const fmt = (x) => (x === null || x === undefined ? "—" : Number(x.toPrecision(3)).toString());

/** One loss surface (HeatmapGrid.to_dict()) with its trial points. Returns a caption string. */
export function heatmapPlot(div, grid) {
  const P = plotly();
  const xr = logRange(grid.alpha_attn);
  const yr = logRange(grid.alpha_ffn);
  const traces = [];
  const hasSurface = Array.isArray(grid.loss) && grid.loss.some((row) => row.some((v) => v !== null));
  if (hasSurface) {
    traces.push({
      type: "heatmap",
      name: grid.extrapolated ? "predicted surface" : "surrogate surface",
      x: grid.alpha_attn,
      y: grid.alpha_ffn,
      z: grid.loss, // rows = alpha_ffn, as plotly expects z[y][x]
      customdata: grid.std || undefined,
      colorscale: "Cividis",
      colorbar: { title: { text: wrap(grid.value_label), side: "right", font: { size: 11 } }, thickness: 12, len: 0.95 },
      hovertemplate:
        "alpha_attn %{x:.3g}<br>alpha_ffn %{y:.3g}<br>" +
        (grid.extrapolated ? "predicted " : "") +
        "loss %{z:.4f}" + (grid.std ? " ± %{customdata:.3f}" : "") + "<extra></extra>",
      showscale: true,
    });
  }
  const done = grid.completed || [];
  if (done.length) {
    traces.push({
      type: "scatter", mode: "markers", name: "trial (finished)",
      x: done.map((p) => p[0]), y: done.map((p) => p[1]), customdata: done.map((p) => p[2]),
      marker: { symbol: "circle", size: 9, color: "#ffffff", line: { color: "#000000", width: 1.5 } },
      hovertemplate: "trial<br>alpha_attn %{x:.3g}<br>alpha_ffn %{y:.3g}<br>final val loss %{customdata:.4f}<extra></extra>",
    });
  }
  if ((grid.diverged || []).length) {
    traces.push({
      type: "scatter", mode: "markers", name: "diverged (X)",
      x: grid.diverged.map((p) => p[0]), y: grid.diverged.map((p) => p[1]),
      marker: { symbol: "x", size: 12, color: "#d55e00", line: { color: "#000000", width: 1 } },
      hovertemplate: "diverged<br>alpha_attn %{x:.3g}<br>alpha_ffn %{y:.3g}<extra></extra>",
    });
  }
  if ((grid.stalled || []).length) {
    traces.push({
      type: "scatter", mode: "markers", name: "stalled (▼)",
      x: grid.stalled.map((p) => p[0]), y: grid.stalled.map((p) => p[1]),
      marker: { symbol: "triangle-down", size: 11, color: "#56b4e9", line: { color: "#000000", width: 1 } },
      hovertemplate: "stalled<br>alpha_attn %{x:.3g}<br>alpha_ffn %{y:.3g}<extra></extra>",
    });
  }
  const notes = [];
  if (grid.extrapolated && grid.space) {
    const [a0, a1] = grid.space.attn;
    const [f0, f1] = grid.space.ffn;
    const box = { type: "scatter", mode: "lines", x: [a0, a1, a1, a0, a0], y: [f0, f0, f1, f1, f0], hoverinfo: "skip" };
    // Black under white dots: visible on dark and light parts of the map (and in the legend).
    traces.push({ ...box, name: "proxies' search box", line: { color: "#000000", width: 3 } });
    traces.push({ ...box, showlegend: false, line: { color: "#ffffff", width: 2, dash: "dot" } });
  }
  if (grid.optimum) {
    const [oa, of] = grid.optimum;
    if (inside(xr, oa) && inside(yr, of)) {
      traces.push({
        type: "scatter", mode: "markers", name: grid.extrapolated ? "predicted optimum (★)" : "estimated optimum (★)",
        x: [oa], y: [of],
        marker: { symbol: "star", size: 17, color: "#f0e442", line: { color: "#000000", width: 1.5 } },
        hovertemplate: "optimum<br>alpha_attn %{x:.3g}<br>alpha_ffn %{y:.3g}<extra></extra>",
      });
    } else {
      notes.push(`optimum (${fmt(oa)}, ${fmt(of)}) lies outside the plotted range`);
    }
  }
  if (!hasSurface) notes.push("too few finished trials for a surface: trial points only");
  const title = grid.extrapolated ? `EXTRAPOLATED to width ${grid.width}, depth ${grid.depth}` : grid.label;
  const layout = {
    title: { text: title, font: { size: 13 }, x: 0.02, xanchor: "left" },
    font: FONT,
    margin: { l: 62, r: 8, t: 34, b: 96 },
    xaxis: { type: "log", range: xr, title: { text: "alpha_attn (α0 before attention)" }, showgrid: false, zeroline: false, ...logTicks(xr) },
    yaxis: { type: "log", range: yr, title: { text: "alpha_ffn (α0 before FFN)" }, showgrid: false, zeroline: false, ...logTicks(yr) },
    legend: { orientation: "h", x: 0, y: -0.3, font: { size: 11 } },
    plot_bgcolor: "#e9ecef",
    paper_bgcolor: grid.extrapolated ? "#faf7fd" : "#ffffff",
  };
  P.react(div, compact(traces), layout, CONFIG);
  if (grid.extrapolated) notes.unshift(`${grid.label}; colour: ${grid.value_label}`);
  const surface = grid.surrogate && grid.surrogate !== "none" ? `surface: ${grid.surrogate}` : "";
  const parts = [surface, `${done.length} finished`];
  if ((grid.diverged || []).length) parts.push(`${grid.diverged.length} diverged`);
  if ((grid.stalled || []).length) parts.push(`${grid.stalled.length} stalled`);
  return [...parts.filter(Boolean), ...notes].join(" · ");
}

/**
 * Best alpha against width, log-log: per-width optima with their intervals, the fitted power law with its
 * interval band (from /dashboard/studies/{id}/width-fit.json), and the recommendation at the target width.
 */
export function widthPlot(div, rec, trend) {
  const P = plotly();
  const traces = [];
  const level = Math.round(100 * ((rec.interval && rec.interval.level) || 0.9));
  const perWidth = rec.per_width || [];
  for (const [param, style] of Object.entries(PARAM_STYLE)) {
    const t = trend && trend[param];
    const rgba = style.color === "#0072b2" ? "rgba(0,114,178,0.16)" : "rgba(230,159,0,0.20)";
    if (t) {
      traces.push({
        type: "scatter", mode: "lines", x: t.widths, y: t.hi, line: { width: 0 }, hoverinfo: "skip",
        showlegend: false, legendgroup: param,
      });
      traces.push({
        type: "scatter", mode: "lines", x: t.widths, y: t.lo, fill: "tonexty", fillcolor: rgba,
        line: { width: 0 }, name: `${style.label} ${level}% band`, legendgroup: param, hoverinfo: "skip",
      });
      traces.push({
        type: "scatter", mode: "lines", x: t.widths, y: t.center, legendgroup: param,
        name: `${style.label} fit: width^${t.exponent === null ? "?" : t.exponent.toFixed(2)}`,
        line: { color: style.color, width: 2, dash: style.dash },
        hovertemplate: `${style.label} fit<br>width %{x:.0f}<br>α0 %{y:.3g}<extra></extra>`,
      });
    }
    const pts = perWidth.filter((o) => o[param] > 0);
    if (pts.length) {
      const key = param === "alpha_attn" ? "interval_attn" : "interval_ffn";
      traces.push({
        type: "scatter", mode: "markers", name: `${style.label} per-width optimum`, legendgroup: param,
        x: pts.map((o) => o.width), y: pts.map((o) => o[param]),
        text: pts.map((o) => `depth ${o.depth}, ${o.n_completed} finished, ${o.method}`),
        error_y: {
          type: "data", symmetric: false, color: style.color, thickness: 1.5, width: 5,
          array: pts.map((o) => Math.max(0, (o[key][1] ?? o[param]) - o[param])),
          arrayminus: pts.map((o) => Math.max(0, o[param] - (o[key][0] ?? o[param]))),
        },
        marker: { symbol: style.symbol, size: 10, color: style.color, line: { color: "#000", width: 1 } },
        hovertemplate: `${style.label}<br>width %{x}<br>α0 %{y:.3g}<br>%{text}<extra></extra>`,
      });
    }
    const value = rec[param];
    const interval = rec.interval && rec.interval[param];
    if (value > 0) {
      traces.push({
        type: "scatter", mode: "markers", legendgroup: param,
        name: `${style.label} at target width ${rec.width}`,
        x: [rec.width], y: [value],
        error_y: interval && interval[0] > 0 ? {
          type: "data", symmetric: false, color: style.color, thickness: 2, width: 8,
          array: [Math.max(0, interval[1] - value)], arrayminus: [Math.max(0, value - interval[0])],
        } : undefined,
        marker: { symbol: param === "alpha_attn" ? "star" : "star-square", size: 18, color: style.color, line: { color: "#000", width: 1.5 } },
        hovertemplate: `recommended ${style.label}<br>width %{x}<br>α0 %{y:.3g}<extra></extra>`,
      });
    }
  }
  const layout = {
    font: FONT,
    margin: { l: 62, r: 10, t: 16, b: 40 },
    xaxis: {
      type: "log", title: { text: "width (d_model), log scale" }, tickmode: "array",
      tickvals: [...new Set([...(rec.proxy_widths || []), rec.width])], ticktext: [...new Set([...(rec.proxy_widths || []), rec.width])].map(String),
    },
    yaxis: { type: "log", title: { text: "best α0, log scale" }, exponentformat: "power" },
    legend: { orientation: "h", x: 0, y: -0.2, font: { size: 11 } },
    shapes: [{
      type: "line", xref: "x", yref: "paper", x0: rec.width, x1: rec.width, y0: 0, y1: 1,
      line: { color: "#5b6470", width: 1, dash: "dot" },
    }],
    annotations: [{
      xref: "x", yref: "paper", x: Math.log10(rec.width), y: 1, text: "target", showarrow: false,
      xanchor: "right", yanchor: "top", font: { size: 11, color: "#5b6470" },
    }],
  };
  P.react(div, compact(traces), layout, CONFIG);
}

/** Validation loss against step, one line per trial run; returns a function that highlights one trial. */
export function lossCurvesPlot(div, trials) {
  const P = plotly();
  const lanes = [...new Set(trials.map((t) => t.lane))];
  const dashes = ["solid", "dash", "dot", "dashdot", "longdash"];
  const traces = [];
  const index = new Map();
  trials.forEach((t, i) => {
    (t.runs || []).forEach((run, seed) => {
      const curve = run.val_curve || [];
      if (!curve.length) return;
      const lane = lanes.indexOf(t.lane);
      const bad = run.diverged || t.outcome === "diverged";
      index.set(`${t.lane}#${t.number}`, [...(index.get(`${t.lane}#${t.number}`) || []), traces.length]);
      traces.push({
        type: "scatter", mode: bad ? "lines+markers" : "lines",
        name: `${t.lane} #${t.number}${(t.runs || []).length > 1 ? ` seed ${seed}` : ""}`,
        legendgroup: t.lane,
        x: curve.map((p) => p[0]), y: curve.map((p) => p[1]),
        line: { color: OKABE_ITO[i % OKABE_ITO.length], width: 1.5, dash: bad ? "dot" : dashes[lane % dashes.length] },
        marker: bad ? { symbol: "x", size: 8 } : undefined,
        opacity: 0.85,
        hovertemplate: `${t.lane} #${t.number}<br>α_attn ${fmt(t.alpha_attn)}, α_ffn ${fmt(t.alpha_ffn)}` +
          `<br>step %{x}<br>val loss %{y:.4f}<extra>${bad ? "diverged" : t.outcome || t.state}</extra>`,
      });
    });
  });
  const layout = {
    font: FONT,
    margin: { l: 56, r: 10, t: 10, b: 44 },
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "val loss (nats/byte)" } },
    showlegend: traces.length <= 12,
    legend: { font: { size: 10 } },
  };
  P.react(div, compact(traces), layout, CONFIG);
  return (key) => {
    if (!traces.length) return;
    const chosen = new Set(index.get(key) || []);
    P.restyle(div, {
      "line.width": traces.map((_, i) => (chosen.has(i) ? 4 : 1.5)),
      opacity: traces.map((_, i) => (chosen.size === 0 || chosen.has(i) ? 0.95 : 0.25)),
    });
  };
}

// -- one trial's diagnostics (alphasearch/diagnostics.py, stored per run under runs[].diagnostics) --------

// Layer positions in forward order: attn L0, ffn L0, attn L1, ... final.
export function diagPositions(diag) {
  const first = (diag.input_rms && diag.input_rms.attn && diag.input_rms.attn[0]) || [];
  const out = [];
  for (let i = 0; i < first.length; i++) out.push(["attn", i], ["ffn", i]);
  out.push(["final", null]);
  return out;
}

const positionLabel = ([pos, i]) => (pos === "final" ? "final" : `${pos} L${i}`);

// The value of one position at eval step index s of a per-position series ({attn, ffn, final}).
function atPosition(series, s, [pos, i]) {
  const row = ((series || {})[pos] || [])[s];
  if (pos === "final") return row === undefined ? null : row;
  return row ? (row[i] === undefined ? null : row[i]) : null;
}

// Light (early) to dark (late) along Cividis: the legend names the step too, so colour is not alone.
function stepColour(k, n) {
  const a = [0xd9, 0xc8, 0x5c]; // light end (late Cividis)
  const b = [0x00, 0x22, 0x4e]; // dark end
  const t = n > 1 ? k / (n - 1) : 1;
  const c = a.map((x, j) => Math.round(x + (b[j] - x) * t));
  return `rgb(${c.join(",")})`;
}

const DIAG_LAYOUT = {
  font: FONT,
  margin: { l: 52, r: 10, t: 28, b: 104 },
  legend: { orientation: "h", x: 0, y: -0.3, yanchor: "top", font: { size: 10 } },
};

// One line per evaluation step across the layer positions (a depth profile that moves as training goes on).
function profilePlot(div, diag, key, title, yaxis) {
  const P = plotly();
  const positions = diagPositions(diag);
  const labels = positions.map(positionLabel);
  const steps = diag.steps || [];
  const traces = steps.map((step, s) => ({
    type: "scatter", mode: "lines+markers", name: `step ${step}`,
    x: labels, y: positions.map((p) => atPosition(diag[key], s, p)),
    line: { color: stepColour(s, steps.length), width: s === steps.length - 1 ? 2.5 : 1.5 },
    marker: { size: 5 },
    hovertemplate: `step ${step}<br>%{x}: %{y:.3g}<extra></extra>`,
  }));
  const empty = !traces.some((t) => t.y.some((v) => v !== null));
  const layout = {
    ...DIAG_LAYOUT,
    title: { text: title, font: { size: 12.5 }, x: 0.02, xanchor: "left" },
    xaxis: { type: "category", title: { text: "layer position (forward order)" }, tickfont: { size: 10 } },
    yaxis,
    showlegend: traces.length <= 10,
    annotations: empty ? [{ text: "no values: this norm has no alpha (RMSNorm / LayerNorm)", showarrow: false,
      xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#5b6470" } }] : [],
  };
  P.react(div, compact(empty ? [] : traces), layout, CONFIG);
  return !empty;
}

/** Fraction of DyT/Derf inputs with |alpha·x| above the saturation level, per layer, at each eval step. */
export function saturationPlot(div, diag) {
  const level = diag.saturation_level ?? 2;
  return profilePlot(div, diag, "saturation", `Saturation: share of |α·x| > ${level}`,
    { title: { text: "fraction saturated" }, range: [-0.02, 1.02] });
}

/** RMS of what enters each norm, per layer, at each eval step (log scale). */
export function inputRmsPlot(div, diag) {
  return profilePlot(div, diag, "input_rms", "Input RMS per layer", { title: { text: "RMS of norm input" }, type: "log" });
}

/** Learned alpha per norm against step, and the embedding scale (right axis). */
export function alphaPlot(div, diag) {
  const P = plotly();
  const steps = diag.steps || [];
  const traces = [];
  for (const p of diagPositions(diag)) {
    const y = steps.map((_, s) => atPosition(diag.alpha, s, p));
    if (!y.some((v) => v !== null)) continue;
    const [pos, i] = p;
    traces.push({
      type: "scatter", mode: "lines+markers", name: `α ${positionLabel(p)}`, x: steps, y,
      line: { color: pos === "final" ? "#000000" : OKABE_ITO[(i || 0) % (OKABE_ITO.length - 1)],
        dash: pos === "attn" ? "solid" : pos === "ffn" ? "dash" : "dot", width: 1.8 },
      marker: { size: 5, symbol: pos === "attn" ? "circle" : pos === "ffn" ? "square" : "diamond" },
      hovertemplate: `α ${positionLabel(p)}<br>step %{x}<br>%{y:.4g}<extra></extra>`,
    });
  }
  if ((diag.embed_scale || []).length) {
    traces.push({
      type: "scatter", mode: "lines+markers", name: "embed scale (right axis)", x: steps, y: diag.embed_scale,
      yaxis: "y2", line: { color: "#5b6470", width: 1.5, dash: "longdash" }, marker: { size: 5, symbol: "x" },
      hovertemplate: "embed scale<br>step %{x}<br>%{y:.4g}<extra></extra>",
    });
  }
  const layout = {
    ...DIAG_LAYOUT,
    title: { text: "α trajectories and embedding scale", font: { size: 12.5 }, x: 0.02, xanchor: "left" },
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "learned α" } },
    yaxis2: { title: { text: "embed scale" }, overlaying: "y", side: "right", showgrid: false, tickformat: ".4~g" },
    margin: { ...DIAG_LAYOUT.margin, r: 58 },
    showlegend: traces.length <= 12,
  };
  P.react(div, compact(traces), layout, CONFIG);
  return traces.length > 0;
}

/** Gradient norm (before clipping) at each eval step. */
export function gradNormPlot(div, diag) {
  const P = plotly();
  const traces = [{
    type: "scatter", mode: "lines+markers", name: "grad norm", x: diag.steps || [], y: diag.grad_norm || [],
    line: { color: OKABE_ITO[5], width: 2 }, marker: { size: 6 },
    hovertemplate: "step %{x}<br>grad norm %{y:.4g}<extra></extra>",
  }];
  const layout = {
    ...DIAG_LAYOUT,
    title: { text: "Gradient norm (before clipping)", font: { size: 12.5 }, x: 0.02, xanchor: "left" },
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "‖g‖" }, rangemode: "tozero" },
    showlegend: false,
  };
  P.react(div, compact(traces), layout, CONFIG);
  return (diag.grad_norm || []).length > 0;
}
