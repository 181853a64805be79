"""GET /recommendations: one recommendation at any (width, depth) from every finished study that matches.

How studies are pooled (the documented contract):
- A study matches when it COMPLETED and ran the same model family: `norm`, `attention` and `embed_scale`
  (the proxy parametrisation) equal the query's. Its target width/depth does not matter: a study's
  per-width optima measure the proxies, whatever target it was submitted for.
- The per-width optima (each with its bootstrap interval) of all matching studies are pooled and refitted
  with `alphasearch.analysis.recommend` at the requested (width, depth), over the union of their search
  spaces. Pooling beats picking one study: every proxy width measured anywhere tightens the width trend,
  and a random-effects fit absorbs the scatter between studies. `studies` lists every study that
  contributed; a warning says when they trained under different budgets (tokens, lr, batch, seq_len).
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

BUDGET_FIELDS = ("tokens_per_trial", "lr", "batch_size", "seq_len", "seeds", "warmup_steps")
MAX_CACHED = 1024
REFRESH_TIMEOUT_S = 5.0  # a refresh older than this is presumed dead; the next request retries it


def _optimum(data: dict[str, Any]) -> Any:
    from alphasearch.analysis import WidthOptimum

    known = {f.name for f in dataclasses.fields(WidthOptimum)}
    values = {k: v for k, v in data.items() if k in known}
    values["interval_attn"] = tuple(values["interval_attn"])
    values["interval_ffn"] = tuple(values["interval_ffn"])
    return WidthOptimum(**values)


def pooled_recommendation(rows: list[tuple[Any, Any]], *, width: int, depth: int, norm: str) -> dict[str, Any]:
    """rows: (Study, StudyResult) of the matching studies -> the DESIGN §7 recommendation JSON."""
    from alphasearch.analysis import SearchSpace, recommend

    optima, skipped, ids = [], [], []
    attn_lo, attn_hi, ffn_lo, ffn_hi = [], [], [], []
    for study, result in rows:
        try:
            optima.extend(_optimum(o) for o in result.optima)
        except (KeyError, TypeError, ValueError):  # stored by an older analysis: leave it out, say so
            skipped.append(study.id)
            continue
        ids.append(study.id)
        attn_lo.append(study.spec["alpha_attn_range"][0])
        attn_hi.append(study.spec["alpha_attn_range"][1])
        ffn_lo.append(study.spec["alpha_ffn_range"][0])
        ffn_hi.append(study.spec["alpha_ffn_range"][1])
    if not optima:
        return {}
    space = SearchSpace(attn=(min(attn_lo), max(attn_hi)), ffn=(min(ffn_lo), max(ffn_hi)))
    rec = recommend(optima, target_width=width, target_depth=depth, norm=norm, space=space, study_ids=ids)
    data = json_safe(rec.to_dict())
    used = [study for study, _ in rows if study.id in ids]
    differing = [f for f in BUDGET_FIELDS if len({json.dumps(s.spec.get(f)) for s in used}) > 1]
    if differing:
        data["warnings"].append(
            f"Pooled {len(used)} studies that trained their proxies differently ({', '.join(differing)} differ); "
            "optima can shift with the training budget, so treat the interval as optimistic."
        )
    if skipped:
        data["warnings"].append(f"Left out studies {', '.join(skipped)}: their stored analysis is from an older version.")
    return data


class PooledRecommendations:
    """Thread-safe cache of pooled answers as ready-to-send JSON bytes."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self.sessions, self.ttl_s = sessions, ttl_s
        self._ids: dict[tuple[str, str, str], tuple[float, tuple[str, ...]]] = {}
        self._answers: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
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

    def cached(self, *, width: int, depth: int, norm: str, attention: str, embed_scale: str) -> bytes | None:
        """The answer if it can be given without the database or the analysis (safe on the event loop)."""
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

    def get(self, *, width: int, depth: int, norm: str, attention: str, embed_scale: str) -> bytes | None:
        """The answer as JSON bytes, or None when no finished study matches."""
        family = (norm, attention, embed_scale)
        ids = self._family_ids(family)
        if not ids:
            return None
        key = (family, width, depth, ids)
        with self._lock:
            body = self._answers.get(key)
            if body is not None:
                self._answers.move_to_end(key)
                return body
        with self.sessions() as s:
            rows = crud.results_of(s, study_ids=list(ids))
            data = pooled_recommendation(rows, width=width, depth=depth, norm=norm)
        if not data:
            return None
        body = json.dumps(data, separators=(",", ":")).encode()
        with self._lock:
            self._answers[key] = body
            while len(self._answers) > MAX_CACHED:
                self._answers.popitem(last=False)
        return body
