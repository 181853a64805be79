"""The mailbox between a study's driver and its running trials: progress goes up, verdicts come down.

One `ProgressHub` actor per executor (no CPU reserved, placed on the driver's node). A trial's worker
opens a `TrialChannel` on it: it announces where it runs (pid, node), queues each intermediate val loss,
and a background thread exchanges the queue for the trial's verdict every `EXCHANGE_INTERVAL_S` (and
at once after an evaluation step), so training never waits on the network. The driver drains the hub in
`RayExecutor.poll()`, calls each trial's `on_progress` on its own thread, and posts "pruned" /
"cancelled" verdicts back; the worker's next `on_step` returns the verdict and the run stops there.

Latency from a reported val loss to the stop is about one driver tick plus one exchange interval
(well under a second), so a pruned trial on Ray runs a few steps past the point where it would have
stopped in-process; the pruning decision itself sees the same values at the same steps.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:  # the hub's process imports this module: keep torch out of it
    from alphasearch.train import StepEvent

EXCHANGE_INTERVAL_S = 0.25  # worker ↔ hub round trip cadence; also bounds how late a verdict lands


@ray.remote(num_cpus=0, max_restarts=0)
class ProgressHub:
    """Per-executor mailbox. Calls are tiny and run one at a time, so plain attributes need no lock."""

    def __init__(self) -> None:
        self._messages: list[tuple[str, int, Any]] = []  # ("started" | "progress", handle, payload)
        self._verdicts: dict[int, str] = {}

    def started(self, handle: int, where: dict[str, Any]) -> str | None:
        self._messages.append(("started", handle, where))
        return self._verdicts.get(handle)

    def exchange(self, handle: int, progress: list[tuple[int, float]]) -> str | None:
        self._messages.extend(("progress", handle, item) for item in progress)
        return self._verdicts.get(handle)

    def set_verdict(self, handle: int, reason: str) -> None:
        self._verdicts[handle] = reason

    def drain(self, forget: list[int]) -> list[tuple[str, int, Any]]:
        """Hand the driver everything reported since the last drain; drop verdicts of ended trials."""
        for handle in forget:
            self._verdicts.pop(handle, None)
        messages, self._messages = self._messages, []
        return messages


class TrialChannel:
    """Worker side: `on_step` for `run_request`, relaying val losses up and the verdict down."""

    def __init__(self, hub: Any, handle: int) -> None:
        self.hub, self.handle = hub, handle
        self.verdict: str | None = None
        self.where: dict[str, Any] = {}
        self._pending: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, where: dict[str, Any]) -> str | None:
        """Announce the trial (synchronously, so the driver knows its pid early); return an early verdict."""
        self.where = {**where, "pid": os.getpid(), "started_at": time.time()}
        self.verdict = ray.get(self.hub.started.remote(self.handle, self.where))
        self._thread = threading.Thread(target=self._loop, name=f"trial-{self.handle}-channel", daemon=True)
        self._thread.start()
        return self.verdict

    def on_step(self, event: StepEvent) -> str | None:
        if event.val_loss is not None:
            with self._lock:
                self._pending.append((event.step, event.val_loss))
            self._wake.set()
        return self.verdict

    def close(self) -> None:
        """Stop the exchange thread and flush what is left, so the driver sees every report."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._exchange()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(EXCHANGE_INTERVAL_S)
            self._wake.clear()
            if not self._closed.is_set():
                self._exchange()

    def _exchange(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            verdict = ray.get(self.hub.exchange.remote(self.handle, batch), timeout=30)
        except ray.exceptions.RayError:
            # The hub lives and dies with the driver; without it nobody reads this trial's result, and Ray
            # ends the task on its own when the driver is gone. Keep training rather than crash on it.
            return
        if verdict:
            self.verdict = verdict
