"""The study page's validation panel in a real browser (as tests/dashboard/test_browser.py): on the finished
smoke study, a bad width is refused with the field named, then a validation at width 96 (1 seed, 7 runs of
4 steps) is started from the page, trained by the server's scheduler, and its regret table shows."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import TOKEN, screenshot

pytestmark = pytest.mark.timeout(600)


def test_a_validation_started_on_the_study_page_shows_its_regret(page, console, server, finished_study) -> None:
    assert finished_study["status"] == "completed", server.tail()
    study_id = finished_study["id"]
    page.goto(f"{server.url}/#/study/{study_id}")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#validation-section #validations[data-loaded=true]")
    assert page.locator("#validation-width").get_attribute("placeholder") == "128"  # twice the widest proxy

    console.expect("422")  # the refused request, logged by the browser
    page.fill("#validation-width", "64")
    page.click("#start-validation")
    page.wait_for_selector("#validation-section .notice.error")
    assert "width: 64 is not larger than the widest proxy (64)" in page.locator("#validation-section .notice.error").inner_text()

    page.fill("#validation-width", "96")
    page.fill("#validation-seeds", "1")
    page.click("#start-validation")
    card = page.locator(".validation[data-status=completed]")
    card.wait_for(timeout=540_000)  # generous: on a loaded 2-core box a queued study may hold the scheduler
    [stored] = server.client.get(f"/studies/{study_id}/validations").json()["data"]
    assert (stored["status"], stored["width"], stored["seeds"]) == ("completed", 96, 1)
    rows = card.locator("table.validation-points tbody tr")
    assert rows.count() == len(stored["result"]["points"]) == 7
    assert card.locator("text=★ best").count() == 1
    best = stored["result"]["best"]["label"]
    assert "★ best" in card.locator(f"tr[data-label='{best}']").inner_text()
    regret = card.locator("ul.regret li")
    assert regret.count() == 3
    rec = stored["regret"]["recommended"]
    assert f"{rec['nats']:.4f} nats" in card.locator("li[data-role='recommended']").inner_text()
    assert "7/7" in card.locator(".progress").inner_text()
    screenshot(page, "validation")
    assert console.unexpected() == []
