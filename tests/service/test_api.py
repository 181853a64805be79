"""Every endpoint, against SQLite and PostgreSQL (one class, two backends via the `backend` fixture).

The class shares one app (with its embedded scheduler, in-process executor) and one tiny study that
trains while the other tests run; tests that need it finished wait for it.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import TINY, wait_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture(scope="class")
def submitted(client: TestClient) -> str:
    r = client.post("/api/v1/studies", json={**TINY, "name": "tiny"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.fixture(scope="class")
def finished(client: TestClient, submitted: str) -> dict[str, Any]:
    study = wait_for(client, submitted, FINISHED)
    assert study["status"] == "completed", study["error"]
    return study


def field_of(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["detail"]]


class TestAPI:
    # -- submission ------------------------------------------------------------------------------------
    def test_submit_returns_202_with_the_resolved_spec(self, client: TestClient, submitted: str) -> None:
        study = client.get(f"/api/v1/studies/{submitted}").json()
        assert study["id"] == submitted and study["name"] == "tiny"
        assert study["status"] in ("queued", "running", "completed")
        assert study["spec"]["proxy_widths"] == [32, 64] and study["spec"]["trials_per_width"] == 4
        assert study["progress"]["trials_total"] == 8
        assert study["links"]["recommendation"].endswith(f"/studies/{submitted}/recommendation")

    def test_minimal_spec_of_the_design_is_accepted(self, client: TestClient) -> None:
        r = client.post("/api/v1/studies", json={"preset": "smoke", "target_width": 4096, "target_depth": 32})
        assert r.status_code == 202, r.text
        assert client.post(f"/api/v1/studies/{r.json()['id']}/cancel").status_code == 200

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({**TINY, "target_width": 48}, "proxy_widths"),  # proxy width >= target
            ({**TINY, "proxy_widths": [48]}, "proxy_widths"),  # not a multiple of head_dim
            ({**TINY, "target_width": 0}, "target_width"),  # out of range
            ({**TINY, "tokens_per_trial": 10**12}, "tokens_per_trial"),  # absurd budget
            ({**TINY, "max_total_tokens": 10**15}, "max_total_tokens"),  # lifting the preset's cap
            ({**TINY, "colour": "red"}, "colour"),  # unknown field
            ({**TINY, "target_depth": "deep"}, "target_depth"),  # wrong type
            ({"preset": "smoke", "target_width": 1024}, "target_depth"),  # missing
            ({**TINY, "sampler": "bayes"}, "sampler"),  # not a choice
            ({**TINY, "corpus": "/no/such/file.txt"}, "corpus"),
        ],
        ids=["proxy>=target", "heads", "range", "budget", "cap", "unknown", "type", "missing", "choice", "corpus"],
    )
    def test_invalid_spec_is_422_naming_the_field_and_fix(self, client: TestClient, body: dict, field: str) -> None:
        r = client.post("/api/v1/studies", json=body)
        assert r.status_code == 422, r.text
        assert field in field_of(r)
        assert all(e["message"] for e in r.json()["detail"])

    def test_malformed_json_is_422_not_500(self, client: TestClient) -> None:
        r = client.post("/api/v1/studies", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422

    def test_idempotency_key_returns_the_first_study(self, client: TestClient) -> None:
        body = {**TINY, "name": "idem"}
        first = client.post("/api/v1/studies", json=body, headers={"Idempotency-Key": "k-study-1"})
        again = client.post("/api/v1/studies", json=body, headers={"Idempotency-Key": "k-study-1"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = client.post("/api/v1/studies", json={**body, "seeds": 2}, headers={"Idempotency-Key": "k-study-1"})
        assert other.status_code == 422 and field_of(other) == ["Idempotency-Key"]
        named = client.get("/api/v1/studies", params={"limit": 1000}).json()["data"]
        assert sum(s["name"] == "idem" for s in named) == 1
        client.post(f"/api/v1/studies/{first.json()['id']}/cancel")

    def test_body_size_limit_is_413(self, client: TestClient) -> None:
        r = client.post("/api/v1/studies", json={**TINY, "name": "x" * 100_000})
        assert r.status_code == 413

    # -- listing, cancelling, not found ----------------------------------------------------------------
    def test_list_filters_and_paginates(self, client: TestClient, submitted: str) -> None:
        page = client.get("/api/v1/studies", params={"limit": 1}).json()
        assert len(page["data"]) == 1 and page["count"] >= 1
        queued = client.get("/api/v1/studies", params={"status": "cancelled"}).json()
        assert all(s["status"] == "cancelled" for s in queued["data"])
        assert client.get("/api/v1/studies", params={"status": "sleeping"}).status_code == 422
        assert client.get("/api/v1/studies", params={"limit": 0}).status_code == 422

    def test_cancel_then_cancel_again_is_409(self, client: TestClient) -> None:
        study = client.post("/api/v1/studies", json={**TINY, "name": "to-cancel"}).json()
        r = client.post(f"/api/v1/studies/{study['id']}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested"]
        assert wait_for(client, study["id"], FINISHED)["status"] == "cancelled"
        again = client.post(f"/api/v1/studies/{study['id']}/cancel")
        assert again.status_code == 409 and "cancelled" in again.json()["detail"]

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("get", "/api/v1/studies/{id}"),
            ("post", "/api/v1/studies/{id}/cancel"),
            ("get", "/api/v1/studies/{id}/trials"),
            ("get", "/api/v1/studies/{id}/recommendation"),
            ("get", "/api/v1/studies/{id}/heatmaps"),
            ("get", "/api/v1/studies/{id}/heatmaps/64.png"),
            ("get", "/api/v1/studies/{id}/width-fit.png"),
            ("get", "/api/v1/batches/{id}"),
        ],
    )
    @pytest.mark.parametrize("unknown", ["0123456789abcdef", "no such id!"])
    def test_unknown_ids_are_404(self, client: TestClient, method: str, path: str, unknown: str) -> None:
        r = getattr(client, method)(path.replace("{id}", unknown))
        assert r.status_code == 404, r.text

    def test_results_of_an_unfinished_study_are_409(self, client: TestClient) -> None:
        study = client.post("/api/v1/studies", json={**TINY, "name": "unfinished"}).json()
        client.post(f"/api/v1/studies/{study['id']}/cancel")
        for suffix in ("recommendation", "heatmaps", "heatmaps/32.png"):
            assert client.get(f"/api/v1/studies/{study['id']}/{suffix}").status_code == 409

    # -- batches ---------------------------------------------------------------------------------------
    def test_batch_json_queues_every_study(self, client: TestClient) -> None:
        body = {"name": "sweep", "studies": [{**TINY, "target_width": w, "name": f"b{w}"} for w in (512, 2048)]}
        r = client.post("/api/v1/batches", json=body, headers={"Idempotency-Key": "k-batch-1"})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert batch["name"] == "sweep" and len(batch["study_ids"]) == 2
        assert [s["target_width"] for s in batch["studies"]] == [512, 2048]
        again = client.post("/api/v1/batches", json=body, headers={"Idempotency-Key": "k-batch-1"})
        assert again.json()["id"] == batch["id"] and again.headers["Idempotent-Replayed"] == "true"
        got = client.get(f"/api/v1/batches/{batch['id']}").json()
        assert got["study_ids"] == batch["study_ids"]
        listed = client.get("/api/v1/studies", params={"batch_id": batch["id"]}).json()
        assert listed["count"] == 2
        for sid in batch["study_ids"]:
            client.post(f"/api/v1/studies/{sid}/cancel")

    def test_batch_yaml_upload(self, client: TestClient) -> None:
        text = "name: uploaded\nstudies:\n  - {preset: smoke, target_width: 1024, target_depth: 8, name: up1}\n"
        r = client.post("/api/v1/batches", files={"file": ("batch.yaml", text.encode(), "application/yaml")})
        assert r.status_code == 202, r.text
        assert r.json()["name"] == "uploaded" and r.json()["studies"][0]["name"] == "up1"
        raw = client.post("/api/v1/batches", content=text.encode(), headers={"content-type": "application/yaml"})
        assert raw.status_code == 202
        for sid in r.json()["study_ids"] + raw.json()["study_ids"]:
            client.post(f"/api/v1/studies/{sid}/cancel")

    def test_batch_is_all_or_nothing_with_an_error_per_bad_entry(self, client: TestClient) -> None:
        before = client.get("/api/v1/studies").json()["count"]
        entries = [TINY, {**TINY, "target_width": 48}, TINY, {**TINY, "sampler": "bayes"}, "not a spec"]
        r = client.post("/api/v1/batches", json={"studies": entries})
        assert r.status_code == 422
        errors = r.json()["detail"]
        assert [(e["index"], e["field"]) for e in errors] == [(1, "proxy_widths"), (3, "sampler"), (4, "spec")]
        assert client.get("/api/v1/studies").json()["count"] == before  # nothing stored

    def test_batch_limits(self, client: TestClient) -> None:
        too_many = client.post("/api/v1/batches", json={"studies": [TINY] * 6})  # the test server allows 5
        assert too_many.status_code == 422 and "at most 5" in too_many.json()["detail"][0]["message"]
        empty = client.post("/api/v1/batches", json={"studies": []})
        assert empty.status_code == 422
        broken = client.post("/api/v1/batches", files={"file": ("b.yaml", b"studies: [: nope", "text/yaml")})
        assert broken.status_code == 422
        assert client.post("/api/v1/batches", content=b"x", headers={"content-type": "image/png"}).status_code == 415

    # -- a finished study ------------------------------------------------------------------------------
    def test_study_completes_with_progress_and_a_recommendation(self, client: TestClient, finished: dict) -> None:
        progress = finished["progress"]
        assert progress["trials_done"] == progress["trials_total"] == 8 and progress["fraction"] == 1.0
        assert {lane["label"] for lane in progress["lanes"]} == {"w32 d2", "w64 d2"}
        assert finished["started_at"] and finished["finished_at"]
        rec = client.get(f"/api/v1/studies/{finished['id']}/recommendation").json()
        for key in ("width", "depth", "norm", "alpha_attn", "alpha_ffn", "alpha_final", "interval", "fit",
                    "proxy_widths", "extrapolation_factor", "warnings", "studies"):  # fmt: skip
            assert key in rec, key
        assert rec["width"] == 1024 and rec["depth"] == 8 and rec["studies"] == [finished["id"]]
        assert rec["proxy_widths"] == [32, 64] and rec["extrapolation_factor"] == 16.0
        assert 0 < rec["alpha_attn"] and set(rec["interval"]) >= {"alpha_attn", "alpha_ffn", "alpha_final", "level"}

    def test_trials_paginated_and_csv(self, client: TestClient, finished: dict) -> None:
        sid = finished["id"]
        everything = client.get(f"/api/v1/studies/{sid}/trials", params={"limit": 1000}).json()
        assert everything["count"] == 8
        done = [t for t in everything["data"] if t["state"] == "COMPLETE"]
        assert len(done) == 8 and all(t["outcome"] in ("completed", "diverged") for t in done)
        assert all(t["alpha_attn"] and t["duration_s"] is not None for t in done)
        page = client.get(f"/api/v1/studies/{sid}/trials", params={"limit": 3, "offset": 6}).json()
        assert page["count"] == 8 and len(page["data"]) == 2
        assert page["data"] == everything["data"][6:8]
        r = client.get(f"/api/v1/studies/{sid}/trials", params={"format": "csv"})
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 8 and {r["lane"] for r in rows} == {"w32-d2", "w64-d2"}
        assert float(rows[0]["alpha_attn"]) > 0

    def test_heatmaps_json_and_png(self, client: TestClient, finished: dict) -> None:
        sid = finished["id"]
        maps = client.get(f"/api/v1/studies/{sid}/heatmaps").json()
        keys = {m["key"] for m in maps["data"]}
        assert {"w32-d2", "w64-d2"} <= keys
        for m in maps["data"]:
            assert len(m["grid"]["loss"]) == len(m["grid"]["alpha_ffn"])
            png = client.get(m["png_url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content.startswith(PNG_SIGNATURE) and len(png.content) > 1000
        assert client.get(f"/api/v1/studies/{sid}/heatmaps/64.png").content.startswith(PNG_SIGNATURE)
        if "extrapolated" in keys:
            extra = client.get(f"/api/v1/studies/{sid}/heatmaps/extrapolated.png")
            assert extra.content.startswith(PNG_SIGNATURE)
        assert client.get(f"/api/v1/studies/{sid}/heatmaps/128.png").status_code == 404
        assert client.get(f"/api/v1/studies/{sid}/width-fit.png").content.startswith(PNG_SIGNATURE)

    def test_pooled_recommendations(self, client: TestClient, finished: dict) -> None:
        # The study's proxies copy the init of its target width 1024 (width_matched): it answers for 1024 ...
        r = client.get("/api/v1/recommendations", params={"width": 1024, "depth": 64})
        assert r.status_code == 200, r.text
        rec = r.json()
        assert rec["width"] == 1024 and rec["depth"] == 64 and rec["norm"] == "dyt"
        assert finished["id"] in rec["studies"] and rec["extrapolation_factor"] == 16.0
        assert rec["pooling"]["regime"]["init_reference_width"] == 1024
        again = client.get("/api/v1/recommendations", params={"width": 1024, "depth": 64})
        assert again.content == r.content
        # ... and is left out, with the reason, at another width.
        other = client.get("/api/v1/recommendations", params={"width": 8192, "depth": 64})
        assert other.status_code == 404 and finished["id"] in {s["study"] for s in other.json()["left_out"]}
        assert client.get("/api/v1/recommendations", params={"width": 8192, "depth": 64, "norm": "derf"}).status_code == 404
        assert client.get("/api/v1/recommendations", params={"width": 0, "depth": 64}).status_code == 422
        assert client.get("/api/v1/recommendations", params={"depth": 64}).status_code == 422

    def test_finished_study_cannot_be_cancelled(self, client: TestClient, finished: dict) -> None:
        r = client.post(f"/api/v1/studies/{finished['id']}/cancel")
        assert r.status_code == 409 and "completed" in r.json()["detail"]

    # -- operations ------------------------------------------------------------------------------------
    def test_healthz(self, client: TestClient) -> None:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "scheduler": "running"}

    def test_metrics(self, client: TestClient, finished: dict) -> None:
        text = client.get("/metrics").text
        assert 'alphasearch_studies{status="completed"}' in text
        assert "alphasearch_queue_depth" in text
        assert 'alphasearch_trials{state="COMPLETE"}' in text
        count = next(line for line in text.splitlines() if line.startswith("alphasearch_trial_duration_seconds_count"))
        assert float(count.split()[-1]) >= 8

    def test_migrations_match_the_models(self, client: TestClient, backend: str) -> None:
        """`alembic upgrade head` ran at start-up and yields exactly the models' schema (Optuna's tables
        beside it are left alone)."""
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext
        from sqlalchemy import inspect

        from service.db import make_engine
        from service.migrations_util import VERSION_TABLE, include_object
        from service.models import Base

        engine = make_engine(backend)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True,
                                                         "include_object": include_object})  # fmt: skip
            assert compare_metadata(ctx, Base.metadata) == []
            assert ctx.get_current_revision() is not None
            tables = set(inspect(conn).get_table_names())
        engine.dispose()
        assert {"app_studies", "app_batches", "app_results", "app_figures", "app_alembic_version"} <= tables

    def test_openapi_lists_the_design_endpoints(self, client: TestClient) -> None:
        paths = set(client.get("/openapi.json").json()["paths"])
        for path in ("/api/v1/studies", "/api/v1/studies/{study_id}", "/api/v1/studies/{study_id}/cancel",
                     "/api/v1/studies/{study_id}/trials", "/api/v1/studies/{study_id}/recommendation",
                     "/api/v1/studies/{study_id}/heatmaps", "/api/v1/studies/{study_id}/heatmaps/{width}.png",
                     "/api/v1/batches", "/api/v1/batches/{batch_id}", "/api/v1/recommendations", "/healthz",
                     "/metrics"):  # fmt: skip
            assert path in paths, path

