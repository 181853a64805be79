"""Population training: K proxies of one (width, depth, norm) trained as ONE batched model (issue 16).

At proxy widths (32-128) a training step is mostly per-op dispatch and small element-wise kernels, which
every trial pays alone. A population stacks K members' weights along a leading dimension and runs each
layer for all of them at once (batched matmuls, one element-wise kernel over K members' activations), so
that overhead is paid once per step instead of once per member. Measured on the 2-core AVX512-BF16 CPU
box, that overhead is only ~20-25% of a width-32 step and the population's K-fold working set costs about
as much in cache misses: 0.8-1.2x today's trial-steps per second, not a speed-up (docs/benchmarks.md,
"Population training"); the batching is meant for devices a single proxy leaves idle (GPU, not measured).

    >>> from alphasearch.config import ModelConfig, TrainConfig
    >>> from alphasearch.data import load_corpus
    >>> members = [Member(ModelConfig(width=32, alpha_attn=a, alpha_ffn=a), seed=0) for a in (0.2, 0.5, 1.0)]
    >>> results = train_population(members, TrainConfig(steps=20), load_corpus())  # doctest: +SKIP
    >>> [r.outcome for r in results]  # doctest: +SKIP
    ['completed', 'completed', 'completed']

What is shared and what is not:
- Shared: the architecture (every ModelConfig field but the alpha0s), the TrainConfig (lr schedule, steps,
  batch, clipping threshold, ...) and the DATA: every member sees the same training batches, drawn from
  `TrainConfig.seed`, and is scored on the same fixed validation slice. Comparisons between members are
  therefore paired (common random numbers): the data order is not a source of difference between alphas.
- Per member: alpha0s, the init seed (`Member.seed`: the weights are exactly those `ProxyLM` builds after
  `torch.manual_seed(seed)`, as `train` does), the loss, the AdamW moments, the gradient-norm clipping (each
  member's own norm, as if it trained alone), divergence and stall detection, the caller's prune/cancel
  verdicts, diagnostics, and the `TrainResult`.
A member trained here follows the same computation as `alphasearch.train.train` with `seed` = its init seed
= the data seed; the two differ only by float rounding (batched GEMMs and reductions associate sums
differently; tests/alphasearch/test_population.py bounds it).

Isolation: no operation mixes members (batched matmuls, per-row softmax/cross-entropy, per-member clipping;
AdamW is element-wise), so a NaN in one member cannot reach another. A member that stops (diverged,
stalled, pruned, cancelled) is DROPPED: its slice is removed from every weight and optimiser-state tensor,
and the remaining steps cost what a population without it costs.

Result records have `TrainResult`'s shape. Two fields mean "of the population": `wall_time_s` is the wall
time of the population run up to the member's end (members train concurrently), and `tokens_per_s` is the
member's own tokens over that time.

Not supported (ConfigError): differential attention (its per-layer lambda vectors are not batched here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from alphasearch.config import ModelConfig, TrainConfig
from alphasearch.diagnostics import Diagnostics
from alphasearch.errors import ConfigError
from alphasearch.model import ProxyLM, _QKVRope, _SiluGate, causal_attention, linear_input_dtype, rope_tables
from alphasearch.train import (
    STOP_REASONS,
    StepEvent,
    TrainResult,
    _DivergenceWatch,
    autocast_dtype,
    keep_freed_memory_for_reuse,
    lr_at,
    make_adamw,
    resolve_device,
)

if TYPE_CHECKING:
    from alphasearch.data import Corpus

__all__ = ["Member", "PopulationLM", "PopulationTrainer", "train_population", "OnMemberStep"]

# The fields a member may set on its own; every other ModelConfig field must agree across the population.
MEMBER_FIELDS = ("alpha_attn", "alpha_ffn", "alpha_final")

OnMemberStep = Callable[[int, StepEvent], "str | None"]  # (member index, event) -> None | pruned | cancelled


@dataclass(frozen=True)
class Member:
    """One proxy of a population: its model (alpha0s) and the seed its weights are initialised from."""

    model: ModelConfig
    seed: int = 0


# ---- the batched model ----------------------------------------------------------------------------


class _PopulationDyT(torch.autograd.Function):
    """DyT for K members at once: x (K, N, C), alpha (K,), weight/bias (K, C) -> weight * tanh(alpha x) + bias.

    The batched form of `alphasearch.nn._DyTFunction` (same maths, same sigmoid trick, same passes): the
    only change is that dL/dw and dL/dalpha are reduced per member (over dim 1; dL/dalpha as one batched
    dot product) instead of over everything.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        alpha: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        K = x.shape[0]
        two_alpha = (2.0 * alpha).view(K, 1, 1)
        s = torch.mul(x, two_alpha).sigmoid_()  # (K, N, C): sigmoid(2 alpha x)
        w = weight.view(K, 1, -1)
        two_w = 2.0 * w
        store = out_dtype if out_dtype is not None and bias is None else None
        if store is None or store == s.dtype:
            y = torch.addcmul(-w, s, two_w)  # weight * tanh(alpha * x)
        else:  # round on store
            y = torch.addcmul(-w, s, two_w, out=torch.empty(s.shape, dtype=store, device=s.device))
        if bias is not None:
            b = bias.view(K, 1, -1)
            y = y + b if out_dtype is None else torch.add(y, b, out=torch.empty(y.shape, dtype=out_dtype, device=y.device))
        ctx.save_for_backward(x, two_alpha, w, s)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, two_alpha, w, s = ctx.saved_tensors
        need_x, need_alpha, need_w, need_b, _ = ctx.needs_input_grad
        K = x.shape[0]
        acc = s.dtype
        grad_w = grad_b = grad_x = grad_alpha = None
        if need_w:
            grad_w = torch.addcmul(grad, grad, s, value=-2.0).sum(1, dtype=acc).neg_()  # (K, C)
        if need_b:
            grad_b = grad.sum(1, dtype=acc)
        if need_x or need_alpha:
            g = grad * (2.0 * w)  # dL/ds, fp32
            torch.ops.aten.sigmoid_backward.grad_input(g, s, grad_input=g)  # dL/dz in place
            if need_alpha:  # per member: 2 * <g_k, x_k>
                grad_alpha = 2.0 * torch.bmm(g.view(K, 1, -1), x.reshape(K, -1, 1).to(g.dtype)).view(K)
            if need_x:
                grad_x = g.mul_(two_alpha)
        return grad_x, grad_alpha, grad_w, grad_b, None


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not contain dots


