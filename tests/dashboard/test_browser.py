"""The dashboard in a real browser (Debian's chromium via Playwright) against a real server.

One smoke study is run to completion first (conftest.finished_study); the tests then look at it the way a
user does: pages load without console errors, every heatmap and the width plot draw real Plotly elements,
the copy buttons give the recommendation, a batch upload queues studies, and cancel stops a running study.
Screenshots land in artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import LONG, TOKEN, VIEWPORT, Server, screenshot

pytestmark = pytest.mark.timeout(420)

DESIGN_KEYS = {"width", "depth", "norm", "alpha_attn", "alpha_ffn", "alpha_final", "interval", "fit",
               "proxy_widths", "extrapolation_factor", "warnings", "studies"}  # fmt: skip


def _completed(study: dict[str, Any], server: Server) -> str:
    assert study["status"] == "completed", f"the smoke study did not complete: {study}\n{server.tail()}"
    return study["id"]


def _save_token(page: Any) -> None:
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#token-state:has-text('saved')")
    assert page.evaluate("localStorage.getItem('alphasearch.token')") == TOKEN


def _clipboard(page: Any) -> str:
    try:
        return page.evaluate("navigator.clipboard.readText()")
    except Exception:  # no clipboard in this browser build: the page keeps what it copied
        return page.evaluate("window.alphasearch.lastCopied")


def test_studies_page_lists_the_finished_study(page, console, server, finished_study) -> None:
    study_id = _completed(finished_study, server)
    page.goto(f"{server.url}/")
    row = page.locator(f"tr[data-study-id='{study_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "completed"
    assert "completed" in row.inner_text() and "16/16" in row.inner_text()
    assert page.locator("#token-form").is_visible(), "the server requires a token: the field must show"
    screenshot(page, "studies")
    assert console.unexpected() == []


def test_study_page_renders_every_heatmap_and_the_width_plot(page, console, server, finished_study) -> None:
    study_id = _completed(finished_study, server)
    heatmaps = server.client.get(f"/studies/{study_id}/heatmaps").json()["data"]
    rec = server.client.get(f"/studies/{study_id}/recommendation").json()
    trials = server.client.get(f"/studies/{study_id}/trials", params={"limit": 1000}).json()
    assert {h["key"] for h in heatmaps} >= {"w32-d2", "w64-d2", "extrapolated"}

    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#results[data-loaded=true]")
    page.wait_for_selector("#trials-section[data-loaded=true]")

    panels = page.locator(".heatmap-panel")
    assert panels.count() == len(heatmaps)
    for h in heatmaps:
        panel = page.locator(f".heatmap-panel[data-key='{h['key']}']")
        assert panel.locator(".heatmaplayer image").count() >= 1, f"{h['key']}: no heatmap drawn"
        points = panel.locator(".scatterlayer .point").count()
        assert points >= len(h["grid"]["completed"]), (
            f"{h['key']}: {points} markers for {len(h['grid']['completed'])} trials"
        )
        if h["extrapolated"]:
            assert "EXTRAPOLATED" in panel.inner_text()
            assert "EXTRAPOLATED" in (panel.locator(".gtitle").text_content() or "")
        else:
            assert points >= 1 and "EXTRAPOLATED" not in panel.inner_text()

    width = page.locator("#width-plot")
    n_optima = 2 * len(rec["per_width"])  # alpha_attn and alpha_ffn at each proxy width
    assert width.locator(".scatterlayer .point").count() >= n_optima + 2  # + the two target stars
    assert width.locator(".scatterlayer .js-fill").count() >= 1, "no interval band"
    assert width.locator(".scatterlayer .js-line").count() >= 2, "no fit lines"

    card = page.locator("#recommendation")
    assert f"width {rec['width']}, depth {rec['depth']}" in card.inner_text()
    assert page.locator("#warnings li").count() == len(rec["warnings"])

    assert page.locator("table.trials tbody tr").count() == trials["count"] == 16
    assert page.locator("#loss-curves .scatterlayer .trace").count() >= trials["count"]
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"], (
        "horizontal scroll at 1366 px"
    )
    screenshot(page, "study-laptop", full_page=False)
    screenshot(page, "study")
    page.locator("table.trials tbody tr").first.click()  # highlights its curve
    assert page.locator("table.trials tbody tr.selected").count() == 1
    assert console.unexpected() == []


def test_copy_buttons_give_the_recommendation(page, console, server, finished_study) -> None:
    study_id = _completed(finished_study, server)
    rec = server.client.get(f"/studies/{study_id}/recommendation").json()
    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#results[data-loaded=true]")

    page.click("#copy-json")
    page.wait_for_selector("#toast:has-text('Copied')")
    copied = json.loads(_clipboard(page))
    assert set(copied) == DESIGN_KEYS
    assert copied["alpha_attn"] == pytest.approx(rec["alpha_attn"])
    assert copied["alpha_ffn"] == pytest.approx(rec["alpha_ffn"])
    assert copied["interval"] == rec["interval"]

    page.click("#copy-flags")
    flags = _clipboard(page)
    m = re.fullmatch(
        r"--attn_alpha_init_value (\S+) --ffn_alpha_init_value (\S+) --dec_alpha_init_value (\S+)", flags
    )
    assert m, flags
    for text, key in zip(m.groups(), ("alpha_attn", "alpha_ffn", "alpha_final"), strict=True):
        assert float(text) == pytest.approx(rec[key], rel=5e-3)  # 3 significant digits
    assert page.locator("#flags-preview").inner_text() == flags
    assert console.unexpected() == []


def test_batch_upload_creates_studies(page, console, server, tmp_path: Path) -> None:
    page.goto(f"{server.url}/#/batch")
    _save_token(page)

    bad = tmp_path / "bad.yaml"
    bad.write_text("studies:\n  - {preset: smoke, target_width: 1024, target_depth: 8}\n"
                   "  - {preset: smoke, target_width: 1024}\n")  # fmt: skip
    console.expect("422")  # the rejected upload's response, logged by the browser
    page.set_input_files("#batch-file", str(bad))
    page.click("#batch-submit")
    errors = page.locator("#batch-errors")
    errors.locator("li").first.wait_for()
    assert "studies[1]" in errors.inner_text() and "target_depth" in errors.inner_text()

    good = tmp_path / "good.yaml"
    good.write_text("name: browser-batch\nstudies:\n"
                    "  - {preset: smoke, target_width: 1024, target_depth: 8, name: upload-a}\n"
                    "  - {preset: smoke, target_width: 2048, target_depth: 16, norm: derf, name: upload-b}\n")  # fmt: skip
    page.set_input_files("#batch-file", str(good))
    page.click("#batch-submit")
    page.wait_for_url(re.compile(r".*#/batch/[A-Za-z0-9_-]+$"))
    page.wait_for_selector("#batch-studies[data-loaded=true]")
    batch_id = page.url.rsplit("/", 1)[1]
    batch = server.client.get(f"/batches/{batch_id}").json()
    try:
        assert batch["name"] == "browser-batch"
        assert sorted(s["name"] for s in batch["studies"]) == ["upload-a", "upload-b"]
        rows = page.locator("#batch-studies tbody tr")
        assert rows.count() == 2
        assert {rows.nth(i).get_attribute("data-study-id") for i in range(2)} == set(batch["study_ids"])
        screenshot(page, "batch")
        assert console.unexpected() == []
    finally:
        for sid in batch["study_ids"]:  # keep the scheduler free for the cancel test
            server.client.post(f"/studies/{sid}/cancel")


def test_cancel_button_stops_a_running_study(page, console, server, finished_study) -> None:
    _completed(finished_study, server)
    long = server.submit(LONG)
    total = long["progress"]["trials_total"]
    page.goto(f"{server.url}/")
    _save_token(page)
    row = page.locator(f"tr[data-study-id='{long['id']}']")
    row.wait_for()
    # Live updates, no reload: the row turns running and its trial count moves.
    page.wait_for_selector(f"tr[data-study-id='{long['id']}'][data-status=running]", timeout=60_000)
    page.wait_for_function(
        "([id, total]) => { const r = document.querySelector(`tr[data-study-id='${id}']`);"
        " return r && /[1-9]\\d*\\//.test(r.querySelector('.progress').innerText) }",
        arg=[long["id"], total],
        timeout=300_000,  # generous: on a loaded 2-core box earlier queued studies can hold the scheduler
    )
    screenshot(page, "studies-running", full_page=False)

    row.locator("a").first.click()
    button = page.locator("#cancel-study")
    button.wait_for()
    assert button.is_enabled()
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    page.wait_for_selector("#study-header[data-status=cancelled]", timeout=120_000)
    assert page.locator("#cancel-study").count() == 0
    assert server.client.get(f"/studies/{long['id']}").json()["status"] == "cancelled"
    screenshot(page, "cancelled")
    assert console.unexpected() == []


def test_heatmap_marks_each_outcome_with_its_own_shape(page, console, server, finished_study) -> None:
    """Diverged and stalled trials (none in the smoke study) drawn from its real grid: X and triangle markers."""
    study_id = _completed(finished_study, server)
    grid = next(
        h["grid"]
        for h in server.client.get(f"/studies/{study_id}/heatmaps").json()["data"]
        if h["key"] == "w64-d2"
    )
    grid = {**grid, "diverged": [[3.0, 3.0], [2.0, 3.5]], "stalled": [[0.06, 0.03]]}
    page.goto(f"{server.url}/#/batch")  # any page: it loads Plotly and the modules
    page.wait_for_selector("#batch-upload")
    shapes = page.evaluate(
        """async (grid) => {
            const { heatmapPlot } = await import("/dashboard/static/plots.js");
            const div = document.createElement("div");
            div.style.cssText = "width:600px;height:420px";
            document.body.append(div);
            heatmapPlot(div, grid);
            return div.data.filter((t) => t.type === "scatter")
                .map((t) => [t.name, t.marker.symbol, t.x.length]);
        }""",
        grid,
    )
    by_name = {name: (symbol, n) for name, symbol, n in shapes}
    assert by_name["diverged (X)"] == ("x", 2)
    assert by_name["stalled (▼)"] == ("triangle-down", 1)
    assert by_name["trial (finished)"] == ("circle", len(grid["completed"]))
    assert len({symbol for symbol, _ in by_name.values()}) == len(by_name), "two marker kinds share a shape"
    assert console.unexpected() == []
