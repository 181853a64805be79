"""From a study's trials in the database to what the user reads: recommendation, optima, heatmaps.

Reads the Optuna studies the driver wrote (search.py documents the trial attributes), turns each seed
of each trial into an `analysis.TrialPoint`, and runs the analysis. Used by the CLI and the service alike,
so `result.json` and the REST answers agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from alphasearch import analysis
from alphasearch.backtest import leave_widest_out
from alphasearch.cache import json_safe
from alphasearch.errors import AlphaSearchError
from alphasearch.search import make_storage, optuna_study_name
from alphasearch.spec import StudySpec


@dataclass
class StudyReport:
    """Everything analysed for one study; `to_dict()` is result.json."""

    spec: StudySpec
    study_id: str
    points: list[analysis.TrialPoint]
    baselines: dict[str, list[float]]  # "w64-d4" -> RMSNorm final val losses
    optima: list[Any]
    recommendation: Any
    heatmaps: dict[str, Any]  # "w64-d4" -> HeatmapGrid, plus "extrapolated"
    fits: dict[str, Any]
    backtest: dict[str, Any] | None = None  # alphasearch.backtest.leave_widest_out: in the recommendation JSON

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "study_id": self.study_id,
                "spec": self.spec.to_dict(),
                "recommendation": self.recommendation_dict(),
                "per_width": [_optimum_dict(o, self.baselines) for o in self.optima],
                "heatmaps": {k: g.to_dict() for k, g in self.heatmaps.items()},
                "n_trials": len({(p.width, p.depth, p.alpha_attn, p.alpha_ffn) for p in self.points}),
            }
        )

    def recommendation_dict(self) -> dict[str, Any]:
        """The DESIGN §7 recommendation JSON, plus this study's leave-widest-out `backtest`."""
        data = self.recommendation.to_dict()
        if self.backtest is not None:
            data["backtest"] = self.backtest
        return data

    def write(self, out: str | Path) -> list[Path]:
        """Write result.json, one heatmap PNG per proxy width, the extrapolated one and the width fit."""
        from alphasearch import plots

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "result.json"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2))
        for key, grid in self.heatmaps.items():
            path = out / f"heatmap_{key}.png"
            plots.heatmap_png(grid, path)
            written.append(path)
        path = out / "width_fit.png"
        plots.width_fit_png(self.optima, self.fits, self.recommendation, path)
        written.append(path)
        return written


def trial_points(spec: StudySpec, study_id: str, storage_url: str) -> tuple[list[analysis.TrialPoint], dict]:
    """Every seed of every finished DyT trial as a TrialPoint, and the RMSNorm baseline losses."""
    storage = make_storage(storage_url)
    points: list[analysis.TrialPoint] = []
    baselines: dict[str, list[float]] = {}
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            study = _load(storage, optuna_study_name(study_id, width, depth))
            for t in study.get_trials(deepcopy=False) if study else []:
                points.extend(_points_of(t, width, depth))
            if spec.rmsnorm_baseline:
                base = _load(storage, optuna_study_name(study_id, width, depth, baseline=True))
                losses = [
                    loss
                    for t in (base.get_trials(deepcopy=False) if base else [])
                    if t.user_attrs.get("outcome") == "completed"
                    for loss in t.user_attrs.get("seed_losses", [])
                    if loss is not None
                ]
                baselines[f"w{width}-d{depth}"] = losses
    return points, baselines


def lane_spaces(spec: StudySpec, study_id: str, storage_url: str) -> dict[str, analysis.SearchSpace]:
    """"w64-d4" -> the box that lane searched: the spec's, or the union of its grid passes when the search
    extended it (StudySpec.extend_box; the boxes are stored with the lane's Optuna study)."""
    storage = make_storage(storage_url)
    out = {}
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            study = _load(storage, optuna_study_name(study_id, width, depth))
            boxes = (study.user_attrs.get("boxes") if study else None) or [[spec.alpha_attn_range, spec.alpha_ffn_range]]
            out[f"w{width}-d{depth}"] = analysis.SearchSpace(
                attn=(min(b[0][0] for b in boxes), max(b[0][1] for b in boxes)),
                ffn=(min(b[1][0] for b in boxes), max(b[1][1] for b in boxes)),
            )
    return out