class PopulationLM(nn.Module):
    """K `ProxyLM`s of one architecture with every parameter stacked along a leading member dimension.

    Parameters keep `ProxyLM`'s names (dots as "__") with shape (K, *ProxyLM shape); `member_state(k)`
    returns member k's weights as a `ProxyLM` state dict. `forward(idx, targets)` runs all members on the
    same token ids (B, T) and returns per-member mean losses (K,) or logits (K, B, T, V).
    """

    rope: torch.Tensor

    def __init__(self, members: Sequence[Member]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("members", "a population needs at least one member")
        cfg = members[0].model
        _check_same_architecture([m.model for m in members])
        if cfg.attention != "standard":
            raise ConfigError(
                "attention",
                f"population training supports attention='standard' only, got {cfg.attention!r}; "
                "train differential-attention proxies one at a time (alphasearch.train.train)",
            )
        self.cfg = cfg
        singles = []
        for m in members:
            torch.manual_seed(m.seed)  # exactly what train() does before building its model
            singles.append(ProxyLM(m.model))
        self.names = [n for n, _ in singles[0].named_parameters()]
        self.decayed = {n for n, p in singles[0].named_parameters() if p.dim() == 2}  # as ProxyLM.param_groups
        self.params = nn.ParameterDict()
        for i, name in enumerate(self.names):
            stacked = torch.stack([list(s.parameters())[i].detach() for s in singles])
            self.params[_key(name)] = nn.Parameter(stacked, requires_grad=list(singles[0].parameters())[i].requires_grad)
        rot = cfg.head_dim // 2
        self.register_buffer("rope", rope_tables(cfg.max_seq_len, cfg.head_dim).view(-1, 1, 1, rot, 2), persistent=False)

    @property
    def size(self) -> int:
        return int(self.params[_key(self.names[0])].shape[0])

    def p(self, name: str) -> torch.Tensor:
        return self.params[_key(name)]

    # ---- forward ----

    def _norm(self, prefix: str, x: torch.Tensor, out_dtype: torch.dtype | None) -> torch.Tensor:
        """The norm named `prefix` (e.g. "blocks.0.norm_attn") for all members; x (K, N, C)."""
        kind, K = self.cfg.norm, x.shape[0]
        weight = self.p(prefix + ".weight")
        bias = self.params.get(_key(prefix + ".bias"))
        if kind == "dyt":
            return _PopulationDyT.apply(x, self.p(prefix + ".alpha"), weight, bias, out_dtype)
        w = weight.view(K, 1, -1)
        if kind == "derf":
            z = torch.addcmul(self.p(prefix + ".shift").view(K, 1, 1), self.p(prefix + ".alpha").view(K, 1, 1), x)
            y = torch.erf(z) * w
        elif kind == "rmsnorm":  # as alphasearch.nn.RMSNorm: statistics in fp32, eps 1e-6
            xf = x.float()
            y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x) * w
        else:  # layernorm: per token, eps 1e-5, affine per member
            y = F.layer_norm(x, (x.shape[-1],), None, None, 1e-5) * w
        if bias is not None:
            y = y + bias.view(K, 1, -1)
        return y if out_dtype is None else y.to(out_dtype)

    @staticmethod
    def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x (K, N, in) @ weight(K, out, in)^T -> (K, N, out): one batched matmul (bf16 under autocast)."""
        return torch.bmm(x, weight.transpose(1, 2))

    def _block(self, i: int, x: torch.Tensor, B: int, T: int) -> torch.Tensor:
        cfg, K, N, C = self.cfg, x.shape[0], x.shape[1], x.shape[2]
        nh, hs = cfg.n_heads, cfg.head_dim
        assert nh is not None
        pre = f"blocks.{i}."
        post = cfg.norm_position == "post"

        def attn(h: torch.Tensor) -> torch.Tensor:
            qkv = self._linear(h, self.p(pre + "attn.qkv.weight")).view(K * B, T, 3, nh, hs)
            q, k, v = _QKVRope.apply(qkv, self.rope[:T].float())  # members fold into the batch
            y = causal_attention(q, k, v)  # (K*B, nh, T, hs)
            return self._linear(y.transpose(1, 2).reshape(K, N, C), self.p(pre + "attn.proj.weight"))

        def ffn(h: torch.Tensor) -> torch.Tensor:
            gate_up = self._linear(h, self.p(pre + "ffn.gate_up.weight"))
            return self._linear(_SiluGate.apply(gate_up), self.p(pre + "ffn.down.weight"))

        if post:
            x = self._norm(pre + "norm_attn", x + attn(x), None)
            return self._norm(pre + "norm_ffn", x + ffn(x), None)
        lin = linear_input_dtype(x)
        x = x + attn(self._norm(pre + "norm_attn", x, lin))
        return x + ffn(self._norm(pre + "norm_ffn", x, lin))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ConfigError("max_seq_len", f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}; raise max_seq_len")
        K, V, C = self.size, self.cfg.vocab_size, self.cfg.width
        emb = self.p("tok_emb.weight")  # (K, V, C): member k's rows at k*V + token in the flat view
        offsets = torch.arange(K, device=idx.device).view(K, 1) * V
        flat_idx = idx.reshape(1, B * T) + offsets  # (K, N)
        x = F.embedding(flat_idx, emb.reshape(K * V, C)) * self.p("embed_scale").view(K, 1, 1)  # (K, N, C)
        for i in range(self.cfg.depth):
            x = self._block(i, x, B, T)
        logits = self._linear(self._norm("norm_final", x, linear_input_dtype(x)), self.p("head.weight"))
        if targets is None:
            return logits.view(K, B, T, V)
        # One cross-entropy per member, as ProxyLM computes it (the same op, fp32): the logits of all members
        # at once are K x 4-8 MiB in fp32, past glibc's mmap threshold and the caches, and measured 2x slower
        # than K member-sized calls at K = 8.
        flat = targets.reshape(B * T)
        return torch.stack([F.cross_entropy(logits[k].float(), flat) for k in range(K)])  # (K,) nats per token

    # ---- members ----

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as a ProxyLM state dict (views; copy before keeping)."""
        return {name: self.p(name)[k] for name in self.names}

    def keep(self, rows: Sequence[int]) -> dict[nn.Parameter, nn.Parameter]:
        """Keep only the members at `rows` (positions in the current population); returns old -> new params."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.rope.device)
        mapping: dict[nn.Parameter, nn.Parameter] = {}
        for name in self.names:
            old = self.params[_key(name)]
            new = nn.Parameter(old.detach().index_select(0, index), requires_grad=old.requires_grad)
            self.params[_key(name)] = new
            mapping[old] = new
        return mapping

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as `ProxyLM.param_groups`: decay on what is a weight matrix in one member."""
        decay = [self.p(n) for n in self.names if n in self.decayed and self.p(n).requires_grad]
        rest = [self.p(n) for n in self.names if n not in self.decayed and self.p(n).requires_grad]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _check_same_architecture(cfgs: Sequence[ModelConfig]) -> None:
    first = cfgs[0]
    for i, cfg in enumerate(cfgs[1:], start=1):
        for f in fields(ModelConfig):
            if f.name in MEMBER_FIELDS:
                continue
            if getattr(cfg, f.name) != getattr(first, f.name):
                raise ConfigError(
                    "members",
                    f"member {i} has {f.name}={getattr(cfg, f.name)!r} but member 0 has {getattr(first, f.name)!r}; "
                    f"a population shares everything but {', '.join(MEMBER_FIELDS)}: split it by architecture",
                )


