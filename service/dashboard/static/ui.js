// Small DOM and formatting helpers. Text always goes in through textContent, never innerHTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// 3 significant digits, the precision the interval supports; "—" for no value.
export function fmtAlpha(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return String(Number(x.toPrecision(3)));
}

export function fmtLoss(x) {
  return x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(4);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function fmtWhen(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const ago = (Date.now() - d.getTime()) / 1000;
  if (ago >= 0 && ago < 3600 * 20) return `${fmtDuration(ago)} ago`;
  return d.toLocaleString();
}

const STATUS_GLYPH = { queued: "◷", running: "▶", completed: "✓", failed: "✕", cancelled: "⊘" };

export function statusBadge(status, cancelRequested = false) {
  const text = cancelRequested && (status === "running" || status === "queued") ? `${status}, cancelling` : status;
  return el("span", { class: `status ${status}`, dataset: { glyph: STATUS_GLYPH[status] || "?", status } }, text);
}

export const OUTCOME_GLYPH = { completed: "●", diverged: "✕", stalled: "▼", pruned: "✂", failed: "!", running: "▶",
  stale: "↻", interrupted: "↻", cancelled: "■" };

export function progressBar(progress) {
  const pct = Math.round(100 * (progress.fraction || 0));
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct },
    el("div", { class: "bar" }, el("span", { style: `width:${pct}%` })),
    el("span", { class: "mono" }, `${progress.trials_done}/${progress.trials_total}`),
  );
}

export function notice(kind, text) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "note" }, text);
}

let toastTimer = null;
export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 2600);
}

// Repeats `fn` every `ms` until it returns false or the returned stop() is called; skips hidden tabs.
export function poll(fn, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    if (!document.hidden) again = (await fn()) !== false;
    if (!stopped && again) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Clipboard with a fallback for plain-http deployments (no Clipboard API outside secure contexts).
// The last copied text is also kept on window.alphasearch.lastCopied, for scripts and browser tests.
export async function copyText(text) {
  window.alphasearch = window.alphasearch || {};
  window.alphasearch.lastCopied = text;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* permission denied: fall through to the selection copy */
    }
  }
  const area = el("textarea", { readonly: true, style: "position:fixed;left:-9999px;top:0" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}
