"""GET /recommendations pools only studies whose proxies were trained the same way (issue 14 item 5), on
SQLite and PostgreSQL. The studies are stored as the scheduler stores a finished one (crud.new_study +
crud.store_result), with per-width optima from the real analysis of synthetic trials, so no training runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from alphasearch.analysis import SearchSpace, TrialPoint, recommend, width_optimum
from alphasearch.spec import StudySpec
from service import crud

SPACE = SearchSpace(attn=(0.05, 4.0), ffn=(0.02, 4.0))


def _optima(seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for w in (32, 64, 128):
        pts = [
            TrialPoint(a, f, 2 + 0.05 * math.log(a / (2 * w**-0.5)) ** 2 + 0.05 * math.log(f / w**-0.5) ** 2
                       + rng.normal(0, 0.01), "completed", w, 4)
            for a in np.exp(rng.uniform(np.log(0.05), np.log(4), 20)) for f in [float(np.exp(rng.uniform(np.log(0.02), np.log(4))))]
        ]  # fmt: skip
        out.append(width_optimum(pts, space=SPACE, n_boot=50))
    return out


def _store(client: TestClient, seed: int, **overrides: Any) -> str:
    spec = StudySpec.from_dict({"preset": "quick", "target_depth": 32, **overrides})
    optima = _optima(seed)
    rec = recommend(optima, target_width=spec.target_width, target_depth=32, space=SPACE)
    with client.app.state.sessions() as s, s.begin():
        study = crud.new_study(spec=spec)
        study.status = "completed"
        s.add(study)
        s.flush()
        crud.store_result(s, study_id=study.id, recommendation=rec.to_dict(), report={},
                          optima=[o.to_dict() for o in optima], figures={})  # fmt: skip
        return study.id


@pytest.fixture(scope="class")
def stored(client: TestClient) -> dict[str, str]:
    return {
        "a": _store(client, 1, target_width=4096),
        "b": _store(client, 2, target_width=4096),
        "lr": _store(client, 3, target_width=4096, lr=3e-3),  # another lr: not pooled with a and b
        "other_target": _store(client, 4, target_width=1024),  # width_matched init of another width
        "fixed": _store(client, 5, target_width=1024, init_scaling="fixed"),  # fixed init: any query width
    }


class TestPooledByRegime:
    def test_only_studies_trained_alike_are_pooled_and_the_rest_say_why(self, client, stored) -> None:
        r = client.get("/api/v1/recommendations", params={"width": 4096, "depth": 32, "embed_scale": "unit_rms"})
        assert r.status_code == 200, r.text
        rec = r.json()
        assert sorted(rec["studies"]) == sorted([stored["a"], stored["b"]])
        assert rec["pooling"]["regime"]["init_scaling"] == "width_matched"
        assert rec["pooling"]["regime"]["init_reference_width"] == 4096 and rec["pooling"]["regime"]["lr"] == 1e-2
        why = {row["study"]: row["reason"] for row in rec["left_out"]}
        assert set(why) == {stored["lr"], stored["other_target"], stored["fixed"]}
        assert "target width 1024" in why[stored["other_target"]] and "width_matched" in why[stored["other_target"]]
        assert "lr 0.003 (pooled: 0.01)" in why[stored["lr"]]
        assert "init_scaling \"fixed\" (pooled: \"width_matched\")" in why[stored["fixed"]]
        assert rec["evidence"] in ("sufficient", "insufficient") and isinstance(rec["next_steps"], list)

    def test_a_width_matched_study_only_speaks_for_its_own_target_width(self, client, stored) -> None:
        rec = client.get("/api/v1/recommendations", params={"width": 1024, "depth": 32}).json()
        assert rec["studies"] in ([stored["other_target"]], [stored["fixed"]])  # two regimes of one study each
        left = {row["study"] for row in rec["left_out"]}
        assert {stored["a"], stored["b"], stored["lr"]} <= left
        # No width_matched study was trained for 2048, one fixed-init study was: it alone answers.
        rec = client.get("/api/v1/recommendations", params={"width": 2048, "depth": 32}).json()
        assert rec["studies"] == [stored["fixed"]] and rec["pooling"]["regime"]["init_scaling"] == "fixed"

    def test_no_study_trained_for_the_width_is_a_404_that_says_why(self, client, stored) -> None:
        with client.app.state.sessions() as s, s.begin():
            s.get(crud.Study, stored["fixed"]).status = "failed"
        client.app.state.pooled.invalidate()
        r = client.get("/api/v1/recommendations", params={"width": 2048, "depth": 32})
        assert r.status_code == 404
        body = r.json()
        assert "trained for width 2048" in body["detail"]
        assert {row["study"] for row in body["left_out"]} == {stored["a"], stored["b"], stored["lr"], stored["other_target"]}


def test_proxies_that_follow_the_target_lr_pool_only_with_the_same_scaled_lrs():
    """Under target_lr + lr_rule inverse_width a proxy's lr is target_lr x target_width / width: two such
    studies for different targets trained their proxies at different lrs and are not pooled."""
    from service.pooled import regime, select_studies

    def study(width: int, **kw: Any) -> Any:
        spec = StudySpec.from_dict({"preset": "quick", "target_width": width, "target_depth": 32,
                                    "init_scaling": "fixed", "target_lr": 3e-4, **kw})  # fmt: skip
        return crud.new_study(spec=spec)

    a, b, same = study(1024), study(2048), study(2048, lr_rule="same")
    assert regime(a.spec)["lr_reference_width"] == 1024 and "lr_reference_width" not in regime(same.spec)
    chosen, left_out, pooled = select_studies([(a, None), (b, None), (study(1024), None)], width=4096)
    assert [s.spec["target_width"] for s, _ in chosen] == [1024, 1024] and pooled["target_lr"] == 3e-4
    assert [r["study"] for r in left_out] == [b.id] and "lr_reference_width 2048 (pooled: 1024)" in left_out[0]["reason"]
