"""StudySpec: what a user asks alphasearch to find, and the presets that fill in everything else.

Split out of search.py because the spec is a user-facing contract on its own (CLI flags, REST bodies,
YAML batch files) while search.py is the machinery that runs it.

The minimal form names a preset and the target; every other field has a preset default and can be
overridden by name in the same flat object:

    >>> spec = StudySpec.from_dict({"preset": "smoke", "target_width": 4096, "target_depth": 32})
    >>> spec.proxy_widths, spec.sampler
    ([32, 64], 'random')
    >>> StudySpec.from_dict({"preset": "smoke", "target_width": 48, "target_depth": 32})
    Traceback (most recent call last):
    ...
    alphasearch.errors.ConfigError: proxy_widths: proxy width 64 is not smaller than target_width 48; ...
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from alphasearch.config import ATTENTIONS, EMBED_SCALES, INIT_SCALINGS, ModelConfig, TrainConfig
from alphasearch.errors import ConfigError

SAMPLERS = ("grid", "tpe", "gp", "random")
PRUNERS = ("none", "asha", "median")
SEARCH_NORMS = ("dyt", "derf")
# How proxies derive their lr from the target's (StudySpec.target_lr), docs/science.md "Does it transfer?":
#   "inverse_width": lr(w) = target_lr * target_width / w. Under width-matched init a weight update of Adam's
#                    size lr changes a layer's output by ~ lr * fan_in relative to the output itself, so this
#                    gives every proxy the target's relative update per step (muP's rule for hidden weights).
#   "same":          lr(w) = target_lr at every proxy width.
LR_RULES = ("inverse_width", "same")

# Presets, sized for the machines they name. Each value says why where it is not obvious.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: for tests and for checking an installation. Too small to mean anything.
    "smoke": {
        "proxy_widths": [32, 64],
        "proxy_depths": [2],
        "trials_per_width": 4,
        "tokens_per_trial": 16 * 64 * 30,  # 30 steps of 16 x 64 bytes
        "batch_size": 16,
        "seq_len": 64,
        "sampler": "random",
        "pruner": "none",
        "lr": 3e-3,
        "warmup_steps": 5,
        "eval_interval": 10,
        "rmsnorm_baseline": False,
        "detect_stalls": False,  # 30 steps cannot beat the unigram entropy: every run would "stall"
        "max_total_tokens": 10_000_000,
        "replicate_best": 0,  # seed noise is not worth measuring on 30-step runs
        "extend_box": 0,
        "refine": 0,
    },
    # Minutes on a 2-core laptop: three proxy widths, a 4x4 grid each, short runs. 16 points, not 9: the
    # analysis wants 12 finished trials per width (6 quadratic coefficients, twice over), and a 3-level
    # axis puts a parabola's vertex between two tied levels, an artefact of the design (issue 14).
    "quick": {
        "proxy_widths": [32, 64, 128],
        "proxy_depths": [4],
        "trials_per_width": 16,
        "tokens_per_trial": 32 * 128 * 150,
        "batch_size": 32,
        "seq_len": 128,
        "sampler": "grid",
        "pruner": "none",
        # Width-matched proxies at 150-200 steps: 1e-2 beat 3e-3 for both DyT and RMSNorm at widths 32-128
        # (docs/science.md, "training regime"); `alphasearch calibrate --preset quick` re-measures it.
        "lr": 1e-2,
        "warmup_steps": 20,
        "eval_interval": 50,
        "rmsnorm_baseline": True,
        "detect_stalls": True,
        "max_total_tokens": 300_000_000,
        "replicate_best": 3,
        "extend_box": 1,
        # One 3 x 3 pass at half the grid's log spacing around each width's optimum: the 4 x 4 grid steps
        # x4.3 (attn) and x5.8 (ffn), coarser than the factor 2 a recommendation should be within, and
        # measured optima move by x1.7 where a step costs 0.2 nats (docs/science.md, "Does it transfer?").
        "refine": 1,
    },
    # An hour or a few on a workstation: four widths, TPE + ASHA, longer runs.
    "standard": {
        "proxy_widths": [64, 128, 256, 512],
        "proxy_depths": [4],
        "trials_per_width": 24,
        "tokens_per_trial": 32 * 256 * 600,
        "batch_size": 32,
        "seq_len": 256,
        "sampler": "tpe",
        "pruner": "asha",
        # Calibrated at this run length (docs/science.md, "The `standard` regime"): the best lr is 8e-3 (or
        # more) at widths 64 and 128, 4e-3 at 256 (8e-3 and 1.6e-2 clearly worse), and at 512 DyT matches
        # RMSNorm at 2e-3: lr 8e-3 up to width 128, falling as 1/width above it.
        "lr": 8e-3,
        "lr_falls_above_width": 128,
        "warmup_steps": 60,
        "eval_interval": 100,
        "rmsnorm_baseline": True,
        "detect_stalls": True,
        "max_total_tokens": 5_000_000_000,
        "replicate_best": 3,
        "extend_box": 2,
        "refine": 0,  # grid passes only; TPE/GP concentrate their trials near the optimum themselves
    },
    # A GPU cluster: wider proxies, several depths, Chinchilla-ish token counts for the small widths.
    "paper-like": {
        "proxy_widths": [128, 256, 512, 1024],
        "proxy_depths": [8, 16],
        "trials_per_width": 40,
        "tokens_per_trial": 64 * 1024 * 2000,
        "batch_size": 64,
        "seq_len": 1024,
        "sampler": "gp",
        "pruner": "asha",
        "lr": 1e-3,
        "warmup_steps": 200,
        "eval_interval": 200,
        "rmsnorm_baseline": True,
        "detect_stalls": True,
        "max_total_tokens": 10**12,
        "replicate_best": 3,
        "extend_box": 2,
        "refine": 0,  # grid passes only; TPE/GP concentrate their trials near the optimum themselves
    },
}


@dataclass
class StudySpec:
    """One study: search alpha0 at several proxy widths and extrapolate to (target_width, target_depth)."""

    target_width: int
    target_depth: int
    preset: str = "quick"
    name: str | None = None
    proxy_widths: list[int] = field(default_factory=list)
    proxy_depths: list[int] = field(default_factory=list)
    norm: str = "dyt"  # dyt | derf
    attention: str = "standard"  # standard | differential
    # Log-scale alpha0 ranges. Published optima span 0.05..1+, and tiny proxies may prefer > 1.
    alpha_attn_range: tuple[float, float] = (0.05, 4.0)
    alpha_ffn_range: tuple[float, float] = (0.02, 4.0)
    sampler: str = ""
    pruner: str = ""
    trials_per_width: int = 0
    tokens_per_trial: int = 0
    batch_size: int = 0
    seq_len: int = 0
    seeds: int = 1  # replicate runs per alpha point (first_seed..first_seed+seeds-1); the value is their mean
    first_seed: int = 0  # shift the training seeds, e.g. to repeat a whole study under other seeds
    # After a width's search, re-run its best point with further seeds (first_seed+seeds, ...) until it has
    # this many, to measure seed noise against the alpha effect. 0 = never; None = the preset's value.
    replicate_best: int | None = None
    # A grid lane whose optimum sits on an edge of the box runs this many more grid passes, each over a box
    # re-centred on the edge optimum (never beyond two decades outside the original box); 0 = only warn.
    # The boxes a lane ran are stored with its Optuna study (user attr "boxes"). None = the preset's value.
    extend_box: int | None = None
    # After the grid passes, up to this many 3 x 3 passes at half the grid's log spacing, each centred on the
    # lane's current optimum, until that optimum lies inside the last one (points already run are not run
    # again). Grid sampler only; stored with the boxes. None = the preset's value; 0 = none.
    refine: int | None = None
    lr: float = 0.0
    warmup_steps: int = -1
    eval_interval: int = 0
    rmsnorm_baseline: bool | None = None
    detect_stalls: bool | None = None  # stop + mark runs that learn nothing input-dependent (TrainConfig)
    head_dim: int = 32
    embed_scale: str = "unit_rms"  # the proxy parametrisation; recorded with every study
    # How weight init scales with proxy width (config.INIT_SCALINGS): "width_matched" copies the target
    # width's 0.02 init, i.e. normal(0, 0.02 * sqrt(target_width / width)); "fixed" is 0.02 everywhere.
    init_scaling: str = "width_matched"
    corpus: str | None = None  # None = the default Shakespeare corpus; else a text file or folder
    sampler_seed: int = 0
    max_total_tokens: int = 0
    # Per-proxy-width training regime, {width: {"lr": ..., "warmup_steps": ...}}, overriding lr/warmup_steps
    # there. With use_calibration the service and CLI fill it from stored calibrations (`alphasearch
    # calibrate`, alphasearch/calibrate.py); regimes given here win over calibrated ones.
    use_calibration: bool = False
    regimes: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Proxy widths above this one train at lr * lr_falls_above_width / width (Adam's best lr falls about as
    # 1/width at a fixed parametrisation, as muP's rule for hidden weights has it; measured for `standard`
    # in docs/science.md); 0: every width trains at `lr`. A `regimes` entry (given or calibrated) wins.
    lr_falls_above_width: int | None = None
    # The target's own recipe: the peak lr the user will train the target with, and its token budget. With
    # target_lr, every proxy's lr follows it by `lr_rule` (lr and lr_falls_above_width are then unused; a
    # `regimes` entry still wins). With target_tokens, proxies train min(tokens_per_trial, target_tokens)
    # tokens: never longer than the target itself. None: the preset's lr / budget, as before.
    target_lr: float | None = None
    target_tokens: int | None = None
    # The std of the target's weight init (normal(0, std); GPT-2/LLaMA use 0.02). width_matched proxies then
    # start with blocks at the target's relative size: std * sqrt(target_width / width); "fixed" proxies use
    # std itself. None: 0.02, as before the field.
    target_init_std: float | None = None
    lr_rule: str = "inverse_width"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if _is_unset(getattr(self, key), zero_is_a_choice=key in _ZERO_IS_A_CHOICE):
                setattr(self, key, list(value) if isinstance(value, list) else value)
        self.alpha_attn_range = _range("alpha_attn_range", self.alpha_attn_range)
        self.alpha_ffn_range = _range("alpha_ffn_range", self.alpha_ffn_range)
        self._validate()

    # -- validation --------------------------------------------------------------------------------
    def _validate(self) -> None:
        _int("target_width", self.target_width, lo=8, hi=1_000_000)
        _int("target_depth", self.target_depth, lo=1, hi=10_000)
        if not self.proxy_widths:
            raise ConfigError("proxy_widths", "give at least one proxy width, e.g. [64, 128, 256]")
        for w in self.proxy_widths:
            _int("proxy_widths", w, lo=8, hi=65_536)
            if w >= self.target_width:
                raise ConfigError(
                    "proxy_widths",
                    f"proxy width {w} is not smaller than target_width {self.target_width}; "
                    "proxies must be narrower than the model you will train",
                )
            if w % self.head_dim:
                raise ConfigError(
                    "proxy_widths", f"proxy width {w} is not a multiple of head_dim {self.head_dim}; "
                    f"use multiples of {self.head_dim} or change head_dim",
                )
        if len(set(self.proxy_widths)) != len(self.proxy_widths):
            raise ConfigError("proxy_widths", "contains duplicates; list each width once")
        self.proxy_widths = sorted(self.proxy_widths)
        if not self.proxy_depths:
            raise ConfigError("proxy_depths", "give at least one proxy depth, e.g. [4]")
        for d in self.proxy_depths:
            _int("proxy_depths", d, lo=1, hi=256)
        self.proxy_depths = sorted(set(self.proxy_depths))
        if self.norm not in SEARCH_NORMS:
            raise ConfigError(
                "norm", f"got {self.norm!r}; alpha0 can be searched for {', '.join(SEARCH_NORMS)} only"
            )
        if self.attention not in ATTENTIONS:
            raise ConfigError("attention", f"got {self.attention!r}; use one of {', '.join(ATTENTIONS)}")
        if self.embed_scale not in EMBED_SCALES:
            raise ConfigError("embed_scale", f"got {self.embed_scale!r}; use one of {', '.join(EMBED_SCALES)}")
        if self.init_scaling not in INIT_SCALINGS:
            raise ConfigError(
                "init_scaling", f"got {self.init_scaling!r}; use one of {', '.join(INIT_SCALINGS)}"
            )
        if self.sampler not in SAMPLERS:
            raise ConfigError("sampler", f"got {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError("pruner", f"got {self.pruner!r}; use one of {', '.join(PRUNERS)}")
        _int("trials_per_width", self.trials_per_width, lo=1, hi=10_000)
        _int("seeds", self.seeds, lo=1, hi=32)
        if not (isinstance(self.first_seed, int) and not isinstance(self.first_seed, bool) and self.first_seed >= 0):
            raise ConfigError("first_seed", f"got {self.first_seed!r}; use an integer >= 0")
        rb = self.replicate_best
        if isinstance(rb, bool) or not isinstance(rb, int) or not 0 <= rb <= 32:
            raise ConfigError(
                "replicate_best",
                f"got {rb!r}; use an integer from 0 (no replication) to 32: the seeds the best point of each "
                "width ends up with (e.g. 3)",
            )
        eb = self.extend_box
        if isinstance(eb, bool) or not isinstance(eb, int) or not 0 <= eb <= 4:
            raise ConfigError(
                "extend_box", f"got {eb!r}; use an integer from 0 (never extend the box, only warn) to 4 (grid passes)"
            )
        rf = self.refine
        if isinstance(rf, bool) or not isinstance(rf, int) or not 0 <= rf <= 4:
            raise ConfigError(
                "refine", f"got {rf!r}; use an integer from 0 (no refinement) to 4 (3 x 3 passes around the optimum)"
            )
        _int("batch_size", self.batch_size, lo=1, hi=65_536)
        _int("seq_len", self.seq_len, lo=2, hi=65_536)
        _int("tokens_per_trial", self.tokens_per_trial, lo=self.batch_size * self.seq_len, hi=10**13)
        self._validate_target_recipe()
        if self.sampler == "grid" and math.isqrt(self.trials_per_width) ** 2 != self.trials_per_width:
            raise ConfigError(
                "trials_per_width",
                f"the grid sampler needs a square number of trials (k x k grid), got "
                f"{self.trials_per_width}; use e.g. 9, 16 or 49, or another sampler",
            )
        if self.sampler == "grid" and self.trials_per_width < 4:
            raise ConfigError("trials_per_width", "a grid needs at least 2 x 2 = 4 trials")
        if self.total_tokens + self.extension_tokens > self.max_total_tokens:
            raise ConfigError(
                "tokens_per_trial",
                f"this study needs up to {self.total_tokens + self.extension_tokens:,} training tokens, more than the "
                f"{self.preset!r} preset allows ({self.max_total_tokens:,}); reduce trials_per_width, "
                "tokens_per_trial, seeds, replicate_best, extend_box, refine or proxy widths, or use a larger preset",
            )
        # Build one proxy config now so width/head/etc. errors surface at submission, not in a worker.
        for w in self.proxy_widths:
            self.model_config(w, self.proxy_depths[0], 1.0, 1.0)
        self.regimes = _regimes(self.regimes, self.proxy_widths)
        if self.lr_falls_above_width is None:
            self.lr_falls_above_width = 0
        above = self.lr_falls_above_width
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise ConfigError(
                "lr_falls_above_width",
                f"got {above!r}; use a width (e.g. 128: wider proxies train at lr * 128 / width) or 0 (one lr "
                "at every width)",
            )
        if not isinstance(self.use_calibration, bool):
            raise ConfigError("use_calibration", f"got {self.use_calibration!r}; use true or false")
        missing = [w for w in self.proxy_widths if w not in self.regimes]
        if self.use_calibration and missing:
            raise ConfigError(
                "use_calibration",
                f"no calibrated regime for proxy width(s) {missing}; run `alphasearch calibrate --widths "
                f"{','.join(map(str, missing))}` first and submit through the service or CLI (they fill "
                "`regimes` from it), give `regimes` yourself, or set use_calibration=false",
            )
        for w in self.proxy_widths:
            self.train_config(seed=0, width=w)

    def _validate_target_recipe(self) -> None:
        if self.lr_rule not in LR_RULES:
            raise ConfigError("lr_rule", f"got {self.lr_rule!r}; use one of {', '.join(LR_RULES)}")
        tlr = self.target_lr
        if tlr is not None:
            if isinstance(tlr, bool) or not isinstance(tlr, (int, float)) or not (math.isfinite(tlr) and 0 < tlr <= 1):
                raise ConfigError("target_lr", f"got {tlr!r}; use the peak learning rate you will train the "
                                  "target with, in (0, 1], e.g. 3e-4")
            self.target_lr = float(tlr)
            for w in self.proxy_widths:
                if self.lr_at(w) > 1:
                    raise ConfigError(
                        "target_lr", f"lr_rule {self.lr_rule!r} gives proxy width {w} an lr of {self.lr_at(w):.3g} "
                        "(> 1); use wider proxies, lr_rule 'same', or check target_lr")
        tis = self.target_init_std
        if tis is not None:
            if isinstance(tis, bool) or not isinstance(tis, (int, float)) or not (math.isfinite(tis) and 0 < tis <= 1):
                raise ConfigError("target_init_std", f"got {tis!r}; use the std of the normal init of the target's "
                                  "weight matrices, in (0, 1], e.g. 0.02")
            self.target_init_std = float(tis)
        tt = self.target_tokens
        if tt is not None:
            _int("target_tokens", tt, lo=self.batch_size * self.seq_len, hi=10**15)
            self.tokens_per_trial = min(self.tokens_per_trial, tt)

    # -- derived ----------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return max(1, self.tokens_per_trial // (self.batch_size * self.seq_len))

    @property
    def replicate_runs(self) -> int:
        """Extra single-seed runs (and Optuna trials) of each (width, depth)'s best point after its search."""
        return max(0, (self.replicate_best or 0) - self.seeds)

    @property
    def total_tokens(self) -> int:
        lanes = len(self.proxy_widths) * len(self.proxy_depths)
        runs = lanes * (self.trials_per_width * self.seeds + self.replicate_runs)
        if self.rmsnorm_baseline:
            runs += len(self.proxy_widths) * len(self.proxy_depths) * max(2, self.seeds)
        return runs * self.tokens_per_trial

    @property
    def extension_tokens(self) -> int:
        """Training tokens of the extra grid passes (`extend_box`, `refine`) if every lane used all of them."""
        if self.sampler != "grid":
            return 0
        lanes = len(self.proxy_widths) * len(self.proxy_depths)
        passes = (self.extend_box or 0) * self.trials_per_width + (self.refine or 0) * 3 * 3
        return lanes * passes * self.seeds * self.tokens_per_trial

    @property
    def total_trials(self) -> int:
        return len(self.proxy_widths) * len(self.proxy_depths) * (self.trials_per_width + self.replicate_runs)

    def model_config(
        self, width: int, depth: int, alpha_attn: float, alpha_ffn: float, *, norm: str | None = None
    ) -> ModelConfig:
        return ModelConfig(
            width=width,
            depth=depth,
            head_dim=self.head_dim,
            max_seq_len=max(self.seq_len, 16),
            norm=norm or self.norm,
            alpha_attn=alpha_attn,
            alpha_ffn=alpha_ffn,
            attention=self.attention,
            embed_scale=self.embed_scale if (norm or self.norm) in SEARCH_NORMS else "one",
            init_scaling=self.init_scaling,
            init_reference_width=self.target_width,
            init_std=None if self.target_init_std is None else self.target_init_std * (
                math.sqrt(self.target_width / width) if self.init_scaling == "width_matched" else 1.0),
        )

    def train_config(self, *, seed: int, width: int | None = None, baseline: bool = False) -> TrainConfig:
        """The training run of a proxy at `width` (its `regimes` entry, if any, sets lr and warmup).

        `baseline`: the RMSNorm baseline's run, which takes the regime's `rmsnorm_lr` when it has one (a
        calibration measures the baseline at its own best lr, so the DyT-vs-RMSNorm gap is not flattered)."""
        regime = self.regimes.get(width, {}) if width is not None else {}
        lr, warmup = regime.get("lr", self.lr_at(width)), regime.get("warmup_steps", self.warmup_steps)
        if baseline:
            lr = regime.get("rmsnorm_lr", lr)
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=lr,
            warmup_steps=min(warmup, max(0, self.steps - 1)),
            eval_interval=min(self.eval_interval, self.steps),
            detect_stalls=bool(self.detect_stalls),
            seed=seed,
        )

    def lr_at(self, width: int | None) -> float:
        """The lr a proxy of `width` trains at without a `regimes` entry: `lr`, falling as 1/width above
        `lr_falls_above_width` when that is set; with `target_lr`, the target's lr by `lr_rule`."""
        if self.target_lr is not None and width is not None:
            return self.target_lr * (self.target_width / width if self.lr_rule == "inverse_width" else 1.0)
        above = self.lr_falls_above_width or 0
        if width is None or not above or width <= above:
            return self.lr
        return self.lr * above / width

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["alpha_attn_range"] = list(self.alpha_attn_range)
        data["alpha_ffn_range"] = list(self.alpha_ffn_range)
        return data

    def fingerprint(self) -> str:
        """Stable id of what this spec computes (the name is a label and does not count)."""
        data = self.to_dict()
        data.pop("name", None)
        for key in ("use_calibration", "regimes", "lr_falls_above_width"):  # at their defaults they change
            # nothing: ids of specs from before the field stay stable
            if not data.get(key):
                data.pop(key, None)
        for key in ("target_lr", "target_tokens", "target_init_std"):  # unset: the spec computes what it did before them
            if data.get(key) is None:
                data.pop(key, None)
        if data.get("target_lr") is None:
            data.pop("lr_rule", None)  # the rule only matters with a target_lr
        for key in ("extend_box", "refine"):  # 0 computes what specs without the field did
            if not data.get(key):
                data.pop(key, None)
        if not data.get("replicate_best"):  # 0 replicates computes what specs without the field did
            data.pop("replicate_best", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        if not isinstance(data, dict):
            raise ConfigError("spec", f"expected an object of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields are {', '.join(sorted(known))}")
        for required in ("target_width", "target_depth"):
            if required not in data:
                raise ConfigError(required, "missing; give the width/depth of the model you will train")
        return cls(**data)

    @classmethod
    def from_text(cls, text: str) -> StudySpec:
        """Parse a JSON or YAML document holding one spec."""
        return cls.from_dict(parse_document(text))


def parse_document(text: str) -> Any:
    """JSON or YAML text → Python data, with a ConfigError (not a parser traceback) when malformed."""
    import yaml

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("document", f"neither valid JSON nor valid YAML ({exc}); check the syntax") from exc


# Fields whose 0 is a real choice (only None takes the preset's value).
_ZERO_IS_A_CHOICE = frozenset({"replicate_best", "lr_falls_above_width", "extend_box", "refine"})


def _is_unset(value: Any, *, zero_is_a_choice: bool = False) -> bool:
    """True for the dataclass's "take it from the preset" placeholders ("", 0, -1, None, [])."""
    if isinstance(value, bool):
        return False  # an explicit True/False from the user is a choice, not a placeholder
    if zero_is_a_choice:
        return value is None
    return value is None or value == "" or value == [] or value == 0 or value == -1


def _int(name: str, value: Any, *, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"got {value!r}; use an integer between {lo:,} and {hi:,}")
    if not lo <= value <= hi:
        raise ConfigError(name, f"got {value:,}; use an integer between {lo:,} and {hi:,}")


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"got {value!r}; use [low, high] with 0 < low < high, e.g. [0.05, 4.0]") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0:
        raise ConfigError(name, f"got {value!r}; both ends must be positive finite numbers (log scale)")
    if lo >= hi:
        raise ConfigError(name, f"got [{lo}, {hi}]: empty or inverted; use [low, high] with low < high")
    return (lo, hi)