def _load(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _points_of(trial: optuna.trial.FrozenTrial, width: int, depth: int) -> list[analysis.TrialPoint]:
    outcome = trial.user_attrs.get("outcome")
    if outcome not in analysis.OUTCOMES or "alpha_attn" not in trial.params:
        # Still running, never started, or stopped by the user (cancelled / interrupted): the point was not
        # measured, and a resumed study runs it again.
        return []
    losses = trial.user_attrs.get("seed_losses") or [None]
    seeds = trial.user_attrs.get("seeds") or list(range(len(losses)))
    return [
        analysis.TrialPoint(
            alpha_attn=trial.params["alpha_attn"],
            alpha_ffn=trial.params["alpha_ffn"],
            loss=loss if outcome == "completed" else None,
            outcome=outcome,
            width=width,
            depth=depth,
            seed=seed,
        )
        for seed, loss in zip(seeds, losses, strict=False)
    ]


def build_report(spec: StudySpec, study_id: str, storage_url: str, *, level: float = 0.9) -> StudyReport:
    """Analyse a (finished or partial) study. Raises AlphaSearchError when nothing has finished yet."""
    points, baselines = trial_points(spec, study_id, storage_url)
    spaces = lane_spaces(spec, study_id, storage_url)  # a lane's box, extended where its optimum sat on an edge
    space = analysis.SearchSpace(
        attn=(min(s.attn[0] for s in spaces.values()), max(s.attn[1] for s in spaces.values())),
        ffn=(min(s.ffn[0] for s in spaces.values()), max(s.ffn[1] for s in spaces.values())),
    )
    optima, heatmaps = [], {}
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            mine = [p for p in points if p.width == width and p.depth == depth]
            if not any(p.outcome == "completed" for p in mine):
                continue
            base = baselines.get(f"w{width}-d{depth}")
            lane_space = spaces[f"w{width}-d{depth}"]
            opt = analysis.width_optimum(mine, space=lane_space, level=level, baseline=base)
            optima.append(opt)
            heatmaps[f"w{width}-d{depth}"] = analysis.heatmap_grid(
                mine, space=lane_space, optimum=(opt.alpha_attn, opt.alpha_ffn)
            )
    recommendation = analysis.recommend(
        optima,
        target_width=spec.target_width,
        target_depth=spec.target_depth,
        norm=spec.norm,
        space=space,
        level=level,
        study_ids=(study_id,),
    )
    if spec.target_lr is None:
        recommendation.warnings.append(
            "The proxies trained at the preset's lr, not at one derived from your target's: alpha0's optimum "
            "depends on the lr (a higher lr wants a smaller alpha0). Give target_lr (the lr you will train "
            "with) and target_tokens so the proxies follow your recipe (docs/science.md, \"Does it transfer?\")."
        )
    fits = analysis.fit_width_trend(optima, level=level) if len({o.width for o in optima}) > 1 else {}
    if len({o.width for o in optima}) > 1:
        try:
            heatmaps["extrapolated"] = analysis.extrapolated_heatmap(
                points, space=space, target_width=spec.target_width, target_depth=spec.target_depth
            )
        except AlphaSearchError as exc:  # too few trials for a cross-width surface: the rest still stands
            recommendation.warnings.append(f"No extrapolated heatmap: {exc}")
    backtest = leave_widest_out(points, optima, space=space, norm=spec.norm, level=level)
    return StudyReport(spec, study_id, points, baselines, optima, recommendation, heatmaps, fits, backtest)


def _optimum_dict(optimum: Any, baselines: dict[str, list[float]]) -> dict[str, Any]:
    data = optimum.to_dict() if hasattr(optimum, "to_dict") else dict(vars(optimum))
    base = baselines.get(f"w{optimum.width}-d{optimum.depth}")
    if base:
        data["rmsnorm_val_loss"] = sum(base) / len(base)
    return data
