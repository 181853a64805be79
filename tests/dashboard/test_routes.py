"""The dashboard's own routes, without a browser: the page, Plotly's bundle, config, the width-fit band."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.dashboard import trend_lines
from service.settings import Settings


def _client(tmp_path: Path, **overrides: object) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, executor="inprocess", scheduler=False, **overrides)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


def test_index_is_served_at_root_with_local_assets_only(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/static/app.js">' in r.text
    assert "{{PLOTLY_VERSION}}" not in r.text
    assert "http://" not in r.text and "https://" not in r.text, "no CDN: every asset comes from this server"
    for asset in (
        "app.js",
        "api.js",
        "ui.js",
        "plots.js",
        "pages/study.js",
        "pages/studies.js",
        "pages/batch.js",
        "style.css",
    ):
        assert client.get(f"/dashboard/static/{asset}").status_code == 200, asset


def test_plotly_bundle_comes_from_the_installed_package(client: TestClient) -> None:
    import plotly

    raw = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    plain = client.get("/dashboard/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == raw
    zipped = client.get("/dashboard/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip" and zipped.content == raw  # httpx decodes it
    assert len(gzip.compress(raw)) < len(raw) / 2


def test_dashboard_routes_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]


def test_config_says_whether_writes_need_a_token(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/dashboard/config.json").json()["token_required"] is False
    for secured in _client(tmp_path / "secured", api_token="s3cret"):
        body = secured.get("/dashboard/config.json").json()
        assert body["token_required"] is True and "s3cret" not in str(body)


def test_width_fit_of_an_unknown_study_is_404(client: TestClient) -> None:
    assert client.get("/dashboard/studies/nope/width-fit.json").status_code == 404


def _optimum(width: int, attn: float, ffn: float) -> dict[str, object]:
    return {"width": width, "depth": 4, "alpha_attn": attn, "alpha_ffn": ffn, "interval_attn": [attn / 1.3, attn * 1.3],
            "interval_ffn": [ffn / 1.3, ffn * 1.3], "predicted_loss": 2.0, "best_trial_loss": 2.0, "n_completed": 12,
            "n_diverged": 0, "n_stalled": 0, "on_edge": [], "method": "quadratic", "residual_std": 0.01,
            "replicate_std": None, "lack_of_fit": 0.0, "level": 0.9, "n_pruned": 0, "n_failed": 0}  # fmt: skip


def test_trend_lines_follow_the_power_law_and_widen_away_from_the_proxies() -> None:
    per_width = [_optimum(w, 2.0 * (w / 64) ** -0.5, 0.8 * (w / 64) ** -0.7) for w in (64, 128, 256)]
    rec = {"width": 4096, "depth": 4, "interval": {"level": 0.9}, "per_width": per_width}
    lines = trend_lines(rec)
    assert set(lines) == {"alpha_attn", "alpha_ffn"}
    attn = lines["alpha_attn"]
    assert attn["exponent"] == pytest.approx(-0.5, abs=1e-6)
    assert attn["widths"][0] < 64 and attn["widths"][-1] > 4096
    i = min(range(len(attn["widths"])), key=lambda k: abs(attn["widths"][k] - 128))
    assert attn["center"][i] == pytest.approx(2.0 * (attn["widths"][i] / 64) ** -0.5, rel=1e-6)
    band = [h / lo for lo, h in zip(attn["lo"], attn["hi"], strict=True)]
    assert band[-1] > band[i], "the band must widen when extrapolating"


def test_trend_lines_need_two_widths() -> None:
    assert (
        trend_lines(
            {"width": 4096, "depth": 4, "interval": {"level": 0.9}, "per_width": [_optimum(64, 1, 1)]}
        )
        == {}
    )
    assert trend_lines({"width": 4096, "depth": 4, "per_width": [{"width": 64}]}) == {}
