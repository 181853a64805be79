"""The dashboard in a real browser (Debian's chromium via Playwright) against a real server.

One smoke study is run to completion first (conftest.finished_study); the tests then look at it the way a
user does: pages load without console errors, every heatmap and the width plot draw real Plotly elements,
the copy buttons give the recommendation, a click on a trial opens its outcome and diagnostics charts, a
batch upload queues studies, and cancel stops a running study.
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
               "proxy_widths", "extrapolation_factor", "warnings", "studies", "evidence", "next_steps"}  # fmt: skip


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


def test_not_enough_evidence_shows_no_number_in_large_type(page, console, server, finished_study) -> None:
    """The smoke study (2 proxy widths, 8 trials each) cannot give an interval to act on: the card says so
    and lists what to run; the tentative values are in small type, no flags are offered."""
    study_id = _completed(finished_study, server)
    rec = server.client.get(f"/studies/{study_id}/recommendation").json()
    assert rec["evidence"] == "insufficient" and rec["next_steps"]
    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#results[data-loaded=true]")
    card = page.locator("#recommendation")
    assert card.locator(".value").all_inner_texts() == ["Not enough evidence"]
    assert page.locator("#next-steps li").all_inner_texts() == rec["next_steps"]
    assert card.locator("td.tentative").count() == 3 and "tentative" in card.locator("td.tentative").first.inner_text()
    assert page.locator("#flags-preview").count() == 0 and page.locator("#copy-flags").is_disabled()
    page.click("#copy-json")
    page.wait_for_selector("#toast:has-text('Copied')")
    assert json.loads(_clipboard(page))["evidence"] == "insufficient"
    screenshot(page, "study-insufficient", full_page=False)
    assert console.unexpected() == []


def test_copy_buttons_give_the_recommendation(page, console, server, finished_study) -> None:
    """With enough evidence (the smoke study's own JSON, its evidence flag set: no CPU-sized study in a test
    earns it) the values show in large type and the flags can be copied."""
    study_id = _completed(finished_study, server)
    rec = {**server.client.get(f"/studies/{study_id}/recommendation").json(), "evidence": "sufficient"}
    page.route(f"**/api/v1/studies/{study_id}/recommendation",
               lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(rec)))  # fmt: skip
    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#results[data-loaded=true]")
    assert page.locator("#recommendation td.value").count() == 3 and page.locator("#insufficient").count() == 0

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


def _profile(diag: dict[str, Any], key: str, s: int) -> list[float | None]:
    """Values of a per-position series at eval step index s, in the page's forward order (attn/ffn per layer, final)."""
    out: list[float | None] = []
    for i in range(len(diag[key]["attn"][s])):
        out += [diag[key]["attn"][s][i], diag[key]["ffn"][s][i]]
    return out + [diag[key]["final"][s]]


def _chart_data(page: Any, chart_id: str) -> list[dict[str, Any]]:
    """What Plotly actually drew in one chart: each trace's name, x, y and axis."""
    return page.evaluate(
        """(id) => (document.getElementById(id).data || []).map((t) => ({name: t.name, x: t.x, y: t.y,
                                                                           yaxis: t.yaxis || "y"}))""",
        chart_id,
    )


def _assert_close(got: list[Any], want: list[Any], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} values drawn, {len(want)} stored"
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or g == pytest.approx(w, rel=1e-6, abs=1e-9), (
            f"{what}: {got} != {want}"
        )


def _assert_trial_view(page: Any, trial: dict[str, Any]) -> None:
    key = f"{trial['lane']}#{trial['number']}"
    page.locator(f"table.trials tbody tr[data-key='{key}']").click()
    page.wait_for_selector(f"#trial-detail[data-key='{key}'][data-rendered=true]")
    badge = page.locator("#trial-outcome")
    assert badge.inner_text().strip() == trial["outcome"]
    assert badge.get_attribute("data-outcome") == trial["outcome"]
    assert f"#{trial['number']}" in page.locator("#trial-detail h2").inner_text()

    diag = trial["runs"][0]["diagnostics"]
    steps = diag["steps"]
    # Drawn for real: every chart has SVG traces with points on the page.
    for chart in ("diag-saturation", "diag-rms", "diag-alpha", "diag-grad"):
        assert page.locator(f"#{chart} .scatterlayer .trace").count() >= 1, f"{chart}: nothing drawn"
        assert page.locator(f"#{chart} .scatterlayer .point").count() >= len(steps), f"{chart}: no points"

    # And with this trial's numbers: one depth profile per eval step for saturation and input RMS ...
    for chart, key_ in (("diag-saturation", "saturation"), ("diag-rms", "input_rms")):
        traces = _chart_data(page, chart)
        assert [t["name"] for t in traces] == [f"step {s}" for s in steps]
        for s, t in enumerate(traces):
            _assert_close(t["y"], _profile(diag, key_, s), f"{chart} step {steps[s]}")
    # ... one trajectory per learned alpha, the embedding scale on the right axis ...
    alpha = {t["name"]: t for t in _chart_data(page, "diag-alpha")}
    depth = len(diag["alpha"]["attn"][0])
    for i in range(depth):
        for pos in ("attn", "ffn"):
            t = alpha[f"α {pos} L{i}"]
            assert t["x"] == steps
            _assert_close(t["y"], [row[i] for row in diag["alpha"][pos]], f"alpha {pos} L{i}")
    _assert_close(alpha["α final"]["y"], diag["alpha"]["final"], "alpha final")
    assert alpha["embed scale (right axis)"]["yaxis"] == "y2"
    _assert_close(alpha["embed scale (right axis)"]["y"], diag["embed_scale"], "embed scale")
    # ... and the gradient norm.
    [grad] = _chart_data(page, "diag-grad")
    assert grad["x"] == steps
    _assert_close(grad["y"], diag["grad_norm"], "grad norm")


