"""Where trials run: the small `Executor` interface the study driver talks to, and an in-process one.

The driver submits `TrialRequest`s (one training run each: model config, train config, corpus) and
polls for terminal events. While a run trains, the executor calls the driver's `on_progress` callback
(always on the driver's thread) with each intermediate validation loss; the callback answers None to go
on, or "pruned" / "cancelled" to stop that run. The in-process executor runs one trial at a time inside
`poll()`; the Ray executor (workers/) runs many at once and relays progress and verdicts.

    >>> ex = InProcessExecutor()
    >>> handle = ex.submit(request, on_progress=lambda step, loss: None)  # doctest: +SKIP
    >>> [event] = ex.poll(timeout=None)  # doctest: +SKIP
    >>> event.result.final_val_loss  # doctest: +SKIP
    2.41
"""

from __future__ import annotations

import hashlib
import json
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from alphasearch.config import ModelConfig, TrainConfig
from alphasearch.train import StepEvent, TrainResult

ProgressCallback = Callable[[int, float], "str | None"]

# Files whose content decides what a trial computes: a change to any of them invalidates cached results.
_CODE_FILES = ("config.py", "nn.py", "model.py", "data.py", "train.py", "diagnostics.py")


@cache
def code_version() -> str:
    """Hash of the training code, so cached results never outlive a change to what they measured."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _CODE_FILES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TrialRequest:
    """One training run. Plain dicts so it pickles cheaply to Ray workers and hashes stably."""

    model: dict[str, Any]
    train: dict[str, Any]
    corpus: str | None = None  # None = default corpus; else a path
    label: str = ""  # for logs and progress bars only; not part of the identity

    @classmethod
    def build(cls, model: ModelConfig, train: TrainConfig, corpus: str | None, label: str = "") -> TrialRequest:
        return cls(model=model.to_dict(), train=train.to_dict(), corpus=corpus, label=label)

    def key(self) -> str:
        """Content address: same model, training, alphas, seed, corpus bytes and code → same key."""
        from alphasearch.data import load_corpus

        identity = {
            "model": self.model,
            "train": {k: v for k, v in self.train.items() if k not in ("threads", "device")},
            "corpus": load_corpus(self.corpus).fingerprint,
            "code": code_version(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def run_request(
    request: TrialRequest,
    on_step: Callable[[StepEvent], str | None] | None = None,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train what `request` describes. The one function every executor ends up calling."""
    from alphasearch.data import load_corpus
    from alphasearch.train import train

    train_dict = dict(request.train)
    if threads is not None:
        train_dict["threads"] = threads
    if device is not None:
        train_dict["device"] = device
    return train(
        ModelConfig.from_dict(request.model),
        TrainConfig.from_dict(train_dict),
        load_corpus(request.corpus),
        on_step=on_step,
    )


@dataclass
class Finished:
    handle: int
    result: TrainResult


@dataclass
class Failed:
    """The run crashed (a bug or a lost worker), as opposed to diverging, which is a result."""

    handle: int
    error: str
    infrastructure: bool = False  # True: the worker/node died; worth re-running elsewhere


Event = Finished | Failed


class Executor(ABC):
    """Runs TrialRequests. Implementations: InProcessExecutor here, RayExecutor in workers/."""

    #: How many trials can usefully run at once; the driver keeps this many in flight.
    capacity: int = 1

    @abstractmethod
    def submit(self, request: TrialRequest, on_progress: ProgressCallback) -> int:
        """Queue a run; return a handle. `on_progress(step, val_loss)` is called on the driver's thread."""

    @abstractmethod
    def poll(self, timeout: float | None) -> list[Event]:
        """Wait up to `timeout` seconds (None: until something ends) and return the runs that ended."""

    @abstractmethod
    def stop(self, handle: int, reason: str) -> None:
        """Ask a queued or running trial to stop ("pruned" | "cancelled"); it still ends with an event."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers; the executor is not used afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Queued:
    handle: int
    request: TrialRequest
    on_progress: ProgressCallback
    stop_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class InProcessExecutor(Executor):
    """Runs trials one after another in this process, inside `poll()`. No setup, no parallelism."""

    capacity = 1

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads
        self._queue: deque[_Queued] = deque()
        self._next = 0

    def submit(self, request: TrialRequest, on_progress: ProgressCallback) -> int:
        self._next += 1
        self._queue.append(_Queued(self._next, request, on_progress))
        return self._next

    def stop(self, handle: int, reason: str) -> None:
        for item in self._queue:
            if item.handle == handle:
                item.stop_reason = reason

    def poll(self, timeout: float | None) -> list[Event]:
        if not self._queue:
            return []
        item = self._queue.popleft()

        def on_step(event: StepEvent) -> str | None:
            if item.stop_reason:
                return item.stop_reason
            if event.val_loss is not None:
                return item.on_progress(event.step, event.val_loss)
            return None

        try:
            return [Finished(item.handle, run_request(item.request, on_step, threads=self.threads))]
        except Exception as exc:  # a crash is reported as an event; the study decides what it means
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return [Failed(item.handle, f"{detail}\n{traceback.format_exc(limit=5)}")]
