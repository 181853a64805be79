"""Request and response bodies, one family per resource (StudyCreate / StudyPublic / StudiesPublic ...).

`StudyCreate` is generated from the library's StudySpec dataclass so the API never lags behind it: the
minimal body is `{"preset": "quick", "target_width": 4096, "target_depth": 32}` and every other StudySpec
field may be given by name (DESIGN §7). Pydantic checks types; StudySpec checks values and says the fix.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from alphasearch.calibrate import CalibrationSettings
from alphasearch.config import ATTENTIONS, EMBED_SCALES
from alphasearch.spec import PRESETS, PRUNERS, SAMPLERS, SEARCH_NORMS, StudySpec

Status = Literal["queued", "running", "completed", "failed", "cancelled"]
MAX_TEXT = 4096  # any free-text spec field (corpus path); names are capped by the column (200)

SPEC_EXAMPLE = {"preset": "smoke", "target_width": 4096, "target_depth": 32}


# Fields with a fixed set of values: listed in the schema, so the docs (and schemathesis) know them.
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "norm": SEARCH_NORMS,
    "attention": ATTENTIONS,
    "sampler": SAMPLERS,
    "pruner": PRUNERS,
    "embed_scale": EMBED_SCALES,
}


def _study_create_model() -> type[BaseModel]:
    hints = typing.get_type_hints(StudySpec)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(StudySpec):
        annotation = hints[f.name]
        if f.name in CHOICES:
            fields[f.name] = (Literal[CHOICES[f.name]] | None, None)  # type: ignore[valid-type]
        elif f.name in ("target_width", "target_depth"):
            fields[f.name] = (annotation, Field(..., description="of the model you will train"))
        elif f.name == "name":
            fields[f.name] = (str | None, Field(None, max_length=200, description="a label; not part of the spec"))
        elif annotation is str or annotation == (str | None):
            fields[f.name] = (str | None, Field(None, max_length=MAX_TEXT))
        else:
            fields[f.name] = (annotation | None, None)  # None: take the preset's value
    return create_model(
        "StudyCreate",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [SPEC_EXAMPLE]}),
        __doc__="A StudySpec: a preset and the target, plus any field to override (DESIGN §7).",
        **fields,
    )


StudyCreate = _study_create_model()


class LaneProgress(BaseModel):
    label: str
    done: int
    total: int
    best: float | None = None


class Progress(BaseModel):
    trials_done: int
    trials_total: int
    fraction: float
    eta_s: float | None = Field(None, description="seconds left, from this run's pace; null until a trial ends")
    lanes: list[LaneProgress] = []


class StudyPublic(BaseModel):
    id: str
    name: str | None
    status: Status
    target_width: int
    target_depth: int
    norm: str
    spec: dict[str, Any]
    progress: Progress
    error: str | None
    cancel_requested: bool
    batch_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class TrialPublic(BaseModel):
    """One Optuna trial of the study (search.py documents the outcomes)."""

    lane: str
    width: int
    depth: int
    norm: str
    number: int
    state: str
    outcome: str | None
    reason: str | None = Field(
        default=None,
        description="why the trial ended without a result (stale lease, interrupted, worker crash, cancelled, "
        "pruned) and which trial re-runs its point, or which trial it re-runs; null for a plain result",
    )
    alpha_attn: float | None
    alpha_ffn: float | None
    value: float | None
    seed_losses: list[float | None] = []
    diverged_at_step: int | None = None
    started_at: datetime | None
    completed_at: datetime | None
    duration_s: float | None
    errors: list[str] = []
    runs: list[dict[str, Any]] = Field(default=[], description="per seed: val curve, learned alphas, diagnostics")


class CorpusPublic(BaseModel):
    """A corpus the server owns; give its `corpus` as a study's or calibration's `corpus`."""

    corpus: str = Field(description="the value for a study's `corpus` field: upload:<sha256>, or a name in the "
                                    "server's corpus folder (ALPHASEARCH_CORPUS_DIR)")  # fmt: skip
    kind: Literal["uploaded", "server"]
    name: str
    size_bytes: int | None = Field(description="null for a folder in the server's corpus folder")
    sha256: str | None = None
    uploaded_at: str | None = None


class CorporaPublic(BaseModel):
    data: list[CorpusPublic]
    count: int


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class Interval(BaseModel):
    alpha_attn: list[float | None]
    alpha_ffn: list[float | None]
    alpha_final: list[float | None]
    level: float


class ParamFit(BaseModel):
    model_config = ConfigDict(extra="allow")

    exponent: float | None
    exponent_interval: list[float | None] | None
    r2: float | None


class RecommendationPublic(BaseModel):
    """DESIGN §7's recommendation JSON (plus `basis` and `per_width` details)."""

    model_config = ConfigDict(extra="allow")

    width: int
    depth: int
    norm: str
    alpha_attn: float | None
    alpha_ffn: float | None
    alpha_final: float | None
    interval: Interval
    fit: dict[str, ParamFit]
    proxy_widths: list[int]
    extrapolation_factor: float | None
    warnings: list[str]
    studies: list[str]
    evidence: Literal["sufficient", "insufficient"] = Field(
        "sufficient", description="insufficient: no interval a user can act on; `next_steps` says what to run"
    )
    next_steps: list[str] = Field(default_factory=list, description="concrete runs that would narrow the answer")


class HeatmapPublic(BaseModel):
    key: str = Field(description="`w<width>-d<depth>`, or `extrapolated` (the target width; a model, not data)")
    width: int
    depth: int
    extrapolated: bool
    png_url: str
    grid: dict[str, Any] = Field(description="alphasearch.analysis.HeatmapGrid.to_dict()")


