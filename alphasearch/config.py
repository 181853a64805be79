"""Configuration of one proxy model and one training run.

Plain dataclasses (no torch import) so configs stay cheap to import, serialisable to JSON for the
database and YAML from users, and are checked early: every invalid value raises `ConfigError` naming
the field and the fix, before any tensor is allocated.

    >>> cfg = ModelConfig(width=64, depth=4, alpha_attn=0.8, alpha_ffn=0.2)
    >>> cfg.n_heads, cfg.ffn_hidden, cfg.alpha_final
    (2, 192, 0.2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from alphasearch.errors import ConfigError

NormName = Literal["dyt", "derf", "rmsnorm", "layernorm"]
NORMS: tuple[str, ...] = ("dyt", "derf", "rmsnorm", "layernorm")
ALPHA_NORMS: tuple[str, ...] = ("dyt", "derf")  # the families that have a searchable alpha0
ATTENTIONS: tuple[str, ...] = ("standard", "differential")
NORM_POSITIONS: tuple[str, ...] = ("pre", "post")
# How the learnable scalar after the embedding is initialised (see docs/science.md and PILOT.md):
#   "unit_rms":   1 / init_std, so the embedding output has RMS ~1 at EVERY width. At width 4096 this is
#                 50 vs sqrt(4096) = 64, i.e. the regime the published rule gives a large model, kept at
#                 small proxy widths, where sqrt(width) would starve the DyT inputs (RMS 0.16 at width 64).
#   "sqrt_width": the published DyT LLM rule, sqrt(width).
#   "one":        1.0 (what RMSNorm/LayerNorm models use; frozen for them).
EMBED_SCALES: tuple[str, ...] = ("unit_rms", "sqrt_width", "one")
# How the weight matrices are initialised across widths (docs/science.md, "init scaling"):
#   "width_matched": normal(0, 0.02 * sqrt(init_reference_width / width)). A linear layer then maps a unit-RMS
#                    input to the same output RMS as the reference (target) model initialised with the usual
#                    0.02, so every block's contribution to the residual stream starts at the target's
#                    relative size. With a fixed 0.02 a width-64 proxy's blocks start 8x weaker than a width-4096
#                    model's; its optimiser then grows them until the residual stream reaches RMS 15-50 and
#                    every DyT past the first layer is >90% saturated (measured, docs/science.md).
#   "fixed":         normal(0, 0.02) at every width (GPT-2/LLaMA convention; the pre-2026-12 default).
INIT_SCALINGS: tuple[str, ...] = ("width_matched", "fixed")
REFERENCE_INIT_STD = 0.02
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, f"got {value!r}; use one of {', '.join(choices)}")


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    kind = "a positive integer" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"got {value!r}; use {kind}")
    if integer and not isinstance(value, int):
        raise ConfigError(name, f"got {value!r}; use {kind}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(name, f"got {value!r}; use {kind}")


class _Serialisable:
    """to_dict / from_dict shared by the config dataclasses (unknown keys are an error, not ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # type: ignore[no-untyped-def]
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; known fields are {', '.join(sorted(known))}")
        return cls(**data)


@dataclass
class ModelConfig(_Serialisable):
    """The LLaMA-style proxy LM (DESIGN §4). Derived fields are filled in by __post_init__."""

    width: int = 64  # d_model
    depth: int = 4  # number of blocks
    head_dim: int = 32  # per-head size; even, for RoPE
    n_heads: int | None = None  # default width // head_dim
    ffn_hidden: int | None = None  # default 8/3 * width rounded up to a multiple of 32 (SwiGLU)
    vocab_size: int = 256  # bytes
    max_seq_len: int = 1024  # RoPE table length; must cover TrainConfig.seq_len
    norm: str = "dyt"  # dyt | derf | rmsnorm | layernorm
    norm_position: str = "pre"  # pre | post (DyT/Derf only validated pre-norm)
    allow_untested_norm_position: bool = False  # explicit opt-in for DyT/Derf in post-norm
    dyt_bias: bool = False  # LLM DyT has no bias
    alpha_attn: float = 0.5  # alpha0 of the norm before attention
    alpha_ffn: float = 0.5  # alpha0 of the norm before the FFN
    alpha_final: float | None = None  # alpha0 of the final norm; defaults to alpha_ffn ("other")
    derf_shift: float = 0.0  # shift0 of Derf
    attention: str = "standard"  # standard | differential
    embed_scale: str = "unit_rms"  # see EMBED_SCALES above
    init_std: float | None = None  # normal(0, init_std) for every weight matrix; None: from init_scaling
    init_scaling: str = "width_matched"  # see INIT_SCALINGS above; ignored when init_std is given
    init_reference_width: int = 4096  # width_matched: the (target) width whose 0.02 init the proxy copies

    def __post_init__(self) -> None:
        _check_positive("width", self.width, integer=True)
        _check_positive("depth", self.depth, integer=True)
        _check_positive("head_dim", self.head_dim, integer=True)
        _check_positive("vocab_size", self.vocab_size, integer=True)
        _check_positive("max_seq_len", self.max_seq_len, integer=True)
        _check_choice("init_scaling", self.init_scaling, INIT_SCALINGS)
        _check_positive("init_reference_width", self.init_reference_width, integer=True)
        if self.init_std is None:
            self.init_std = REFERENCE_INIT_STD * (
                math.sqrt(self.init_reference_width / self.width) if self.init_scaling == "width_matched" else 1.0
            )
        _check_positive("init_std", self.init_std)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("attention", self.attention, ATTENTIONS)
        _check_choice("embed_scale", self.embed_scale, EMBED_SCALES)
        if self.n_heads is None:
            if self.width % self.head_dim:
                raise ConfigError(
                    "width",
                    f"width {self.width} is not divisible by head_dim {self.head_dim}; "
                    f"use a width that is a multiple of {self.head_dim} or set head_dim/n_heads",
                )
            self.n_heads = self.width // self.head_dim
        else:
            _check_positive("n_heads", self.n_heads, integer=True)
            if self.width % self.n_heads:
                raise ConfigError(
                    "n_heads",
                    f"width {self.width} is not divisible by n_heads {self.n_heads}; "
                    "pick n_heads that divides width",
                )
            if self.width // self.n_heads != self.head_dim:
                self.head_dim = self.width // self.n_heads
        if self.attention == "differential":
            # Diff attention splits each head's q/k into two halves, each needing even size for RoPE.
            if self.head_dim % 4:
                raise ConfigError(
                    "head_dim",
                    f"differential attention needs head_dim divisible by 4 (two RoPE halves), "
                    f"got {self.head_dim}; use e.g. head_dim=32",
                )
        elif self.head_dim % 2:
            raise ConfigError(
                "head_dim", f"RoPE needs an even head_dim, got {self.head_dim}; use an even head_dim"
            )
        if self.ffn_hidden is None:
            self.ffn_hidden = 32 * math.ceil(8 * self.width / 3 / 32)
        else:
            _check_positive("ffn_hidden", self.ffn_hidden, integer=True)
        for name in ("alpha_attn", "alpha_ffn"):
            _check_positive(name, getattr(self, name))
        if self.alpha_final is None:
            self.alpha_final = self.alpha_ffn
        _check_positive("alpha_final", self.alpha_final)
        if (
            self.norm in ALPHA_NORMS
            and self.norm_position == "post"
            and not self.allow_untested_norm_position
        ):
            raise ConfigError(
                "norm_position",
                f"{self.norm} in post-norm position was never validated by the DyT authors "
                "(they only validated pre-norm); use norm_position='pre', or set "
                "allow_untested_norm_position=True to run this untested combination anyway",
            )

    @property
    def has_alpha(self) -> bool:
        """True when the norm family has an alpha0 to search (dyt, derf)."""
        return self.norm in ALPHA_NORMS


@dataclass
class TrainConfig(_Serialisable):
    """One training run (DESIGN §5). The objective is the final validation loss in nats/byte."""

    steps: int = 300
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3  # peak learning rate
    warmup_steps: int = 20  # linear warmup, then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1  # on weight matrices only (not on alpha, norm weights, embed scale)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 50  # evaluate val loss every N steps and at the end
    eval_batches: int = 4  # size of the fixed held-out slice, in batches
    seed: int = 0
    precision: str = "bf16"  # bf16 autocast where the device supports it, else fp32
    device: str = "auto"  # auto | cpu | cuda
    # Divergence: non-finite loss, or the (smoothed) train loss this many nats above its running minimum.
    divergence_margin: float = 2.0
    # Stalled: a run whose val loss is not `stall_margin` nats below the corpus's unigram entropy by the
    # checkpoint at `stall_check_at` of its steps (and at the end) learned nothing input-dependent.
    # It stops there and is reported as stalled: a result, like divergence. 0 disables the checkpoint.
    diagnostics: bool = True  # per-layer saturation / activation RMS / alpha trajectories at eval steps
    detect_stalls: bool = True  # off only for toy runs too short to learn anything (the smoke preset)
    stall_margin: float = 0.1
    stall_check_at: float = 0.5
    threads: int | None = None  # torch intra-op threads; None keeps torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_interval", "eval_batches"):
            _check_positive(name, getattr(self, name), integer=True)
        for name in ("lr", "grad_clip", "divergence_margin"):
            _check_positive(name, getattr(self, name))
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"got {self.warmup_steps!r}; use an integer >= 0")
        if not (0.0 <= self.min_lr_ratio <= 1.0):
            raise ConfigError("min_lr_ratio", f"got {self.min_lr_ratio!r}; use a number in [0, 1]")
        if not (0.0 <= self.weight_decay < 10):
            raise ConfigError("weight_decay", f"got {self.weight_decay!r}; use a number >= 0 (e.g. 0.1)")
        for name in ("beta1", "beta2"):
            if not (0.0 <= getattr(self, name) < 1.0):
                raise ConfigError(name, f"got {getattr(self, name)!r}; use a number in [0, 1)")
        if not (0.0 <= self.stall_check_at <= 1.0):
            raise ConfigError("stall_check_at", f"got {self.stall_check_at!r}; use a fraction of the steps in [0, 1]")
        if self.stall_margin < 0:
            raise ConfigError("stall_margin", f"got {self.stall_margin!r}; use a number of nats >= 0")
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        if self.threads is not None:
            _check_positive("threads", self.threads, integer=True)

    @property
    def tokens(self) -> int:
        """Training tokens (bytes) this run consumes."""
        return self.steps * self.batch_size * self.seq_len


def default_data_dir() -> Path:
    """Where alphasearch keeps its files on this machine: $ALPHASEARCH_DATA_DIR or ~/.local/share/alphasearch.

    The library reads the environment directly (no pydantic-settings here: the library stays free of service
    dependencies); the service's settings use the same variable, so both agree.
    """
    import os

    root = os.environ.get("ALPHASEARCH_DATA_DIR") or str(Path.home() / ".local" / "share" / "alphasearch")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_database_url() -> str:
    """$ALPHASEARCH_DATABASE_URL, else a SQLite file in the data dir (the embedded default)."""
    import os

    url = os.environ.get("ALPHASEARCH_DATABASE_URL")
    return url or f"sqlite:///{default_data_dir() / 'alphasearch.db'}"
