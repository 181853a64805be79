"""RayExecutor: the study driver's `Executor` on a Ray cluster, local by default (DESIGN §2).

Each training run is one Ray task declaring `num_cpus_per_trial` CPUs and `num_gpus_per_trial` GPUs;
inside it torch uses exactly that many threads, and CUDA only when the task holds a GPU. Intermediate
val losses and stop verdicts travel through a `ProgressHub` actor (workers/progress.py), so pruning and
cancellation behave as they do in-process.

    >>> from alphasearch.search import StudyRunner
    >>> with RayExecutor() as ex:  # doctest: +SKIP
    ...     StudyRunner(spec, "my-study", "sqlite:///study.db", ex).run()
    'completed'

Failures. A run whose worker process or node died (or whose owner/object was lost) ends as
`Failed(infrastructure=True)`; a run that raised ends as `Failed(infrastructure=False)` with the remote
traceback; a diverged run is a `Finished` result. Retries happen in ONE place, the study driver
(`StudyRunner(max_retries=...)`), which stores each failure's reason on the Optuna trial: Ray's own task
retries are off (`max_retries=0`) because a retry inside Ray is invisible to the study, leaves no reason
behind, and would multiply with the driver's. A dead driver's trials are failed and re-queued by Optuna's
heartbeat + `RetryHeartbeatStaleTrialCallback` (alphasearch.search), whatever the executor; Ray itself
ends the dead driver's runs (their owner is gone), so nothing trains on for nobody.

Stops. `stop()` posts the verdict to the hub; the worker reads it within `progress.EXCHANGE_INTERVAL_S` and its
next step returns it (a pruned or cancelled `TrainResult`). A run still going `FORCE_STOP_AFTER_S` later
(stuck in one very long step, say) is killed with `ray.cancel(force=True)` and ends as
`Failed(infrastructure=False)`: a stopped run is never re-run.

Ray stays connected for the life of the process once started (one `ray.init` per process, reused by
every executor); `close()` releases this executor's trials and hub only.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions as rex
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from alphasearch.errors import ConfigError
from alphasearch.executor import (
    Event,
    Executor,
    Failed,
    Finished,
    ProgressCallback,
    TrialRequest,
    run_request,
)
from alphasearch.train import TrainResult
from workers import cluster
from workers.progress import ProgressHub, TrialChannel

logger = logging.getLogger(__name__)

DRIVER_TICK_S = 0.2  # how often poll() relays progress while nothing ends
FORCE_STOP_AFTER_S = 5.0  # a stopped run still going after this is killed (the promise is: gone in 10 s)
CAPACITY_REFRESH_S = 5.0  # re-count cluster slots this often, so nodes that join are used

# The worker process, its node or the object holding the result is gone: the run itself did nothing
# wrong and may succeed elsewhere. (RayActorError covers ActorDiedError / ActorUnavailableError;
# ObjectLostError covers OwnerDiedError.)
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.RayActorError,
    rex.ObjectLostError,
    rex.OutOfMemoryError,  # Ray's OOM killer: the node was short of memory, possibly from other tasks
    rex.OutOfDiskError,
    rex.RaySystemError,
)


@dataclass
class _Run:
    handle: int
    request: TrialRequest
    on_progress: ProgressCallback
    ref: ray.ObjectRef | None = None  # None while the run waits in this executor's queue
    where: dict[str, Any] | None = None  # pid, node_id, node_ip, device once the worker announced itself
    last_step: int = 0
    stop_reason: str | None = None
    stop_deadline: float | None = None
    force_stopped: bool = False


class RayExecutor(Executor):
    """Runs each TrialRequest as a Ray task; `slots` is how many the cluster holds at once.

    address: a Ray cluster ("host:port" or "ray://..."); None → $RAY_ADDRESS, else an embedded local
        instance started on first use with this machine's CPUs.
    num_cpus_per_trial / num_gpus_per_trial: resources each run declares (fractional GPUs share one).
    max_concurrency: cap on runs going at once, below what the cluster could hold (None: no cap).
    queue_ahead: runs accepted beyond the slots and held here; one is handed to Ray the moment a run
        ends (inside `poll`, before the driver records the run that ended in Optuna, ~0.1-0.2 s per trial
        on SQLite), so a slot does not idle through that bookkeeping. `capacity` = slots + queue_ahead.
        (Held here rather than in Ray's own queue: a pending Ray lease makes Ray start a fresh worker
        process, which pays torch's import and start-up, while the one that just finished goes idle.)
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_trial: float = 1,
        num_gpus_per_trial: float = 0,
        max_concurrency: int | None = None,
        *,
        queue_ahead: int = 1,
    ) -> None:
        if num_cpus_per_trial <= 0:
            raise ConfigError(
                "num_cpus_per_trial", f"got {num_cpus_per_trial!r}; give each trial a CPU share > 0"
            )
        if num_gpus_per_trial < 0:
            raise ConfigError(
                "num_gpus_per_trial", f"got {num_gpus_per_trial!r}; use 0 (CPU only) or a GPU share > 0"
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(
                "max_concurrency", f"got {max_concurrency!r}; use None (what the cluster holds) or >= 1"
            )
        self.address = address
        self.num_cpus_per_trial = num_cpus_per_trial
        self.num_gpus_per_trial = num_gpus_per_trial
        if queue_ahead < 0:
            raise ConfigError("queue_ahead", f"got {queue_ahead!r}; use 0 (no queue) or more")
        self.max_concurrency = max_concurrency
        self.queue_ahead = queue_ahead
        self._hub: Any = None
        self._runs: dict[int, _Run] = {}
        self._waiting: deque[int] = deque()  # handles accepted but not yet handed to Ray
        self._by_ref: dict[ray.ObjectRef, int] = {}
        self._unstarted_stops: list[Event] = []  # runs stopped while waiting here, reported by poll()
        self._ended: list[int] = []  # handles whose verdicts the hub may forget
        self._next = 0
        self._cluster_slots = -1  # not counted yet
        self._counted_at = -float("inf")
        self._lock = threading.Lock()  # guards _runs for readers on other threads (running_trials)

    # -- connection --------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._hub is not None:
            return
        cluster.connect(self.address)
        self._hub = self._new_hub()

    def _new_hub(self) -> Any:
        # The hub sits on the driver's node: it lives and dies with this driver, not with a worker node.
        here = ray.get_runtime_context().get_node_id()
        return ProgressHub.options(  # type: ignore[attr-defined]  # added by @ray.remote
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
        ).remote()

    @property
    def slots(self) -> int:
        """How many runs go at once: what the alive nodes hold (re-counted every few seconds), capped."""
        self._ensure_started()
        now = time.monotonic()
        if now - self._counted_at >= CAPACITY_REFRESH_S:
            slots = cluster.trial_slots(self.num_cpus_per_trial, self.num_gpus_per_trial)
            if slots == 0 and self._cluster_slots != 0:
                logger.warning(
                    "no alive Ray node can hold a trial needing %s CPUs and %s GPUs; waiting for nodes to join",
                    self.num_cpus_per_trial,
                    self.num_gpus_per_trial,
                )
            self._cluster_slots, self._counted_at = slots, now
        if self.max_concurrency is not None:
            return min(self._cluster_slots, self.max_concurrency)
        return self._cluster_slots

    @property  # the base class declares a constant; here it follows the cluster
    def capacity(self) -> int:  # type: ignore[override]
        """Runs the driver keeps in flight: the slots plus `queue_ahead` waiting here for one."""
        slots = self.slots
        return slots + self.queue_ahead if slots else 0

    # -- Executor ----------------------------------------------------------------------------------
    def submit(self, request: TrialRequest, on_progress: ProgressCallback) -> int:
        self._ensure_started()
        self._next += 1
        run = _Run(self._next, request, on_progress)
        with self._lock:
            self._runs[run.handle] = run
        self._waiting.append(run.handle)
        self._launch_waiting()
        return run.handle

    def stop(self, handle: int, reason: str) -> None:
        run = self._runs.get(handle)
        if run is None or run.stop_reason is not None:
            return
        run.stop_reason = reason
        if run.ref is None:  # still waiting here: it never reaches Ray
            self._waiting.remove(handle)
            self._forget(run)
            self._unstarted_stops.append(Failed(handle, f"stopped ({reason}) before it started"))
            return
        run.stop_deadline = time.monotonic() + FORCE_STOP_AFTER_S
        self._post_verdict(handle, reason)
        if run.where is None:
            # Not known to have started: drop it from Ray's queue. If it did just start, Ray interrupts it,
            # which is the stop we want as well; either way it ends with an event below.
            ray.cancel(run.ref, force=False)

    def poll(self, timeout: float | None) -> list[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._launch_waiting()  # slots may have grown
            events, self._unstarted_stops = self._unstarted_stops, []
            wait_s = (
                DRIVER_TICK_S
                if deadline is None
                else max(0.0, min(DRIVER_TICK_S, deadline - time.monotonic()))
            )
            refs = list(self._by_ref)
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                # Progress first: a run that just ended flushed its last reports before returning.
                self._relay()
                self._force_overdue_stops()
                events += [self._collect(ref) for ref in ready]
                self._launch_waiting()  # the freed slots start their next runs before the driver's bookkeeping
            elif self._runs and not events:
                time.sleep(wait_s)  # every run waits for a slot: no node can take one yet
            if events or not self._runs or (deadline is not None and time.monotonic() >= deadline):
                return events

    def close(self) -> None:
        """Kill this executor's runs still in flight and its hub. Ray itself stays up for reuse."""
        if ray.is_initialized():
            for ref in self._by_ref:
                ray.cancel(ref, force=True)
            if self._hub is not None:
                ray.kill(self._hub)
        with self._lock:
            self._runs.clear()
        self._waiting.clear()
        self._by_ref.clear()
        self._hub = None

    # -- introspection -----------------------------------------------------------------------------
    def running_trials(self) -> dict[int, dict[str, Any]]:
        """Where each started run is: {handle: {pid, node_id, node_ip, device, started_at, last_step}}.

        Safe to call from another thread (e.g. a monitor); the values are copies.
        """
        with self._lock:
            return {h: {**r.where, "last_step": r.last_step} for h, r in self._runs.items() if r.where}

    # -- internals ---------------------------------------------------------------------------------
    def _launch_waiting(self) -> None:
        """Hand waiting runs to Ray while it has free slots."""
        if not self._waiting:
            return
        free = self.slots - len(self._by_ref)
        while free > 0 and self._waiting:
            run = self._runs[self._waiting.popleft()]
            run.ref = _train_on_worker.options(
                num_cpus=self.num_cpus_per_trial,
                num_gpus=self.num_gpus_per_trial,
                name=f"alphasearch trial {run.request.label or run.handle}",
            ).remote(run.request, run.handle, self._hub, max(1, int(self.num_cpus_per_trial)))
            self._by_ref[run.ref] = run.handle
            free -= 1

    def _forget(self, run: _Run) -> None:
        with self._lock:
            self._runs.pop(run.handle, None)
        if run.ref is not None:
            self._by_ref.pop(run.ref, None)
        self._ended.append(run.handle)

    def _relay(self) -> None:
        """Drain the hub: record where runs started, feed val losses to the driver, post verdicts."""
        forget, self._ended = self._ended, []
        try:
            messages = ray.get(self._hub.drain.remote(forget), timeout=30)
        except rex.GetTimeoutError:
            return  # a busy head node; the messages wait in the hub for the next tick
        except rex.RayActorError:
            # Its node died. Runs in flight go on without progress (their stops are forced); new runs get
            # a new hub.
            logger.warning("the progress hub died; running trials lose progress relay until they end")
            self._hub = self._new_hub()
            return
        for kind, handle, payload in messages:
            run = self._runs.get(handle)
            if run is None:
                continue  # ended already; its last reports no longer matter
            if kind == "started":
                run.where = payload
                continue
            step, val_loss = payload
            run.last_step = step
            if run.stop_reason is not None:
                continue
            verdict = run.on_progress(step, val_loss)
            if verdict:
                self.stop(handle, verdict)

    def _post_verdict(self, handle: int, reason: str) -> None:
        self._hub.set_verdict.remote(handle, reason)  # the worker reads it at its next exchange

    def _force_overdue_stops(self) -> None:
        now = time.monotonic()
        for run in self._runs.values():
            if run.stop_deadline is not None and now >= run.stop_deadline and not run.force_stopped:
                run.force_stopped = True
                ray.cancel(run.ref, force=True)  # type: ignore[arg-type]  # set: a stop deadline means it is in Ray

    def _collect(self, ref: ray.ObjectRef) -> Event:
        run = self._runs[self._by_ref[ref]]
        self._forget(run)
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # every way a task can end badly becomes an event; the study decides
            return self._failure(run, exc)
        if outcome["stopped_before_start"]:
            return Failed(run.handle, f"stopped ({outcome['stopped_before_start']}) before it started")
        result: TrainResult = outcome["result"]
        result.diagnostics["worker"] = outcome["where"]
        return Finished(run.handle, result)

    def _failure(self, run: _Run, exc: BaseException) -> Failed:
        where = run.where or {}
        place = f" (worker pid {where['pid']} on node {where['node_id']})" if where else ""
        if run.stop_reason is not None:
            if run.where is None and isinstance(exc, rex.TaskCancelledError):
                return Failed(run.handle, f"stopped ({run.stop_reason}) before it started")
            how = "killed" if run.force_stopped else "interrupted"
            return Failed(run.handle, f"{how} after it was {run.stop_reason}{place}: {type(exc).__name__}")
        if isinstance(exc, rex.RayTaskError):  # the training code raised: a bug or a bad config
            return Failed(run.handle, str(exc), infrastructure=False)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Failed(run.handle, f"{detail}{place}", infrastructure=isinstance(exc, INFRASTRUCTURE_ERRORS))


@ray.remote(max_retries=0, retry_exceptions=False)  # retries belong to the study driver (module docstring)
def _train_on_worker(request: TrialRequest, handle: int, hub: Any, threads: int) -> dict[str, Any]:
    """One training run inside a Ray worker: announce, train with relayed progress, flush, return."""
    context = ray.get_runtime_context()
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray set CUDA_VISIBLE_DEVICES to the GPUs it gave us
    where = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "device": device}
    channel = TrialChannel(hub, handle)
    early = channel.open(where)
    where = channel.where  # + pid, started_at
    if early:
        channel.close()
        return {"stopped_before_start": early, "result": None, "where": where}
    try:
        result = run_request(request, channel.on_step, threads=threads, device=device)
    finally:
        channel.close()
    where["torch_threads"] = torch.get_num_threads()  # what the run actually used, for the record
    where["ended_at"] = time.time()
    return {"stopped_before_start": None, "result": result, "where": where}