class HeatmapsPublic(BaseModel):
    data: list[HeatmapPublic]
    count: int


class BatchCreate(BaseModel):
    """Many StudySpecs, validated all-or-nothing. Also accepted as a YAML/JSON file upload."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"studies": [SPEC_EXAMPLE]}]})

    name: str | None = Field(None, max_length=200)
    studies: list[dict[str, Any]]


class BatchPublic(BaseModel):
    id: str
    name: str | None
    status: Literal["queued", "running", "finished"]
    counts: dict[str, int]
    study_ids: list[str]
    studies: list[StudyPublic]
    created_at: datetime


class FieldError(BaseModel):
    field: str = Field(description="the offending field (dotted path)")
    message: str = Field(description="what is wrong and how to fix it")
    index: int | None = Field(None, description="which entry of a batch")
    loc: list[str | int] = Field(description="FastAPI-style location: ['body', (index,) field...]")
    msg: str
    type: str


class ErrorPublic(BaseModel):
    detail: str | list[FieldError]


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    scheduler: str


# -- calibrations -------------------------------------------------------------------------------------

CALIBRATION_EXAMPLE = {"widths": [64, 128, 256], "preset": "quick"}
CalibrationStatus = Literal["queued", "running", "completed", "failed"]


def _calibration_create_model() -> type[BaseModel]:
    """`widths` plus every CalibrationSettings field by name (generated, so the API never lags the library)."""
    hints = typing.get_type_hints(CalibrationSettings)
    fields: dict[str, Any] = {
        "widths": (list[int], Field(..., min_length=1, max_length=16,
                                    description="proxy widths to calibrate, one calibration each")),
    }  # fmt: skip
    for f in dataclasses.fields(CalibrationSettings):
        annotation = hints[f.name]
        if f.name in CHOICES:
            fields[f.name] = (Literal[CHOICES[f.name]] | None, None)  # type: ignore[valid-type]
        elif annotation is str or annotation == (str | None):
            fields[f.name] = (str | None, Field(None, max_length=MAX_TEXT))
        elif f.name in ("lrs", "alpha", "alpha_attn_range", "alpha_ffn_range"):
            fields[f.name] = (list[float] | None, Field(None, max_length=16))
        else:
            fields[f.name] = (annotation | None, None)  # None: the default / the preset's value
    return create_model(
        "CalibrationCreate",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [CALIBRATION_EXAMPLE]}),
        __doc__="Widths to calibrate and, optionally, any calibration setting (alphasearch/calibrate.py).",
        **fields,
    )


CalibrationCreate = _calibration_create_model()


class CalibrationProgress(BaseModel):
    phase: str | None = Field(None, description="lr ladder | seed noise | alpha grid | done")
    done: int = Field(0, description="runs finished")
    total: int = Field(0, description="runs this calibration takes")
    message: str = ""


class CalibrationPublic(BaseModel):
    """One width's calibration; `result` is alphasearch.calibrate.WidthCalibration.to_dict() once it ran."""

    id: str
    status: CalibrationStatus
    width: int
    depth: int
    norm: str
    attention: str
    embed_scale: str
    corpus: str | None
    corpus_fingerprint: str
    code_version: str
    steps: int
    batch_size: int
    seq_len: int
    settings: dict[str, Any]
    progress: CalibrationProgress
    regime: dict[str, Any] | None = Field(None, description="the chosen regime: lr, warmup_steps, steps, batch_size, seq_len")
    snr: float | None = Field(None, description="alpha effect / seed std")
    gap: float | None = Field(None, description="(best DyT loss - RMSNorm loss) / RMSNorm loss")
    stall_rate: float | None = Field(None, description="stalled grid points / grid points")
    warnings: list[str] = []
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class CalibrationsPublic(BaseModel):
    data: list[CalibrationPublic]
    count: int


# -- validations --------------------------------------------------------------------------------------

ValidationStatus = Literal["queued", "running", "completed", "failed"]


class ValidationCreate(BaseModel):
    """Train the study's recommendation, (1, 1), (0.5, 0.5) and its x2 / ÷2 neighbours at `width`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}, {"width": 256, "seeds": 2}]})

    width: int | None = Field(None, description="wider than every proxy; default twice the widest proxy, or "
                                                "the target width when it is no wider than that")  # fmt: skip
    seeds: int | None = Field(None, description="seeds per point, the same for every point (paired); default 2")


class ValidationProgress(BaseModel):
    done: int = Field(0, description="runs finished")
    total: int = Field(0, description="runs this validation takes (points x seeds); 0 until it is planned")
    fraction: float = 0.0
    message: str = ""


class ValidationPublic(BaseModel):
    """One validation; `result` is alphasearch.validation.summarise(): per point mean / seed std, the best
    point, and `regret` of the recommendation, (1, 1) and (0.5, 0.5) in nats and in noise units."""

    id: str
    study_id: str
    status: ValidationStatus
    width: int
    seeds: int
    progress: ValidationProgress
    plan: dict[str, Any] | None = Field(None, description="alphasearch.validation.ValidationPlan.to_dict()")
    result: dict[str, Any] | None = None
    regret: dict[str, Any] | None = Field(None, description="= result.regret")
    runs: list[dict[str, Any]] = Field(default=[], description="every finished run: point, seed, outcome, loss")
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class ValidationsPublic(BaseModel):
    data: list[ValidationPublic]
    count: int
