"""alphasearch.plots renders PNGs of heatmaps (measured and extrapolated) and of the width fit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alphasearch.analysis import TrialPoint, extrapolated_heatmap, heatmap_grid, recommend
from tests.alphasearch.test_analysis import SPACE, optima_of, synth

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def points() -> list[TrialPoint]:
    unstable = [TrialPoint(9.0, 4.0, None, "diverged", 64, 4), TrialPoint(0.04, 0.02, None, "stalled", 64, 4)]
    return synth(0) + unstable


def test_importing_analysis_and_plots_loads_neither_matplotlib_nor_torch():
    code = "import sys, alphasearch.analysis, alphasearch.plots; print(sorted({'matplotlib', 'torch', 'optuna'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_heatmap_png_returns_png_bytes_and_writes_the_file(points, tmp_path):
    from alphasearch.plots import heatmap_png

    grid = heatmap_grid([p for p in points if p.width == 64], space=SPACE, n=15)
    assert grid.diverged and grid.stalled
    data = heatmap_png(grid, tmp_path / "w64.png")
    assert data.startswith(PNG) and 10_000 < len(data) < 2_000_000
    assert (tmp_path / "w64.png").read_bytes() == data
    assert heatmap_png(grid, None).startswith(PNG)


def test_extrapolated_heatmap_png_renders(points, tmp_path):
    from alphasearch.plots import heatmap_png

    grid = extrapolated_heatmap(points, space=SPACE, target_width=65536, target_depth=4, n=15)
    data = heatmap_png(grid, str(tmp_path / "target.png"))
    assert data.startswith(PNG) and len(data) > 10_000 and (tmp_path / "target.png").exists()


def test_heatmap_png_without_a_surface_still_shows_the_trials():
    from alphasearch.plots import heatmap_png

    sparse = heatmap_grid(synth(1, widths=(64,), n=3), space=SPACE, n=5)
    assert sparse.optimum is None and heatmap_png(sparse).startswith(PNG)


def test_width_fit_png_renders_the_fit_and_the_one_width_fallback(points, tmp_path):
    from alphasearch.plots import width_fit_png

    optima = optima_of(points)
    rec = recommend(optima, target_width=8192, target_depth=4, space=SPACE)
    data = width_fit_png(optima, rec.fits, rec, tmp_path / "fit.png")
    assert data.startswith(PNG) and 20_000 < len(data) < 2_000_000
    assert (tmp_path / "fit.png").read_bytes() == data
    one = optima[:1]
    rec1 = recommend(one, target_width=8192, target_depth=4, space=SPACE)
    assert width_fit_png(one, rec1.fits, rec1, None).startswith(PNG)
