"""The CLI's recommendation text: with insufficient evidence it says so, lists the next steps and offers no
flags to copy; with enough evidence it prints the flags."""

from __future__ import annotations

from rich.console import Console

from alphasearch.analysis import recommend
from service.render import print_recommendation
from tests.alphasearch.test_analysis import SPACE, optima_of, synth


def _text(rec: dict) -> str:
    console = Console(record=True, width=200)
    print_recommendation(console, rec)
    return console.export_text()


def test_insufficient_evidence_is_said_with_the_next_steps_and_no_flags():
    rec = recommend(optima_of(synth(23, widths=(32, 64), n=8)), target_width=16384, target_depth=4, space=SPACE)
    d = rec.to_dict()
    assert d["evidence"] == "insufficient"
    text = _text(d)
    assert text.startswith("Not enough evidence for alpha0 at width 16384") and "tentative alpha0" in text
    assert text.count("next step:") == len(d["next_steps"]) and "DyT reference flags" not in text
    assert _text({**d, "evidence": "sufficient"}).count("DyT reference flags: --attn_alpha_init_value") == 1
