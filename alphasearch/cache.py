"""Content-addressed cache of finished training runs, shared by every study on this machine.

A run is identified by `TrialRequest.key()` (model config, train config incl. seed and alphas, corpus
bytes, training-code hash). Only runs that ended on their own are cached — completed or diverged, both
deterministic results — never pruned or cancelled ones, whose outcome depended on the caller.

    >>> cache = ResultCache(tmp_path)  # doctest: +SKIP
    >>> cache.get(key) is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from alphasearch.train import TrainResult


class ResultCache:
    """One JSON file per key under `root`, written atomically (safe with concurrent writers)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> TrainResult | None:
        try:
            data = json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return TrainResult.from_dict(data)

    def put(self, key: str, result: TrainResult) -> bool:
        """Store `result` if it is cacheable; return whether it was stored."""
        if result.stopped is not None:
            return False
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(json_safe(result.to_dict()), fh)
        os.replace(tmp, path)
        return True


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (e.g. the alphas of a diverged run) by None so the JSON stays standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