def test_trial_view_shows_the_outcome_and_that_trials_diagnostics(
    page, console, server, finished_study
) -> None:
    study_id = _completed(finished_study, server)
    trials = server.client.get(f"/studies/{study_id}/trials", params={"limit": 1000}).json()["data"]
    with_diag = [t for t in trials if t["runs"] and t["runs"][0]["diagnostics"].get("steps")]
    assert len(with_diag) >= 2, "the smoke study's trials carry no diagnostics"
    # Two trials with different alphas (different lanes): the view must follow the click, not keep the first.
    first = with_diag[0]
    second = next(t for t in reversed(with_diag) if t["lane"] != first["lane"])
    assert first["runs"][0]["diagnostics"]["grad_norm"] != second["runs"][0]["diagnostics"]["grad_norm"]

    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#trials-section[data-loaded=true]")
    assert page.locator("#trial-detail").is_hidden(), "the trial view opens on a click, not before"
    _assert_trial_view(page, first)
    screenshot(page, "trial-view")
    _assert_trial_view(page, second)
    assert page.locator("table.trials tbody tr.selected").count() == 1
    assert console.unexpected() == []


def test_trial_view_badges_other_outcomes_and_an_rmsnorm_run(page, console, server, finished_study) -> None:
    """Outcomes the smoke study does not produce, from its real trials with the server's answer edited on
    the way to the page: diverged and stalled get their own badge, glyph and step; an RMSNorm run (no alpha)
    gets a saturation chart that says so instead of an empty plot."""
    study_id = _completed(finished_study, server)
    edited: list[str] = []

    def edit(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        a, b, c = body["data"][:3]
        edited[:] = [f"{t['lane']}#{t['number']}" for t in (a, b, c)]
        a.update(outcome="diverged", diverged_at_step=3, value=None)
        b.update(outcome="stalled")
        b["runs"][0]["stalled_at_step"] = 2
        c["norm"] = "rmsnorm"
        diag = c["runs"][0]["diagnostics"]
        for key in ("saturation", "alpha"):
            diag[key] = {"attn": [[None] * len(r) for r in diag[key]["attn"]],
                         "ffn": [[None] * len(r) for r in diag[key]["ffn"]],
                         "final": [None] * len(diag[key]["final"])}  # fmt: skip
        route.fulfill(response=response, json=body)

    page.route(re.compile(rf".*/api/v1/studies/{study_id}/trials\?.*"), edit)
    page.goto(f"{server.url}/#/study/{study_id}")
    page.wait_for_selector("#trials-section[data-loaded=true]")
    assert len(edited) == 3

    expected = {
        edited[0]: ("diverged", "✕", r"diverged at step\s*3"),
        edited[1]: ("stalled", "▼", r"stalled at step\s*2"),
    }
    for key, (outcome, glyph, fact) in expected.items():
        page.locator(f"table.trials tbody tr[data-key='{key}']").click()
        page.wait_for_selector(f"#trial-detail[data-key='{key}'][data-rendered=true]")
        badge = page.locator("#trial-outcome")
        assert badge.inner_text().strip() == outcome and badge.get_attribute("data-glyph") == glyph
        assert "outcome-badge" in (badge.get_attribute("class") or "") and outcome in badge.get_attribute(
            "class"
        )
        assert re.search(fact, page.locator("#trial-detail .kv").inner_text()), fact
        assert (
            page.locator(f"table.trials tbody tr[data-key='{key}'] .outcome").inner_text().strip() == outcome
        )

    rms = edited[2]
    page.locator(f"table.trials tbody tr[data-key='{rms}']").click()
    page.wait_for_selector(f"#trial-detail[data-key='{rms}'][data-rendered=true]")
    assert page.locator("#diag-saturation .scatterlayer .trace").count() == 0
    assert "no alpha" in (page.locator("#diag-saturation .annotation-text").text_content() or "")
    assert page.locator("#diag-rms .scatterlayer .trace").count() >= 1  # RMS is measured for every norm
    names = [t["name"] for t in _chart_data(page, "diag-alpha")]
    assert names == ["embed scale (right axis)"], names
    assert console.unexpected() == []
