"""Calibrate the proxy training regime at each width before searching alpha0 (issue 7).

A search only means something when (a) the proxies train at all and (b) moving alpha0 changes the loss by
more than re-running the same point under another seed does. Per proxy width, `calibrate` measures both:

1. **Regime.** The RMSNorm baseline and DyT at the seed-noise pair train at each learning rate of a
   small ladder (default 2.5e-3, 5e-3, 1e-2, 2e-2). The search lr is DyT's best among the lrs at which
   the RMSNorm baseline trains stably (RMSNorm tolerates lrs at which DyT's residual stream grows until
   its tanh saturates: docs/science.md); the baseline keeps its own best lr (`rmsnorm_lr`), so the gap
   below compares DyT with the strongest baseline the ladder found. Steps, batch, sequence length and
   warmup come from the settings (a study preset's values unless overridden).
2. **Seed noise.** DyT (or Derf) at one fixed alpha pair (default 0.5, 0.5) over `seeds` (>= 3) seeds at
   that lr: the standard deviation of the final val loss.
3. **Alpha effect.** DyT over a coarse k x k log grid of the search box (default 3 x 3 over the StudySpec
   default ranges) at one seed: the range of final val loss over the completed points, how many stalled
   or diverged, and the best point's loss against the RMSNorm baseline (relative gap).
4. **SNR** = alpha effect / seed std: above ~3 a search at this regime can locate an optimum; near 1 it
   reads noise.

The result (`WidthCalibration.to_dict()`) is JSON, stored by the service under a key (width, depth, norm,
attention, embed_scale, corpus fingerprint, code version) so studies at that width can reuse its lr: a
StudySpec with `use_calibration=true` gets `regimes = {width: {"lr", "warmup_steps"}}` filled from it
(`spec_with_calibrations`). No service imports here: the runs go through the library's Executor interface
(in-process by default, Ray when the caller passes that executor) and its ResultCache.

    >>> settings = CalibrationSettings.from_dict({"preset": "quick"})
    >>> settings.lrs, settings.seeds, settings.grid, settings.steps
    ([0.0025, 0.005, 0.01, 0.02], 3, 3, 150)
    >>> [c.regime["lr"] for c in calibrate([64, 128], settings)]  # doctest: +SKIP
    [0.01, 0.005]
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from alphasearch.cache import ResultCache, json_safe
from alphasearch.config import ATTENTIONS, EMBED_SCALES, INIT_SCALINGS, ModelConfig, TrainConfig
from alphasearch.errors import AlphaSearchError, ConfigError, DataError
from alphasearch.executor import Executor, Failed, InProcessExecutor, TrialRequest, code_version
from alphasearch.spec import PRESETS, SEARCH_NORMS, StudySpec
from alphasearch.train import TrainResult

# Defaults that are not a study preset's: the lr ladder, the seed-noise point and the grid. The training
# regime (steps, batch, seq_len, warmup, eval interval, stall detection, depth) comes from `preset`.
CALIBRATION_DEFAULTS: dict[str, Any] = {
    "preset": "quick",
    # Bracketing what width-matched proxies (widths 32-128, 150-300 steps) preferred: docs/science.md.
    "lrs": [2.5e-3, 5e-3, 1e-2, 2e-2],
    "seeds": 3,  # seed-noise replicates (>= 3: a std from 2 runs is mostly noise itself)
    "alpha": [0.5, 0.5],  # (alpha_attn, alpha_ffn) of the seed-noise point: the DyT paper's default
    "grid": 3,  # k: the alpha effect is measured on a k x k log grid over the search box
    "target_width": 4096,  # the model the studies will extrapolate to (the proxies are built as a study's are)
}
_SPEC_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(StudySpec)}
SNR_GOOD = 3.0  # alpha effect / seed std above this: a search can tell points apart
GAP_TARGET = 0.05  # issue 7: DyT's best point within 5% of the RMSNorm baseline
STALL_RATE_WARN = 0.25
PHASES = ("lr ladder", "seed noise", "alpha grid")


class CalibrationError(AlphaSearchError):
    """A calibration run crashed (a bug or a broken corpus), as opposed to diverging, which is a result."""


class CalibrationInterrupted(AlphaSearchError):
    """`should_stop` asked the calibration to stop; its finished runs are in the cache for the next try."""


@dataclass
class CalibrationSettings:
    """How to calibrate. Unset fields (0, -1, None, []) take `CALIBRATION_DEFAULTS`, then the preset's."""

    preset: str = ""
    target_width: int = (
        0  # width of the model you will train: proxies are built as a study for it builds them
    )
    depth: int = 0  # 0: the preset's first proxy depth
    norm: str = "dyt"  # the alpha family measured in steps 2-3 (dyt | derf); step 1 is always RMSNorm
    attention: str = "standard"
    embed_scale: str = "unit_rms"
    init_scaling: str = "width_matched"  # how the proxies' init scales with width (StudySpec.init_scaling)
    head_dim: int = 32
    corpus: str | None = None  # None: the default corpus
    lrs: list[float] = field(default_factory=list)
    steps: int = 0
    batch_size: int = 0
    seq_len: int = 0
    warmup_steps: int = -1
    eval_interval: int = 0
    detect_stalls: bool | None = None
    seeds: int = 0
    first_seed: int = 0
    alpha: list[float] = field(default_factory=list)
    grid: int = 0
    alpha_attn_range: list[float] = field(default_factory=lambda: list(_SPEC_DEFAULTS["alpha_attn_range"]))
    alpha_ffn_range: list[float] = field(default_factory=lambda: list(_SPEC_DEFAULTS["alpha_ffn_range"]))

    def __post_init__(self) -> None:
        if not self.preset:
            self.preset = CALIBRATION_DEFAULTS["preset"]
        if self.preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        preset = PRESETS[self.preset]
        defaults = {
            **CALIBRATION_DEFAULTS,
            "depth": preset["proxy_depths"][0],
            "steps": max(1, preset["tokens_per_trial"] // (preset["batch_size"] * preset["seq_len"])),
            **{
                k: preset[k]
                for k in ("batch_size", "seq_len", "warmup_steps", "eval_interval", "detect_stalls")
            },
        }
        for key, value in defaults.items():
            current = getattr(self, key)
            if isinstance(current, tuple):
                current = list(current)
                setattr(self, key, current)
            # The placeholders meaning "take the default"; a warmup of 0 is a choice, not a placeholder.
            unset: tuple[Any, ...] = (None, -1) if key == "warmup_steps" else (None, 0, [], "")
            if not isinstance(current, bool) and current in unset:
                setattr(self, key, list(value) if isinstance(value, list) else value)
        self._validate()

    def _validate(self) -> None:
        _int("target_width", self.target_width, 16, 1_000_000)
        _int("depth", self.depth, 1, 256)
        _choice("norm", self.norm, SEARCH_NORMS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("embed_scale", self.embed_scale, EMBED_SCALES)
        _choice("init_scaling", self.init_scaling, INIT_SCALINGS)
        _int("head_dim", self.head_dim, 2, 1024)
        if self.corpus is not None and not isinstance(self.corpus, str):
            raise ConfigError(
                "corpus", f"got {self.corpus!r}; give a path to a text file or folder, or leave it out"
            )
        if not isinstance(self.lrs, list) or not 1 <= len(self.lrs) <= 16:
            raise ConfigError(
                "lrs", f"got {self.lrs!r}; give 1 to 16 learning rates, e.g. [0.001, 0.002, 0.004, 0.008]"
            )
        for lr in self.lrs:
            if (
                isinstance(lr, bool)
                or not isinstance(lr, (int, float))
                or not (math.isfinite(lr) and 0 < lr <= 1)
            ):
                raise ConfigError(
                    "lrs", f"got {lr!r}; each learning rate must be a number in (0, 1], e.g. 0.002"
                )
        if len(set(self.lrs)) != len(self.lrs):
            raise ConfigError("lrs", "contains duplicates; list each learning rate once")
        self.lrs = sorted(float(lr) for lr in self.lrs)
        _int("steps", self.steps, 1, 10_000_000)
        _int("batch_size", self.batch_size, 1, 65_536)
        _int("seq_len", self.seq_len, 2, 65_536)
        _int("warmup_steps", self.warmup_steps, 0, 10_000_000)
        _int("eval_interval", self.eval_interval, 1, 10_000_000)
        if not isinstance(self.detect_stalls, bool):
            raise ConfigError("detect_stalls", f"got {self.detect_stalls!r}; use true or false")
        _int("seeds", self.seeds, 3, 32)
        _int("first_seed", self.first_seed, 0, 2**31 - 1)
        self.alpha = list(_pair("alpha", self.alpha, "[0.5, 0.5] (alpha_attn, alpha_ffn)"))
        _int("grid", self.grid, 2, 9)
        self.alpha_attn_range = list(_range("alpha_attn_range", self.alpha_attn_range))
        self.alpha_ffn_range = list(_range("alpha_ffn_range", self.alpha_ffn_range))
        cap = PRESETS[self.preset]["max_total_tokens"]
        if self.tokens_per_width > cap:
            raise ConfigError(
                "steps",
                f"calibrating one width needs {self.tokens_per_width:,} training tokens ({self.runs_per_width} "
                f"runs of {self.steps} steps x {self.batch_size} x {self.seq_len}), more than the "
                f"{self.preset!r} preset allows ({cap:,}); lower steps, batch_size, seq_len, seeds, grid or the "
                "number of lrs, or use a larger preset",
            )
        TrainConfig(steps=self.steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=self.lrs[0],
                    eval_interval=self.eval_interval)  # TrainConfig's own errors surface now  # fmt: skip

    # -- derived ----------------------------------------------------------------------------------------
    @property
    def runs_per_width(self) -> int:
        # RMSNorm + DyT per lr; DyT's ladder run at the chosen lr doubles as seed 0 of the seed-noise runs.
        return 2 * len(self.lrs) + self.seeds - 1 + self.grid**2

    @property
    def tokens_per_width(self) -> int:
        return self.runs_per_width * self.steps * self.batch_size * self.seq_len

    def check_width(self, width: Any) -> None:
        """ConfigError naming `widths` unless `width` can be a proxy width under these settings."""
        _int("widths", width, 8, 65_536)
        if width >= self.target_width:
            raise ConfigError(
                "widths",
                f"proxy width {width} is not smaller than target_width {self.target_width}; calibrate "
                "proxy widths (narrower than the model you will train) or raise target_width",
            )
        if width % self.head_dim:
            raise ConfigError(
                "widths",
                f"width {width} is not a multiple of head_dim {self.head_dim}; use multiples of "
                f"{self.head_dim} or change head_dim",
            )
        try:
            self.model_config(width, "rmsnorm", 1.0, 1.0)
            self.model_config(width, self.norm, *self.alpha)
        except (
            ConfigError
        ) as exc:  # a proxy field the study view names (e.g. head_dim): it is about this width
            raise ConfigError("widths", f"width {width}: {exc}") from exc

    def study_view(self, width: int, lr: float) -> StudySpec:
        """A one-width StudySpec training exactly what a study at this regime trains at `width` and `lr`.

        Calibration runs are built through it (its model_config / train_config), so they stay the runs a
        study makes however those grow; lr and warmup go in through `regimes`, as a calibrated study's do.
        """
        return StudySpec.from_dict({
            "preset": self.preset, "target_width": self.target_width, "target_depth": self.depth, "proxy_widths": [width],
            "proxy_depths": [self.depth],
            "norm": self.norm, "attention": self.attention, "embed_scale": self.embed_scale,
            "init_scaling": self.init_scaling, "head_dim": self.head_dim, "corpus": self.corpus, "batch_size": self.batch_size, "seq_len": self.seq_len,
            "tokens_per_trial": self.steps * self.batch_size * self.seq_len, "eval_interval": self.eval_interval,
            "detect_stalls": self.detect_stalls, "trials_per_width": 1, "sampler": "random", "pruner": "none",
            "rmsnorm_baseline": False, "regimes": {width: {"lr": lr, "warmup_steps": self.warmup_steps}},
        })  # fmt: skip

    def model_config(self, width: int, norm: str, alpha_attn: float, alpha_ffn: float) -> ModelConfig:
        """The proxy a study trains at this width (StudySpec.model_config)."""
        return self.study_view(width, self.lrs[0]).model_config(
            width, self.depth, alpha_attn, alpha_ffn, norm=norm
        )

    def train_config(self, *, width: int, lr: float, seed: int) -> TrainConfig:
        """One run of the calibration regime (StudySpec.train_config at `width`)."""
        return self.study_view(width, lr).train_config(seed=seed, width=width)

    def grid_points(self) -> list[tuple[float, float]]:
        attn = _log_grid(self.alpha_attn_range[0], self.alpha_attn_range[1], self.grid)
        ffn = _log_grid(self.alpha_ffn_range[0], self.alpha_ffn_range[1], self.grid)
        return [(a, f) for a in attn for f in ffn]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationSettings:
        if not isinstance(data, Mapping):
            raise ConfigError("settings", f"expected an object of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields are {', '.join(sorted(known))}")
        try:
            return cls(**{k: v for k, v in data.items() if v is not None or k == "corpus"})
        except TypeError as exc:  # a value of a type the checks did not anticipate
            raise ConfigError("settings", f"invalid value ({exc}); check the field types") from exc


def parse_widths(value: Any) -> list[int]:
    """`"64,128,256"` or `[64, 128, 256]` -> sorted distinct widths, or ConfigError naming `widths`."""
    items = [x for x in value.split(",") if x.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError("widths", "give at least one proxy width, e.g. 64,128,256")
    out = []
    for item in items:
        try:
            width = int(item.strip()) if isinstance(item, str) else item
        except ValueError:
            raise ConfigError("widths", f"{item!r} is not an integer; give widths like 64,128,256") from None
        _int("widths", width, 8, 65_536)
        out.append(width)
    if len(set(out)) != len(out):
        raise ConfigError("widths", "contains duplicates; list each width once")
    if len(out) > 16:
        raise ConfigError("widths", f"{len(out)} widths; calibrate at most 16 at once")
    return sorted(out)


# -- the result --------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """One calibration run: what it trained and how it ended."""

    norm: str
    lr: float
    seed: int
    alpha_attn: float | None
    alpha_ffn: float | None
    outcome: str  # completed | diverged | stalled
    final_val_loss: float | None
    steps_done: int
    diverged_at_step: int | None = None
    stalled_at_step: int | None = None
    wall_time_s: float = 0.0

    @classmethod
    def of(
        cls, result: TrainResult, *, norm: str, lr: float, seed: int, alphas: tuple[float, float] | None
    ) -> RunSummary:
        loss = result.final_val_loss
        if (
            loss is None and result.stalled and result.val_curve
        ):  # a stalled run's last loss is a real measurement
            loss = result.val_curve[-1][1]
        return cls(
            norm=norm, lr=lr, seed=seed, alpha_attn=alphas[0] if alphas else None,
            alpha_ffn=alphas[1] if alphas else None, outcome=result.outcome, final_val_loss=loss,
            steps_done=result.steps_done, diverged_at_step=result.diverged_at_step,
            stalled_at_step=result.stalled_at_step, wall_time_s=result.wall_time_s,
        )  # fmt: skip


@dataclass
class WidthCalibration:
    """Everything one width's calibration measured. `error` is set (and `regime` None) when no lr trained."""

    width: int
    depth: int
    norm: str
    attention: str
    embed_scale: str
    corpus_fingerprint: str
    code_version: str
    settings: dict[str, Any]
    regime: dict[str, Any] | None  # lr, warmup_steps, steps, batch_size, seq_len
    baseline_loss: float | None  # RMSNorm at the chosen lr
    seed_std: float | None
    seed_mean: float | None
    alpha_effect: float | None  # max - min final val loss over the grid's completed points
    best: dict[str, Any] | None  # the grid's best completed point: alpha_attn, alpha_ffn, loss
    gap: float | None  # (best DyT loss - RMSNorm loss) / RMSNorm loss
    snr: float | None  # alpha_effect / seed_std
    stalled: int
    diverged: int
    stall_rate: float | None  # stalled / grid points
    ladder: list[RunSummary]
    seed_runs: list[RunSummary]
    grid_runs: list[RunSummary]
    warnings: list[str]
    error: str | None = None
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.regime is not None

    def study_regime(self) -> dict[str, Any]:
        """What a StudySpec's `regimes[width]` takes from this calibration."""
        if self.regime is None:
            raise CalibrationError(f"width {self.width} has no calibrated regime: {self.error}")
        out = {"lr": self.regime["lr"], "warmup_steps": self.regime["warmup_steps"]}
        if self.regime.get("rmsnorm_lr") is not None:  # calibrations stored before 2026-12-02 have none
            out["rmsnorm_lr"] = self.regime["rmsnorm_lr"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WidthCalibration:
        data = dict(data)
        for key in ("ladder", "seed_runs", "grid_runs"):
            data[key] = [RunSummary(**r) for r in data.get(key) or []]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class CalibrationProgress:
    """What `on_progress` sees after every finished run (and at the start of each phase)."""

    width: int
    phase: str  # "lr ladder" | "seed noise" | "alpha grid" | "done"
    done: int  # runs finished at this width
    total: int  # runs this width will take
    message: str = ""


OnProgress = Callable[[CalibrationProgress], None]


# -- running ------------------------------------------------------------------------------------------


@dataclass
class _Job:
    width: int
    phase: str
    norm: str
    lr: float
    seed: int
    alphas: tuple[float, float] | None
    request: TrialRequest
    retries: int = 0


def calibrate(
    widths: list[int],
    settings: CalibrationSettings,
    *,
    executor: Executor | None = None,
    cache: ResultCache | None = None,
    on_progress: OnProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_retries: int = 2,
) -> list[WidthCalibration]:
    """Calibrate every width (their runs share the executor: all ladders first, then seeds + grids).

    Raises CalibrationInterrupted when `should_stop()` turns true, CalibrationError when a run crashes.
    A width where no lr trains RMSNorm stably is a result: its WidthCalibration carries `error`.
    """
    from alphasearch.data import load_corpus

    widths = parse_widths(widths)
    for width in widths:
        settings.check_width(width)
    try:
        fingerprint = load_corpus(settings.corpus).fingerprint
    except DataError as exc:
        raise ConfigError("corpus", f"{exc}") from exc
    version = code_version()
    stop = should_stop or (lambda: False)
    own_executor = executor is None
    executor = executor or InProcessExecutor()
    started = time.monotonic()
    done = dict.fromkeys(widths, 0)
    total = settings.runs_per_width

    def report(job: _Job | None, width: int, phase: str, message: str = "") -> None:
        if job is not None:
            done[width] += 1
        if on_progress is not None:
            on_progress(CalibrationProgress(width, phase, done[width], total, message))

    def job(
        width: int, phase: str, norm: str, lr: float, seed: int, alphas: tuple[float, float] | None
    ) -> _Job:
        model = settings.model_config(width, norm, *(alphas or (1.0, 1.0)))
        what = f"lr {lr:g}" if alphas is None else f"alpha ({alphas[0]:.3g}, {alphas[1]:.3g}) seed {seed}"
        label = f"calibrate w{width} d{settings.depth} {norm} {what}"
        request = TrialRequest.build(
            model, settings.train_config(width=width, lr=lr, seed=seed), settings.corpus, label
        )
        return _Job(width, phase, norm, lr, seed, alphas, request)

    try:
        # 1. lr ladder: the RMSNorm baseline and DyT at the seed-noise pair at every lr. DyT's ladder run at
        #    the chosen lr is also seed 0 of the seed-noise runs (same request: the cache serves it).
        pair = (float(settings.alpha[0]), float(settings.alpha[1]))
        for width in widths:
            report(
                None, width, PHASES[0], f"RMSNorm and {settings.norm} at {len(settings.lrs)} learning rates"
            )
        ladder_jobs = [
            job(w, PHASES[0], norm, lr, settings.first_seed, None if norm == "rmsnorm" else pair)
            for w in widths
            for lr in settings.lrs
            for norm in ("rmsnorm", settings.norm)
        ]
        results = _run_jobs(executor, ladder_jobs, cache=cache, stop=stop, max_retries=max_retries,
                            on_done=lambda j, r: report(j, j.width, j.phase, f"{j.norm} lr {j.lr:g}: {r.outcome}"))  # fmt: skip
        ladders = {w: [RunSummary.of(results[id(j)], norm=j.norm, lr=j.lr, seed=j.seed, alphas=j.alphas)
                       for j in ladder_jobs if j.width == w] for w in widths}  # fmt: skip
        chosen = {w: _choose_lr(ladders[w]) for w in widths}

        # 2 + 3. Seed noise and the alpha grid at the chosen lr, all widths at once.
        later: list[_Job] = []
        reused: set[int] = set()  # ids of ladder jobs that are also seed-noise runs (trained once)
        ladder_alpha = {(j.width, j.lr): j for j in ladder_jobs if j.norm != "rmsnorm"}
        for width in widths:
            lr = chosen[width][0]
            if lr is None:
                report(None, width, "done", "no stable lr")
                continue
            report(
                None,
                width,
                PHASES[1],
                f"lr {lr:g}: {settings.seeds} seeds and a {settings.grid}x{settings.grid} grid",
            )
            seed0 = ladder_alpha[(width, lr)]
            seed0 = replace(seed0, phase=PHASES[1])
            results[id(seed0)] = results[id(ladder_alpha[(width, lr)])]
            reused.add(id(seed0))
            later += [seed0] + [
                job(width, PHASES[1], settings.norm, lr, settings.first_seed + s, pair)
                for s in range(1, settings.seeds)
            ]
            later += [
                job(width, PHASES[2], settings.norm, lr, settings.first_seed, p)
                for p in settings.grid_points()
            ]
        results.update(_run_jobs(executor, [j for j in later if id(j) not in reused], cache=cache, stop=stop, max_retries=max_retries,
                                 on_done=lambda j, r: report(j, j.width, j.phase, f"{r.outcome}")))  # fmt: skip
    finally:
        if own_executor:
            executor.close()

    out = []
    for width in widths:
        runs = {phase: [RunSummary.of(results[id(j)], norm=j.norm, lr=j.lr, seed=j.seed, alphas=j.alphas)
                        for j in later if j.width == width and j.phase == phase] for phase in PHASES[1:]}  # fmt: skip
        cal = _summarise(width, settings, fingerprint, version, ladders[width], chosen[width], runs[PHASES[1]],
                         runs[PHASES[2]])  # fmt: skip
        cal.wall_time_s = time.monotonic() - started
        report(None, width, "done", "calibrated" if cal.ok else f"failed: {cal.error}")
        out.append(cal)
    return out


def _run_jobs(
    executor: Executor,
    jobs: list[_Job],
    *,
    cache: ResultCache | None,
    stop: Callable[[], bool],
    max_retries: int,
    on_done: Callable[[_Job, TrainResult], None],
) -> dict[int, TrainResult]:
    """Run every job (served from the cache when it can be); results keyed by id(job)."""
    results: dict[int, TrainResult] = {}
    pending: dict[int, _Job] = {}
    stopping = False

    def verdict(step: int, val_loss: float) -> str | None:
        return "cancelled" if stop() else None

    def submit(j: _Job) -> None:
        pending[executor.submit(j.request, verdict)] = j

    for j in jobs:
        cached = cache.get(j.request.key()) if cache is not None else None
        if cached is not None:
            results[id(j)] = cached
            on_done(j, cached)
        else:
            submit(j)
    while pending:
        if not stopping and stop():
            stopping = True
            for handle in list(pending):
                executor.stop(handle, "cancelled")
        for event in executor.poll(timeout=1.0):
            if event.handle not in pending:
                continue
            j = pending.pop(event.handle)
            if isinstance(event, Failed):
                if event.infrastructure and j.retries < max_retries and not stopping:
                    j.retries += 1  # the worker died, not the run: run it again
                    submit(j)
                    continue
                if stopping:
                    continue
                raise CalibrationError(
                    f"calibration run '{j.request.label}' failed: {event.error.strip()[-1500:]}"
                )
            result = event.result
            if result.stopped is not None:  # cancelled by `stop`
                continue
            results[id(j)] = result
            if cache is not None:
                cache.put(j.request.key(), result)
            on_done(j, result)
    if stopping:
        raise CalibrationInterrupted(
            "calibration stopped on request; finished runs are cached for the next try"
        )
    return results


def _best_rmsnorm(ladder: list[RunSummary]) -> RunSummary | None:
    """The RMSNorm ladder run with the best loss that did not diverge (completed first, then stalled)."""
    rms = [r for r in ladder if r.norm == "rmsnorm"]
    completed = [r for r in rms if r.outcome == "completed" and r.final_val_loss is not None]
    stable = completed or [r for r in rms if r.outcome != "diverged" and r.final_val_loss is not None]
    return min(stable, key=lambda r: r.final_val_loss) if stable else None  # type: ignore[arg-type, return-value]


def _choose_lr(ladder: list[RunSummary]) -> tuple[float | None, list[str]]:
    """The search lr: DyT's best-loss completed lr among those at which RMSNorm did not diverge; without
    any completed DyT run, the RMSNorm baseline's best lr (with a note saying so)."""
    notes: list[str] = []
    rms = [r for r in ladder if r.norm == "rmsnorm"]
    best_rms = _best_rmsnorm(ladder)
    if best_rms is None:
        return None, notes
    ok_lrs = {r.lr for r in rms if r.outcome != "diverged" and r.final_val_loss is not None}
    alpha_runs = [r for r in ladder if r.norm != "rmsnorm" and r.lr in ok_lrs and r.outcome == "completed"
                  and r.final_val_loss is not None]  # fmt: skip
    if alpha_runs:
        best = min(alpha_runs, key=lambda r: r.final_val_loss)  # type: ignore[arg-type, return-value]
        who = best.norm
    else:
        best, who = best_rms, "RMSNorm"
        notes.append("no DyT/Derf ladder run completed (they stalled or diverged at every lr), so the search lr "
                     f"is the RMSNorm baseline's ({best.lr:g}); raise `steps` or pick another `alpha`")  # fmt: skip
    completed = [r for r in rms if r.outcome == "completed"]
    if not completed:
        notes.append(
            f"RMSNorm stalled at every lr of the ladder (it learned nothing input-dependent); lr {best.lr:g} is "
            "the least bad. Raise `steps` so the baseline can train"
        )
    lrs = [r.lr for r in rms]
    for run, name in ((best, who), (best_rms, "RMSNorm")) if best is not best_rms else ((best, who),):
        if len(lrs) > 1 and run.lr == max(lrs):
            notes.append(f"the best {name} lr ({run.lr:g}) is the largest in the ladder: the optimum may be "
                         f"higher; add larger values to `lrs` (e.g. {2 * run.lr:g})")  # fmt: skip
        elif len(lrs) > 1 and run.lr == min(lrs):
            notes.append(f"the best {name} lr ({run.lr:g}) is the smallest in the ladder: the optimum may be "
                         f"lower; add smaller values to `lrs` (e.g. {run.lr / 2:g})")  # fmt: skip
    return best.lr, notes


def _summarise(
    width: int,
    settings: CalibrationSettings,
    fingerprint: str,
    version: str,
    ladder: list[RunSummary],
    chosen: tuple[float | None, list[str]],
    seed_runs: list[RunSummary],
    grid_runs: list[RunSummary],
) -> WidthCalibration:
    lr, warnings = chosen[0], list(chosen[1])
    base = dict(width=width, depth=settings.depth, norm=settings.norm, attention=settings.attention,
                embed_scale=settings.embed_scale, corpus_fingerprint=fingerprint, code_version=version,
                settings=settings.to_dict(), ladder=ladder, seed_runs=seed_runs, grid_runs=grid_runs)  # fmt: skip
    if lr is None:
        error = (f"no learning rate of the ladder {settings.lrs} trained the RMSNorm baseline at width {width} "
                 f"without diverging; add smaller values to `lrs` (e.g. {settings.lrs[0] / 4:g}) or raise `warmup_steps`")  # fmt: skip
        return WidthCalibration(**base, regime=None, baseline_loss=None, seed_std=None, seed_mean=None,  # type: ignore[arg-type]
                                alpha_effect=None, best=None, gap=None, snr=None, stalled=0, diverged=0,
                                stall_rate=None, warnings=[*warnings, error], error=error)  # fmt: skip
    best_rms = _best_rmsnorm(ladder)
    assert best_rms is not None  # _choose_lr returned an lr
    baseline = best_rms.final_val_loss
    regime = {"lr": lr, "warmup_steps": settings.train_config(width=width, lr=lr, seed=0).warmup_steps, "steps": settings.steps,
              "batch_size": settings.batch_size, "seq_len": settings.seq_len, "rmsnorm_lr": best_rms.lr}  # fmt: skip

    seed_losses = [
        r.final_val_loss for r in seed_runs if r.outcome == "completed" and r.final_val_loss is not None
    ]
    seed_std = statistics.stdev(seed_losses) if len(seed_losses) >= 2 else None
    seed_mean = statistics.fmean(seed_losses) if seed_losses else None
    if len(seed_losses) < len(seed_runs):
        bad = ", ".join(sorted({r.outcome for r in seed_runs if r.outcome != "completed"}))
        warnings.append(f"only {len(seed_losses)} of {len(seed_runs)} seed-noise runs at alpha {tuple(settings.alpha)} "
                        f"completed ({bad}); the seed std is unreliable: pick another `alpha` or raise `steps`")  # fmt: skip

    done = [r for r in grid_runs if r.outcome == "completed" and r.final_val_loss is not None]
    stalled = sum(r.outcome == "stalled" for r in grid_runs)
    diverged = sum(r.outcome == "diverged" for r in grid_runs)
    losses = [r.final_val_loss for r in done]
    effect = max(losses) - min(losses) if len(losses) >= 2 else None  # type: ignore[type-var, operator]
    best_run = min(done, key=lambda r: r.final_val_loss) if done else None  # type: ignore[arg-type, return-value]
    best = ({"alpha_attn": best_run.alpha_attn, "alpha_ffn": best_run.alpha_ffn, "loss": best_run.final_val_loss}
            if best_run else None)  # fmt: skip
    gap = (best_run.final_val_loss - baseline) / baseline if best_run and baseline else None  # type: ignore[operator]
    snr = effect / seed_std if effect is not None and seed_std else None
    stall_rate = stalled / len(grid_runs) if grid_runs else None

    if effect is None:
        warnings.append(f"fewer than 2 of the {len(grid_runs)} grid points completed, so the alpha effect cannot "
                        "be measured; raise `steps` or move the alpha ranges")  # fmt: skip
    elif seed_std is not None and snr is not None and snr < SNR_GOOD:
        warnings.append(f"the alpha effect ({effect:.3g} nats) is only {snr:.2g}x the seed std ({seed_std:.3g}): a "
                        f"search at this regime reads seed noise; raise `steps` (tokens per trial) or a study's `seeds`")  # fmt: skip
    if seed_std == 0:
        warnings.append(
            "the seed-noise runs gave identical losses; the SNR is undefined (check that the seeds differ)"
        )
    if stall_rate is not None and stall_rate > STALL_RATE_WARN:
        warnings.append(f"{stalled} of {len(grid_runs)} grid points stalled: the regime is too short for width "
                        f"{width}; raise `steps`")  # fmt: skip
    if diverged:
        warnings.append(f"{diverged} of {len(grid_runs)} grid points diverged at lr {lr:g}")
    if gap is not None and gap > GAP_TARGET:
        warnings.append(f"the best DyT point trails RMSNorm by {100 * gap:.1f}% (target {100 * GAP_TARGET:.0f}%): "
                        "raise `steps`, or check the alpha ranges contain the optimum")  # fmt: skip
    return WidthCalibration(**base, regime=regime, baseline_loss=baseline, seed_std=seed_std,  # type: ignore[arg-type]
                            seed_mean=seed_mean, alpha_effect=effect, best=best, gap=gap, snr=snr, stalled=stalled,
                            diverged=diverged, stall_rate=stall_rate, warnings=warnings)  # fmt: skip


# -- using a calibration in a study ---------------------------------------------------------------------


def calibration_key(spec: StudySpec, width: int) -> dict[str, Any]:
    """What a stored calibration must match to set the lr of `spec`'s proxies at `width`.

    The key the service stores (width, depth, norm, attention, embed_scale, corpus fingerprint, code
    version) plus the training regime (steps, batch_size, seq_len): an lr calibrated for 300 steps is not
    the lr for 150. Depth: the study's smallest proxy depth (its regime then applies to every depth).
    The proxies' init also depends on the target width and the init scaling (width-matched init copies the
    target's), so `SETTINGS_KEYS` must match the calibration's `settings` too.
    """
    from alphasearch.data import load_corpus

    try:
        fingerprint = load_corpus(spec.corpus).fingerprint
    except DataError as exc:
        raise ConfigError("corpus", f"{exc}") from exc
    return {
        "width": width, "depth": spec.proxy_depths[0], "norm": spec.norm, "attention": spec.attention,
        "embed_scale": spec.embed_scale, "corpus_fingerprint": fingerprint, "code_version": code_version(),
        "steps": spec.steps, "batch_size": spec.batch_size, "seq_len": spec.seq_len,
        **{name: getattr(spec, name) for name in SETTINGS_KEYS},
    }  # fmt: skip


# Parts of a calibration key found in the calibration's `settings`, not in columns of their own; a
# setting a stored calibration lacks (one stored before it existed) has the value given here.
SETTINGS_KEYS: dict[str, Any] = {"target_width": None, "init_scaling": "width_matched"}


def settings_match(settings: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
    """Whether a calibration's `settings` agree with the `SETTINGS_KEYS` part of `key`."""
    return all(
        settings.get(name, default) == key[name] for name, default in SETTINGS_KEYS.items() if name in key
    )


def spec_with_calibrations(
    fields_: Mapping[str, Any], find: Callable[[dict[str, Any]], WidthCalibration | None]
) -> StudySpec:
    """A StudySpec from `fields_`; with `use_calibration` true, `regimes` is filled per proxy width from
    `find(calibration_key(...))` (regimes the caller gave explicitly win). ConfigError naming
    `use_calibration` and the fix when a width has no stored calibration."""
    data = dict(fields_)
    if not data.get("use_calibration"):
        return StudySpec.from_dict(data)
    probe = StudySpec.from_dict(
        {**data, "use_calibration": False}
    )  # presets resolved, everything else checked
    given = dict(probe.regimes)
    filled: dict[int, dict[str, Any]] = {}
    missing = []
    for width in probe.proxy_widths:
        if width in given:
            continue
        found = find(calibration_key(probe, width))
        if found is None or not found.ok:
            missing.append(width)
        else:
            filled[width] = found.study_regime()
    if missing:
        widths = ",".join(str(w) for w in missing)
        raise ConfigError(
            "use_calibration",
            f"no stored calibration for proxy width(s) {widths} at depth {probe.proxy_depths[0]} ({probe.norm}, "
            f"{probe.attention} attention, {probe.embed_scale} embedding, {probe.init_scaling} init for target "
            f"width {probe.target_width}, this corpus and training code, "
            f"{probe.steps} steps of {probe.batch_size} x {probe.seq_len}); run `{calibrate_command(probe, missing)}` "
            "(or POST /api/v1/calibrations with the same settings) first, or set use_calibration=false",
        )
    return StudySpec.from_dict({**data, "regimes": {**filled, **given}})


def calibrate_command(spec: StudySpec, widths: list[int]) -> str:
    """The `alphasearch calibrate` command whose calibrations `spec` would find at `widths`."""
    parts = [f"alphasearch calibrate --widths {','.join(map(str, widths))} --depth {spec.proxy_depths[0]}",
             f"--preset {spec.preset}"]  # fmt: skip
    preset = CalibrationSettings(preset=spec.preset)
    for name in ("steps", "batch_size", "seq_len"):
        if getattr(spec, name) != getattr(preset, name):
            parts.append(f"--set {name}={getattr(spec, name)}")
    for name in ("target_width", "norm", "attention", "embed_scale", "init_scaling"):
        if getattr(spec, name) != getattr(preset, name):
            parts.append(f"--set {name}={getattr(spec, name)}")
    if spec.corpus is not None:
        parts.append(f"--corpus {spec.corpus}")
    return " ".join(parts)


# -- small checks --------------------------------------------------------------------------------------


def _log_grid(lo: float, hi: float, k: int) -> list[float]:
    """k points evenly spaced in log between lo and hi (the grid sampler's points for a k x k study)."""
    return [float(lo * (hi / lo) ** (i / (k - 1))) for i in range(k)] if k > 1 else [math.sqrt(lo * hi)]


def _int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(name, f"got {value!r}; use an integer between {lo:,} and {hi:,}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, f"got {value!r}; use one of {', '.join(choices)}")


def _pair(name: str, value: Any, example: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
        bad = any(isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"got {value!r}; give two positive numbers, e.g. {example}") from None
    if bad or not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        raise ConfigError(name, f"got {value!r}; give two positive finite numbers, e.g. {example}")
    return a, b


def _range(name: str, value: Any) -> tuple[float, float]:
    lo, hi = _pair(name, value, "[0.05, 4.0] (low, high)")
    if lo >= hi:
        raise ConfigError(name, f"got [{lo}, {hi}]: empty or inverted; use [low, high] with low < high")
    return lo, hi