def _regimes(value: Any, widths: list[int]) -> dict[int, dict[str, Any]]:
    """`regimes` checked and normalised: int width keys (JSON gives strings), only lr / warmup_steps."""
    fix = 'use {width: {"lr": 0.002, "warmup_steps": 20, "rmsnorm_lr": 0.004}} for widths among proxy_widths'
    if not isinstance(value, dict):
        raise ConfigError("regimes", f"got {value!r}; {fix}")
    out: dict[int, dict[str, Any]] = {}
    for key, regime in value.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            raise ConfigError("regimes", f"key {key!r} is not a width; {fix}") from None
        if isinstance(key, (bool, float)) or width not in widths:
            raise ConfigError("regimes", f"width {key!r} is not one of proxy_widths {widths}; {fix}")
        if not isinstance(regime, dict) or not regime or set(regime) - {"lr", "warmup_steps", "rmsnorm_lr"}:
            raise ConfigError(
                "regimes", f"regimes[{width}] = {regime!r}; {fix} (lr, warmup_steps and/or rmsnorm_lr only)"
            )
        lr, warmup, rms_lr = regime.get("lr"), regime.get("warmup_steps"), regime.get("rmsnorm_lr")
        if lr is None and warmup is None and rms_lr is None:
            raise ConfigError("regimes", f"regimes[{width}] sets nothing; {fix}")
        for name, rate in (("lr", lr), ("rmsnorm_lr", rms_lr)):
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                     or not (math.isfinite(rate) and 0 < rate <= 1)):  # fmt: skip
                raise ConfigError("regimes", f"regimes[{width}].{name} = {rate!r}; use a learning rate in (0, 1]")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, (int, float))
                                   or not 0 <= warmup <= 10**9 or warmup != int(warmup)):  # fmt: skip
            raise ConfigError("regimes", f"regimes[{width}].warmup_steps = {warmup!r}; use an integer >= 0")
        out[width] = {k: v for k, v in (("lr", None if lr is None else float(lr)),
                                        ("warmup_steps", None if warmup is None else int(warmup)),
                                        ("rmsnorm_lr", None if rms_lr is None else float(rms_lr))) if v is not None}  # fmt: skip
    return dict(sorted(out.items()))
