"""GET /recommendations: one recommendation at any (width, depth) from every finished study that matches.

How studies are pooled (the documented contract):
- A study matches when it COMPLETED and ran the same model family: `norm`, `attention` and `embed_scale`
  (the proxy parametrisation) equal the query's.
- Only studies whose proxies were TRAINED THE SAME WAY are pooled (issue 14): the optimum depends on the
  recipe, not only on width. A study's regime is its `init_scaling` (under "width_matched" the proxies copy
  the init of the study's target width, so such a study only speaks for a query at that width), its lr
  rule (`lr`, `lr_falls_above_width`, `regimes`; or `target_lr` with its `lr_rule`, and under
  "inverse_width" the target width the proxy lrs scale from; `target_tokens`),
  and its budget (`tokens_per_trial`, `batch_size`, `seq_len`, `warmup_steps`). Of the studies that fit
  the query width, the largest group sharing one regime is pooled (ties: the group of the lowest study id).
  `left_out` lists every other study of the family with the reason; `pooling.regime` names the regime.
  With no study left, the answer is a 404 whose `left_out` says why.
- The per-width optima (each with its bootstrap interval) of the pooled studies are refitted with
  `alphasearch.analysis.recommend` at the requested (width, depth), over the union of their search
  spaces. Pooling beats picking one study: every proxy width measured anywhere tightens the width trend,
  and a random-effects fit absorbs the scatter between studies. `studies` lists every study that
  contributed.
- Answers are cached per (family, width, depth, set of contributing studies); the set is re-read at most
  every `recommendations_ttl_s` (default 1 s) and at once when this process's own scheduler finishes a
  study. A cache hit costs no database query and no analysis. When the set's TTL runs out, one request
  re-reads it while the others keep getting the previous answer (stale-while-revalidate, bounded by
  REFRESH_TIMEOUT_S), so 50 polling clients do not all hit the database in the same millisecond.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from alphasearch.cache import json_safe
from service import crud

# How a study's proxies were trained: studies pooled together must agree on all of these.
REGIME_FIELDS = (
    "init_scaling", "lr", "lr_falls_above_width", "regimes", "target_lr", "target_tokens", "lr_rule",
    "tokens_per_trial", "batch_size", "seq_len", "warmup_steps",
)  # fmt: skip
_UNSET = {"lr_falls_above_width": 0, "regimes": {}, "lr_rule": "inverse_width"}  # older specs lack these
MAX_CACHED = 1024
REFRESH_TIMEOUT_S = 5.0  # a refresh older than this is presumed dead; the next request retries it


def _optimum(data: dict[str, Any]) -> Any:
    from alphasearch.analysis import WidthOptimum

    known = {f.name for f in dataclasses.fields(WidthOptimum)}
    values = {k: v for k, v in data.items() if k in known}
    values["interval_attn"] = tuple(values["interval_attn"])
    values["interval_ffn"] = tuple(values["interval_ffn"])
    return WidthOptimum(**values)


def regime(spec: dict[str, Any]) -> dict[str, Any]:
    """How a study's proxies were trained (REGIME_FIELDS), with the init's reference width."""
    out = {f: spec.get(f, _UNSET.get(f)) for f in REGIME_FIELDS}
    out["init_scaling"] = spec.get("init_scaling") or "fixed"  # the only init before the field existed
    if out["init_scaling"] == "width_matched":
        out["init_reference_width"] = spec.get("target_width")
    if out["target_lr"] is None:
        out.pop("lr_rule")  # unused without target_lr
    elif out["lr_rule"] == "inverse_width":  # proxy lr = target_lr * target_width / width
        out["lr_reference_width"] = spec.get("target_width")
    return out


def _differs(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]
    return ", ".join(f"{k} {json.dumps(a.get(k), sort_keys=True)} (pooled: {json.dumps(b.get(k), sort_keys=True)})" for k in keys)


def select_studies(rows: list[tuple[Any, Any]], *, width: int) -> tuple[list[tuple[Any, Any]], list[dict[str, str]], dict | None]:
    """Split (Study, StudyResult) rows into those pooled for a query at `width`, the left-out ones with their
    reasons, and the pooled regime (see the module docstring)."""
    left_out, fits = [], []
    for study, result in rows:
        r = regime(study.spec)
        if r["init_scaling"] == "width_matched" and r["init_reference_width"] != width:
            left_out.append({
                "study": study.id,
                "reason": f"its proxies copy the init of target width {r['init_reference_width']} (init_scaling "
                          f"width_matched), not of width {width}; ask for width {r['init_reference_width']}, or "
                          f"run a study with target_width {width}",
            })  # fmt: skip
        else:
            fits.append((study, result, r))
    groups: dict[str, list[tuple[Any, Any, dict]]] = {}
    for row in fits:
        key = {k: v for k, v in row[2].items() if k != "init_reference_width"}  # equal to the query width here
        groups.setdefault(json.dumps(key, sort_keys=True), []).append(row)
    if not groups:
        return [], left_out, None
    chosen = min(groups.values(), key=lambda g: (-len(g), min(s.id for s, _, _ in g)))
    pooled_regime = chosen[0][2]
    for group in groups.values():
        if group is chosen:
            continue
        for study, _, r in group:
            left_out.append({
                "study": study.id,
                "reason": f"trained differently from the {len(chosen)} pooled stud{'y' if len(chosen) == 1 else 'ies'}: "
                          + _differs(r, pooled_regime),
            })  # fmt: skip
    return [(s, res) for s, res, _ in chosen], left_out, pooled_regime


def pooled_recommendation(rows: list[tuple[Any, Any]], *, width: int, depth: int, norm: str) -> dict[str, Any]:
    """rows: (Study, StudyResult) of the matching studies -> the DESIGN §7 recommendation JSON (with `left_out`
    and `pooling`), or {"left_out": [...]} when no study fits the query."""
    from alphasearch.analysis import SearchSpace, recommend

    chosen, left_out, pooled_regime = select_studies(rows, width=width)
    optima, ids = [], []
    attn_lo, attn_hi, ffn_lo, ffn_hi = [], [], [], []
    for study, result in chosen:
        try:
            optima.extend(_optimum(o) for o in result.optima)
        except (KeyError, TypeError, ValueError):  # stored by an older analysis: leave it out, say so
            left_out.append({"study": study.id, "reason": "its stored analysis is from an older version"})
            continue
        ids.append(study.id)
        attn_lo.append(study.spec["alpha_attn_range"][0])
        attn_hi.append(study.spec["alpha_attn_range"][1])
        ffn_lo.append(study.spec["alpha_ffn_range"][0])
        ffn_hi.append(study.spec["alpha_ffn_range"][1])
    if not optima:
        return {"left_out": left_out}
    space = SearchSpace(attn=(min(attn_lo), max(attn_hi)), ffn=(min(ffn_lo), max(ffn_hi)))
    rec = recommend(optima, target_width=width, target_depth=depth, norm=norm, space=space, study_ids=ids)
    data = json_safe(rec.to_dict())
    data["left_out"] = left_out
    data["pooling"] = {"regime": pooled_regime, "studies": ids}
    if left_out:
        data["warnings"].append(
            f"Left out {len(left_out)} stud{'y' if len(left_out) == 1 else 'ies'} of this model family whose proxies "
            "were trained differently or for another target width (see left_out)."
        )
    return data


class PooledRecommendations:
    """Thread-safe cache of pooled answers as ready-to-send JSON bytes."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self.sessions, self.ttl_s = sessions, ttl_s
        self._ids: dict[tuple[str, str, str], tuple[float, tuple[str, ...]]] = {}
        self._answers: OrderedDict[tuple[Any, ...], tuple[int, bytes]] = OrderedDict()
        self._refreshing: dict[tuple[str, str, str], float] = {}  # family -> when its refresh began
        self._flights: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def invalidate(self, *_: Any) -> None:
        with self._lock:
            self._ids.clear()

    def _family_ids(self, family: tuple[str, str, str]) -> tuple[str, ...]:
        with self._lock:
            flight = self._flights.setdefault(family, threading.Lock())
        with flight:  # single flight: concurrent misses wait for one database read
            now = time.monotonic()
            with self._lock:
                seen = self._ids.get(family)
            if seen is not None and now - seen[0] < self.ttl_s:
                return seen[1]
            return self._read_ids(family, now)

    def _read_ids(self, family: tuple[str, str, str], now: float) -> tuple[str, ...]:
        try:
            with self.sessions() as s:
                ids = tuple(crud.completed_family(s, norm=family[0], attention=family[1], embed_scale=family[2]))
            with self._lock:
                self._ids[family] = (now, ids)
        finally:
            with self._lock:
                self._refreshing.pop(family, None)
        return ids

    def cached(
        self, *, width: int, depth: int, norm: str, attention: str, embed_scale: str
    ) -> tuple[int, bytes] | None:
        """(status, body) if it can be given without the database or the analysis (safe on the event loop)."""
        family = (norm, attention, embed_scale)
        now = time.monotonic()
        with self._lock:
            seen = self._ids.get(family)
            if seen is None:
                return None
            answer = self._answers.get((family, width, depth, seen[1]))
            if now - seen[0] < self.ttl_s:
                return answer
            began = self._refreshing.get(family)
            if answer is not None and began is not None and now - began < REFRESH_TIMEOUT_S:
                return answer  # someone is re-reading the set: the previous answer stands meanwhile
            self._refreshing[family] = now  # this caller refreshes (see _family_ids)
            return None

    def get(self, *, width: int, depth: int, norm: str, attention: str, embed_scale: str) -> tuple[int, bytes] | None:
        """(200, the answer as JSON bytes); (404, why no study of the family fits); None: no finished study."""
        family = (norm, attention, embed_scale)
        ids = self._family_ids(family)
        if not ids:
            return None
        key = (family, width, depth, ids)
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None:
                self._answers.move_to_end(key)
                return cached
        with self.sessions() as s:
            rows = crud.results_of(s, study_ids=list(ids))
            data = pooled_recommendation(rows, width=width, depth=depth, norm=norm)
        if not data:
            return None
        if "width" not in data:  # every study of the family was left out
            detail = (
                f"no completed study's proxies were trained for width {width}: "
                + "; ".join(f"{r['study']}: {r['reason']}" for r in data["left_out"])
            )
            data = {"detail": detail, "left_out": data["left_out"]}
        answer = (200 if "width" in data else 404, json.dumps(data, separators=(",", ":")).encode())
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > MAX_CACHED:
                self._answers.popitem(last=False)
        return answer