def clip_per_member(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to total 2-norm `max_norm`, as `clip_grad_norm_` does for one model.

    Returns the per-member norms before clipping (K,). A non-finite norm stays in its own member's row.
    """
    grads = [p.grad for p in params if p.grad is not None]
    K = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), dim=1, dtype=torch.float32) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(K, *([1] * (g.dim() - 1))).to(g.dtype))
    return total


# ---- the trainer ----------------------------------------------------------------------------------


@dataclass
class _MemberRun:
    """The bookkeeping of one member while it trains (index = its position in the caller's list)."""

    index: int
    watch: _DivergenceWatch
    diagnostics: Diagnostics | None
    val_curve: list[tuple[int, float]]
    steps_done: int = 0
    diverged_at: int | None = None
    stalled_at: int | None = None
    stopped: str | None = None

    @property
    def finished(self) -> bool:
        return self.diverged_at is not None or self.stalled_at is not None or self.stopped is not None


class PopulationTrainer:
    """Trains a population step by step; `run()` returns one `TrainResult` per member, in member order."""

    def __init__(
        self,
        members: Sequence[Member],
        train_cfg: TrainConfig,
        corpus: Corpus,
        *,
        on_step: OnMemberStep | None = None,
    ) -> None:
        if not members:
            raise ConfigError("members", "a population needs at least one member")
        if train_cfg.seq_len > members[0].model.max_seq_len:
            raise ConfigError(
                "seq_len",
                f"seq_len {train_cfg.seq_len} exceeds the model's max_seq_len {members[0].model.max_seq_len}; "
                "raise ModelConfig.max_seq_len or shorten seq_len",
            )
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        keep_freed_memory_for_reuse()
        self.cfg = train_cfg
        self.members = list(members)
        self.on_step = on_step
        self.device = resolve_device(train_cfg.device)
        self.dtype = autocast_dtype(self.device, train_cfg.precision)
        self.model = PopulationLM(self.members).to(self.device)
        self.optimizer = make_adamw(self.model.param_groups(train_cfg.weight_decay), train_cfg)
        self.sampler = corpus.batch_sampler(train_cfg.batch_size, train_cfg.seq_len, seed=train_cfg.seed)
        self.val_batches = corpus.val_batches(train_cfg.eval_batches, train_cfg.batch_size, train_cfg.seq_len)
        self.entropy = corpus.unigram_entropy()
        self.stall_level = self.entropy - train_cfg.stall_margin if train_cfg.detect_stalls else math.inf
        check_at = train_cfg.stall_check_at if train_cfg.detect_stalls else 0.0
        self.stall_step = math.ceil(check_at * train_cfg.steps) if check_at else None
        self.runs = [
            _MemberRun(i, _DivergenceWatch(train_cfg.divergence_margin), Diagnostics() if train_cfg.diagnostics else None, [])
            for i in range(len(self.members))
        ]
        self.active: list[int] = list(range(len(self.members)))  # member index at each population row
        self.results: dict[int, TrainResult] = {}
        self._single: ProxyLM | None = None  # one member's ProxyLM, reloaded for diagnostics and alphas
        self._start = 0.0

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def _member_model(self, row: int) -> ProxyLM:
        """A ProxyLM holding the member at population row `row` (what Diagnostics and alphas() read)."""
        k = self.active[row]
        if self._single is None:
            self._single = ProxyLM(self.members[k].model).to(self.device)
        self._single.load_state_dict(self.model.member_state(row))
        return self._single

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        """Mean val loss per row over the fixed validation batches (nats/byte)."""
        was = self.model.training
        self.model.eval()
        total = torch.zeros(self.model.size, device=self.device)
        for x, y in self.val_batches:
            with self._autocast():
                total += self.model(x.to(self.device), y.to(self.device))
        self.model.train(was)
        return (total / len(self.val_batches)).tolist()

    def _finish(self, row: int) -> None:
        run = self.runs[self.active[row]]
        model = self._member_model(row)
        wall = time.perf_counter() - self._start
        finished = run.diverged_at is None and run.stopped is None
        cfg = self.cfg
        self.results[run.index] = TrainResult(
            final_val_loss=run.val_curve[-1][1] if finished and run.val_curve else None,
            val_curve=run.val_curve,
            train_loss=run.watch.ema,
            diverged=run.diverged_at is not None,
            diverged_at_step=run.diverged_at,
            stopped=run.stopped,
            steps_done=run.steps_done,
            alphas=model.alphas(),
            embed_scale=model.embed_scale_value(),
            tokens_per_s=run.steps_done * cfg.batch_size * cfg.seq_len / max(wall, 1e-9),
            wall_time_s=wall,
            n_params=model.num_params(),
            device=str(self.device),
            precision="bf16" if self.dtype is not None else "fp32",
            diagnostics=run.diagnostics.to_dict() if run.diagnostics is not None else {},
            stalled=run.stalled_at is not None,
            stalled_at_step=run.stalled_at,
            unigram_entropy=self.entropy,
        )

    def drop(self, rows: Sequence[int]) -> None:
        """Finish the members at population `rows` and remove them from the model and the optimiser."""
        rows = sorted(set(rows))
        if not rows:
            return
        for row in rows:
            self._finish(row)
        keep = [r for r in range(len(self.active)) if r not in rows]
        self.active = [self.active[r] for r in keep]
        if not keep:
            return
        old_state = self.optimizer.state
        mapping = self.model.keep(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.optimizer = make_adamw(self.model.param_groups(self.cfg.weight_decay), self.cfg)
        for old, new in mapping.items():
            if old in old_state:  # per-member moments lose the dropped rows; the step count is shared
                self.optimizer.state[new] = {
                    k: (v.index_select(0, index) if v.dim() > 0 else v.clone()) for k, v in old_state[old].items()
                }

    def step(self, step: int) -> None:
        """One optimiser step for every active member, then the per-member checks (may drop members)."""
        cfg = self.cfg
        lr = lr_at(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = next(self.sampler)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self._autocast():
            losses = self.model(x, y)  # (K,)
        losses.sum().backward()  # members share no parameter: each gets exactly its own gradient
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norms = clip_per_member(params, cfg.grad_clip).tolist()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        done = step + 1
        loss_values = losses.detach().tolist()  # one host sync per step, as train()
        stop: list[int] = []
        for row, k in enumerate(self.active):
            run = self.runs[k]
            run.steps_done = done
            if run.watch.update(loss_values[row]):
                run.diverged_at = done
                stop.append(row)
        self.drop(stop)  # diverged members leave before evaluation, as train() breaks before it
        if not self.active:
            return
        val: list[float | None] = [None] * len(self.active)
        if done % cfg.eval_interval == 0 or done == cfg.steps:
            val = list(self.evaluate())
            stop = []
            for row, k in enumerate(self.active):
                run, v = self.runs[k], val[row]
                assert v is not None
                if not math.isfinite(v):
                    run.diverged_at = done
                    stop.append(row)
                    continue
                run.val_curve.append((done, v))
                if run.diagnostics is not None:
                    with self._autocast():
                        run.diagnostics.record(
                            self._member_model(row), self.val_batches[0][0].to(self.device), step=done, grad_norm=grad_norms[row]
                        )
                at_checkpoint = self.stall_step is not None and done >= self.stall_step
                if (at_checkpoint or done == cfg.steps) and v > self.stall_level:
                    run.stalled_at = done
                    stop.append(row)
        if self.on_step is not None:
            elapsed = time.perf_counter() - self._start
            for row, k in enumerate(self.active):
                run = self.runs[k]
                if run.finished:  # no on_step for a member that ended at this step, as in train()
                    continue
                event = StepEvent(
                    step=done, total_steps=cfg.steps, train_loss=loss_values[row], lr=lr, val_loss=val[row], elapsed_s=elapsed
                )
                verdict = self.on_step(k, event)
                if verdict:
                    if verdict not in STOP_REASONS:
                        raise ValueError(f"on_step returned {verdict!r}; return None, 'pruned' or 'cancelled'")
                    run.stopped = verdict
        self.drop([row for row, k in enumerate(self.active) if self.runs[k].finished])

    def run(self) -> list[TrainResult]:
        self._start = time.perf_counter()
        for step in range(self.cfg.steps):
            self.step(step)
            if not self.active:
                break
        self.drop(list(range(len(self.active))))  # the members that ran to the end
        return [self.results[i] for i in range(len(self.members))]


def train_population(
    members: Sequence[Member],
    train_cfg: TrainConfig,
    corpus: Corpus,
    *,
    on_step: OnMemberStep | None = None,
) -> list[TrainResult]:
    """Train `members` as one population on `corpus`; one `TrainResult` per member, in order (never raises
    for divergence). Data batches come from `train_cfg.seed`; member k's weights from `members[k].seed`."""
    return PopulationTrainer(members, train_cfg, corpus, on_step=on_step).run()
