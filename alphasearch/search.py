"""The study driver: one Optuna study per (study, proxy width, depth), trials dispatched to an Executor.

Every Optuna study lives in the same database as the rest of alphasearch and is named
`alphasearch/<study id>/w<width>-d<depth>` (plus `/rmsnorm` for the baseline), so a user can open it:

    >>> import optuna
    >>> s = optuna.load_study(study_name="alphasearch/3f2a.../w64-d4", storage="sqlite:///...")  # doctest: +SKIP

How trials are recorded (what a reader of the Optuna tables needs to know):
- user attr `outcome`: completed | diverged | stalled | pruned | failed | cancelled | interrupted | stale;
  every trial that ended without a result says why in user attr `errors` (stale lease, interrupted,
  worker crash, cancelled). An interrupted point's re-run has user attr `rerun_of`; a stale one's has
  Optuna's system attr `failed_trial`.
- completed: state COMPLETE, value = mean final val loss over the trial's seeds.
- diverged: a RESULT, never retried. State COMPLETE with value = ln(vocab) (the loss of knowing nothing)
  so samplers steer away from the unstable region; `diverged_at_step` says where. The analysis reads
  `outcome` and keeps diverged trials out of the loss surface.
- stalled: a RESULT, never retried: the run's val loss never got clearly below the corpus's unigram
  entropy (it learned nothing input-dependent). State COMPLETE with its real val loss; `stalled_at_step`.
- pruned: state PRUNED (Optuna's own). cancelled / interrupted / stale: state FAIL, not counted towards the
  budget, so resuming the study runs that point again (interrupted and stale points are re-queued; a
  cancelled one runs before any new point: alphasearch/points.py). Which points a lane runs never depends
  on whether it was interrupted: see alphasearch/points.py.
- failed: a crash. Infrastructure failures (a worker died) are re-run up to `max_retries` times; Optuna's
  heartbeat + RetryHeartbeatStaleTrialCallback re-queue trials whose driver died mid-flight. A RUNNING
  trial that never got its first heartbeat (the driver died between `ask` and `record_heartbeat`) is
  failed and re-queued the same way once it is older than GRACE_PERIOD_S (Optuna alone never would).
- replicates (StudySpec.replicate_best): once a DyT lane's search budget is spent, its best completed trial
  (lowest mean val loss) is re-run, one Optuna trial per extra seed, with the same params and user attrs
  `replicate_of` (the best trial's number) and `replicate_seed`, until that point has `replicate_best`
  seeds. They count towards the lane's progress total; the analysis reads them as more seeds of that point.
Identical runs are served from the content-addressed ResultCache across studies.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models as rdb_models

from alphasearch import points
from alphasearch.cache import ResultCache, json_safe
from alphasearch.executor import Executor, Failed, Finished, TrialRequest
from alphasearch.spec import StudySpec
from alphasearch.train import TrainResult

optuna.logging.set_verbosity(optuna.logging.WARNING)
# We drive heartbeats ourselves in ask-and-tell mode (record_heartbeat per in-flight trial), which Optuna
# supports but warns about; fail_stale_trials is stable in practice though still marked experimental.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_INTERVAL_S = 5  # in-flight trials are marked alive this often
GRACE_PERIOD_S = 20  # a RUNNING trial silent this long belongs to a dead driver: fail + re-queue it
PARAMS = ("alpha_attn", "alpha_ffn")
REPLICATE_OF, REPLICATE_SEED = "replicate_of", "replicate_seed"  # user attrs of a replicate trial
RERUN_OF = "rerun_of"  # user attr of an interrupted point's re-queued trial: the interrupted trial's number
VERDICT_ATTRS = ("outcome", "errors")  # what a trial's end says about it (never copied onto its re-run)


# Why a trial ended without a result (its `errors`; service/trials.py turns them into the trials API's `reason`).
STALE = (
    "stale lease: the driver running this trial stopped renewing its heartbeat for over {grace} s (it died or "
    "was killed)"
)
STALE_UNSTARTED = "stale lease: the driver died between starting this trial and its first heartbeat ({grace} s ago or more)"
INTERRUPTED = (
    "interrupted: the driver was stopped while this trial ran (service shutdown, SIGTERM or Ctrl-C); the point "
    "runs again first when the study resumes"
)
CANCELLED = "cancelled: the study was cancelled before this trial finished"


def optuna_study_name(study_id: str, width: int, depth: int, *, baseline: bool = False) -> str:
    return f"alphasearch/{study_id}/w{width}-d{depth}" + ("/rmsnorm" if baseline else "")


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna storage on the shared database, with heartbeats so a dead driver's trials are re-run."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # SQLite: wait for the writer lock instead of failing when the service reads concurrently.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30}}
    # Creating a storage creates Optuna's tables on a fresh database. Two creators at once (the scheduler's
    # thread and a request handler in one process, or a CLI and a server) race on PostgreSQL's CREATE TYPE
    # and one fails with a UniqueViolation (seen in CI). One creator at a time within a process; across
    # processes, the loser retries once the winner's tables exist.
    with _STORAGE_LOCK:
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=RequeueStale(max_retry=points.STALE_LIMIT - 1),
                    **kwargs,
                )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


_STORAGE_LOCK = threading.Lock()


class RequeueStale(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queue of a stale trial (same params, a new WAITING trial that records `failed_trial`),
    without the stale trial's own verdict (`outcome`, `errors`), which would otherwise be copied onto the
    re-run and describe it wrongly. A trial whose driver died inside `ask()`, between setting its two
    alphas, is re-queued without them: half a point fixed and half drawn afresh would be a point no
    uninterrupted run has (the re-run then makes that decision whole, alphasearch.points)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in VERDICT_ATTRS}
        if 0 < len(set(trial.params) & set(PARAMS)) < len(PARAMS):
            trial.params, trial.distributions = {}, {}
        super().__call__(study, trial)


def make_sampler(spec: StudySpec, lane_index: int) -> optuna.samplers.BaseSampler:
    """The sampler a lane's Optuna study is created with. The driver replaces it before each new point
    (alphasearch.points: grid cells and orphans by PointSampler, other decisions seeded by their number),
    so no point depends on a sampler's in-memory state, which a restarted driver would not have."""
    return points.sampler_for(spec, lane_index, 0)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.eval_interval, reduction_factor=3)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=spec.eval_interval)
    return optuna.pruners.NopPruner()


@dataclass
class Lane:
    """One Optuna study: the DyT search at one (width, depth), or the RMSNorm baseline there."""

    width: int
    depth: int
    baseline: bool
    study: optuna.Study
    budget: int  # search trials (1 for the baseline)
    seeds: list[int]  # the seeds every search trial runs
    replicate_seeds: list[int] = field(default_factory=list)  # one replicate trial each, after the search
    index: int = 0  # the lane's place in the study: part of its sampler seeds (alphasearch.points)
    boxes: list[points.Box] = field(default_factory=list)  # grid passes so far (StudySpec.extend_box, refine)

    @property
    def box(self) -> points.Box:
        """The union of the lane's boxes: where its points may lie (the spec's box without extensions)."""
        return _union(self.boxes)

    @property
    def label(self) -> str:
        return f"w{self.width} d{self.depth}" + (" rmsnorm" if self.baseline else "")


@dataclass
class _Flight:
    """An Optuna trial in flight: one executor run per seed."""

    lane: Lane
    trial: optuna.Trial
    seeds: list[int]
    replicate: bool = False
    handles: set[int] = field(default_factory=set)
    requests: dict[int, tuple[int, TrialRequest]] = field(default_factory=dict)  # handle -> (seed, request)
    results: dict[int, TrainResult] = field(default_factory=dict)  # seed -> result
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    stop_reason: str | None = None
    reported: set[int] = field(default_factory=set)  # steps reported to Optuna (once each, across retries)


@dataclass
class LaneProgress:
    label: str
    done: int
    total: int
    best: float | None


ProgressHook = Callable[[list[LaneProgress]], None]


@dataclass
class _LaneState:
    """Where a lane stands, from its trials in the database."""

    done: int  # finished trials that count towards `total`
    running: int
    total: int  # search budget + replicate trials still planned
    finished: bool
    work: str | None = None  # what to start next: "search" | "replicate" | "pop" (a queued trial) | None
    best: optuna.trial.FrozenTrial | None = None  # the point to replicate
    seed: int | None = None  # the replicate's seed


class StudyRunner:
    """Drives every lane of one study to its budget, keeping the executor's capacity busy.

    Re-running a study id resumes it: finished trials are kept, trials left RUNNING by a dead driver
    are failed and re-queued by Optuna's heartbeat machinery after GRACE_PERIOD_S.
    """

    def __init__(
        self,
        spec: StudySpec,
        study_id: str,
        storage_url: str,
        executor: Executor,
        *,
        cache: ResultCache | None = None,
        on_progress: ProgressHook | None = None,
        should_cancel: Callable[[], bool] | None = None,
        max_retries: int = 3,
    ) -> None:
        self.spec, self.study_id, self.executor = spec, study_id, executor
        self.storage = make_storage(storage_url)
        self.cache = cache
        self.on_progress = on_progress
        self.should_cancel = should_cancel or (lambda: False)
        self.max_retries = max_retries
        self.lanes = self._make_lanes()
        self._flights: dict[int, _Flight] = {}  # executor handle -> flight
        self._last_heartbeat = 0.0
        self._last_cancel_check = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------------
    def _make_lanes(self) -> list[Lane]:
        spec, lanes = self.spec, list[Lane]()
        for depth in spec.proxy_depths:
            for width in spec.proxy_widths:
                for baseline in (False, True) if spec.rmsnorm_baseline else (False,):
                    name = optuna_study_name(self.study_id, width, depth, baseline=baseline)
                    study = optuna.create_study(
                        study_name=name,
                        storage=self.storage,
                        sampler=make_sampler(spec, len(lanes)),
                        pruner=make_pruner(spec) if not baseline else optuna.pruners.NopPruner(),
                        direction="minimize",
                        load_if_exists=True,
                    )
                    study.set_user_attr("alphasearch_study", self.study_id)
                    study.set_user_attr("spec", json_safe(spec.to_dict()))
                    study.set_user_attr("width", width)
                    study.set_user_attr("depth", depth)
                    study.set_user_attr("norm", "rmsnorm" if baseline else spec.norm)
                    count = max(2, spec.seeds) if baseline else spec.seeds
                    seeds = list(range(spec.first_seed, spec.first_seed + count))
                    extra = 0 if baseline else spec.replicate_runs
                    replicate_seeds = list(range(spec.first_seed + count, spec.first_seed + count + extra))
                    budget = 1 if baseline else spec.trials_per_width
                    boxes = [_box(b) for b in study.user_attrs.get("boxes", [])] or [
                        (spec.alpha_attn_range, spec.alpha_ffn_range)
                    ]
                    if not baseline and spec.sampler == "grid":
                        budget = _grid_budget(spec, len(lanes), boxes)
                    lanes.append(
                        Lane(width, depth, baseline, study, budget, seeds, replicate_seeds, len(lanes), boxes)
                    )
        return lanes

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> str:
        """Run until every lane met its budget; return "completed" or "cancelled".

        On KeyboardInterrupt (Ctrl-C) the trials in flight are closed as "interrupted" and their alpha
        points re-queued, so the next run of the same study picks them up at once.
        """
        try:
            return self._loop()
        except KeyboardInterrupt:
            self._interrupt()
            raise

    def _interrupt(self) -> None:
        for flight in {id(f): f for f in self._flights.values()}.values():
            for handle in flight.handles:
                self.executor.stop(handle, "cancelled")
            flight.trial.set_user_attr("outcome", "interrupted")
            flight.trial.set_user_attr("errors", [*flight.errors, INTERRUPTED])
            flight.lane.study.tell(flight.trial, state=optuna.trial.TrialState.FAIL)
            if flight.trial.params:
                keep = (REPLICATE_OF, REPLICATE_SEED) if flight.replicate else ()
                attrs = {k: flight.trial.user_attrs[k] for k in keep}
                attrs[RERUN_OF] = flight.trial.number
                flight.lane.study.enqueue_trial(flight.trial.params, user_attrs=attrs, skip_if_exists=False)
        self._flights.clear()

    def _loop(self) -> str:
        cancelled = False
        while True:
            if not cancelled and self._cancel_requested():
                cancelled = True
                for handle, flight in self._flights.items():
                    flight.stop_reason = "cancelled"
                    self.executor.stop(handle, "cancelled")
            self._heartbeat()  # before _fill, whose reaping would take a trial silent too long for a dead one
            if not cancelled:
                self._fill()
            self._report()
            if not self._flights:
                if cancelled or self._all_done():
                    return "cancelled" if cancelled else "completed"
                time.sleep(1.0)  # waiting for a dead driver's trials to go stale (see GRACE_PERIOD_S)
                continue
            for event in self.executor.poll(timeout=1.0):
                self._handle(event)

    def _state(self, lane: Lane, *, reap: bool = True) -> _LaneState:
        """The lane's progress and next piece of work, from the database.

        Search first: `lane.budget` trials, each over `lane.seeds`. Then, for DyT lanes with replicate seeds,
        one replicate trial per seed of the best completed search trial (lowest mean val loss). With
        `reap`, trials of a dead driver are failed and re-queued first (`_reap`).
        """
        states = optuna.trial.TrialState
        trials = self._reap(lane) if reap else lane.study.get_trials(deepcopy=False)
        search = [t for t in trials if REPLICATE_OF not in t.user_attrs]
        s_done = sum(1 for t in search if _counts_done(t)) + len(points.given_up(search))
        running = sum(1 for t in trials if t.state == states.RUNNING)
        s_running = sum(1 for t in search if t.state == states.RUNNING)
        n_rep = len(lane.replicate_seeds)
        if s_done + s_running < lane.budget:
            return _LaneState(s_done, running, lane.budget + n_rep, False, "search")
        if reap and not s_running and not any(REPLICATE_OF in t.user_attrs for t in trials) and self._extend(lane, search):
            return _LaneState(s_done, running, lane.budget + n_rep, False, "search")
        if s_done < lane.budget or not n_rep:  # search trials still running, or nothing to replicate
            done = min(s_done, lane.budget)
            return _LaneState(done, running, lane.budget + n_rep, done >= lane.budget and not n_rep)
        best = _best_point(search)
        if best is None:  # every search trial diverged, stalled or failed: no point worth replicating
            return _LaneState(lane.budget, running, lane.budget, True)
        mine = [t for t in trials if t.user_attrs.get(REPLICATE_OF) == best.number]
        finished = {t.user_attrs.get(REPLICATE_SEED) for t in mine if _counts_done(t)}
        queued = [t for t in mine if t.state == states.WAITING and t.user_attrs.get(REPLICATE_SEED) not in finished]
        pending = {t.user_attrs.get(REPLICATE_SEED) for t in mine if t.state in (states.RUNNING, states.WAITING)}
        missing = [s for s in lane.replicate_seeds if s not in finished | pending]
        done = lane.budget + sum(1 for s in lane.replicate_seeds if s in finished)
        state = _LaneState(done, running, lane.budget + n_rep, done == lane.budget + n_rep)
        if queued:  # (never once every seed has finished: `queued` leaves finished seeds out)
            state.work = "pop"  # an interrupted or stale replicate, re-queued: ask() hands it out
        elif missing:
            state.work, state.best, state.seed = "replicate", best, missing[0]
        return state

    def _extend(self, lane: Lane, search: list[optuna.trial.FrozenTrial]) -> bool:
        """After a grid pass: when the lane's optimum (alphasearch.analysis.width_optimum over its box) sits
        on an edge, add a pass over a box re-centred on it (the edge parameter's range keeps the original
        log width, clipped to two decades beyond the original box; the other keeps the lane's range), record
        the boxes with the lane's Optuna study, and return True. At most `spec.extend_box` extra passes;
        after them, the refinement passes (`_refine`)."""
        from alphasearch.analysis import SearchSpace, TrialPoint, width_optimum

        spec = self.spec
        if lane.baseline or spec.sampler != "grid":
            return False
        pts = [
            TrialPoint(t.params["alpha_attn"], t.params["alpha_ffn"], loss, "completed", lane.width, lane.depth, seed)
            for t in search
            if t.user_attrs.get("outcome") == "completed" and points.point_of(t) is not None
            for seed, loss in zip(t.user_attrs.get("seeds", []), t.user_attrs.get("seed_losses", []), strict=False)
            if loss is not None
        ]
        if not pts:
            return False
        union = lane.box
        opt = width_optimum(pts, space=SearchSpace(attn=union[0], ffn=union[1]), n_boot=50)
        extensions = sum(1 for b in lane.boxes[1:] if len(b) == 2)
        if any(len(b) > 2 for b in lane.boxes) or extensions >= (spec.extend_box or 0):
            return self._refine(lane, opt)  # extensions first, then refinements
        new, grows = [], False
        for i, (param, original) in enumerate(zip(points.PARAMS, (spec.alpha_attn_range, spec.alpha_ffn_range), strict=True)):
            if param not in opt.on_edge:
                new.append(union[i])
                continue
            half, value = math.sqrt(original[1] / original[0]), getattr(opt, param)
            lo, hi = max(value / half, original[0] / 100), min(value * half, original[1] * 100)
            grows = grows or lo < union[i][0] * (1 - 1e-9) or hi > union[i][1] * (1 + 1e-9)
            new.append((lo, hi))
        if not grows:  # centred inside, or at the two-decade limit already
            return self._refine(lane, opt)
        return self._add_pass(lane, (new[0], new[1]))

    def _refine(self, lane: Lane, opt: Any) -> bool:
        """After the grid and its extensions: a 3 x 3 pass at half the grid's log spacing centred on the
        lane's optimum, unless that optimum already lies inside the last refinement (or every point of the
        new pass has run). At most `spec.refine` passes; never beyond two decades outside the box."""
        spec = self.spec
        done = [b for b in lane.boxes if len(b) > 2]
        if len(done) >= (spec.refine or 0):
            return False
        k = math.isqrt(spec.trials_per_width)
        new = []
        for param, original in zip(points.PARAMS, (spec.alpha_attn_range, spec.alpha_ffn_range), strict=True):
            half = (original[1] / original[0]) ** (0.5 / (k - 1))  # half the grid's step
            value = min(max(getattr(opt, param), original[0] / 100), original[1] * 100)
            new.append((value / half, value * half))
        if done:
            last = done[-1]
            inside = all(
                last[i][0] * (1 + 1e-6) < getattr(opt, param) < last[i][1] * (1 - 1e-6)
                for i, param in enumerate(points.PARAMS)
            )
            if inside:
                return False
        box = (new[0], new[1], points.REFINE_LEVELS)
        if _grid_budget(spec, lane.index, [*lane.boxes, box]) == _grid_budget(spec, lane.index, lane.boxes):
            return False  # every point of it has run already
        return self._add_pass(lane, box)

    def _add_pass(self, lane: Lane, box: points.Box) -> bool:
        lane.boxes.append(box)
        lane.study.set_user_attr("boxes", [[list(b[0]), list(b[1]), *b[2:]] for b in lane.boxes])
        lane.budget = _grid_budget(spec=self.spec, lane_index=lane.index, boxes=lane.boxes)
        return True

    def _reap(self, lane: Lane) -> list[optuna.trial.FrozenTrial]:
        """The lane's trials, after failing + re-queueing those of a dead driver.

        Does what Optuna's `fail_stale_trials` does (trials whose heartbeat went silent for the grace
        period are failed and handed to the stale-trial callback), and first records why on each one
        (outcome "stale", the reason in `errors`), which Optuna does not. It also covers a gap: a driver that died
        between `study.ask()` and its first `record_heartbeat` leaves a RUNNING trial with no heartbeat at
        all, which Optuna would keep RUNNING forever (and the lane would wait on it forever). Such a trial,
        not one of ours and started more than GRACE_PERIOD_S ago, is failed and handed to the storage's
        stale-trial callback (RetryHeartbeatStaleTrialCallback re-queues its params), like a stale one.
        """
        storage = lane.study._storage  # the study's (cached) view of self.storage, as fail_stale_trials uses
        grace = self.storage.grace_period or 2 * HEARTBEAT_INTERVAL_S
        ours = {f.trial._trial_id for f in self._flights.values()}  # alive, whatever their heartbeat says
        stale_ids = storage._get_stale_trial_ids(lane.study._study_id)  # what Optuna's fail_stale_trials fails
        silent = {t: STALE.format(grace=grace) for t in stale_ids if t not in ours}
        trials = lane.study.get_trials(deepcopy=False)
        cutoff = datetime.now() - timedelta(seconds=grace)
        old = [
            t._trial_id
            for t in trials
            if t.state == optuna.trial.TrialState.RUNNING
            and t._trial_id not in ours
            and t._trial_id not in silent
            and t.datetime_start is not None
            and t.datetime_start < cutoff  # both from datetime.now() on a driver, as Optuna records it
        ]
        if old:
            never = sorted(set(old) - _with_heartbeat(self.storage, old))
            silent.update({trial_id: STALE_UNSTARTED.format(grace=grace) for trial_id in never})
        if not silent:
            return trials
        failed = []
        for trial_id, why in sorted(silent.items()):
            try:  # the verdict first: a finished trial takes no more attributes
                storage.set_trial_user_attr(trial_id, "outcome", "stale")
                storage.set_trial_user_attr(trial_id, "errors", [why])
                if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                    failed.append(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its driver finished it after all, or another driver got there first
        # Optuna's own fail_stale_trials only runs on heartbeat storages (RDB; its cached wrapper is one).
        from optuna.storages._heartbeat import BaseHeartbeat  # what optuna's fail_stale_trials checks

        callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
        for trial_id in failed:
            if callback is not None:
                callback(lane.study, copy.deepcopy(storage.get_trial(trial_id)))
        return lane.study.get_trials(deepcopy=False) if failed else trials

    def _all_done(self) -> bool:
        return all(self._state(lane).finished for lane in self.lanes)

    def _fill(self) -> None:
        """Ask new trials, round-robin over lanes, until the executor's capacity is used."""
        progressed = True
        while progressed and self._runs_in_flight() < self.executor.capacity:
            progressed = False
            for lane in self.lanes:
                if self._runs_in_flight() >= self.executor.capacity:
                    return
                state = self._state(lane)
                if state.work is None:
                    continue
                progressed = self._start(lane, state) or progressed

    def _runs_in_flight(self) -> int:
        return len(self._flights)

    def _start(self, lane: Lane, state: _LaneState) -> bool:
        """Start the lane's next trial; False when it must wait (see `_next_point_sampler`)."""
        spec = self.spec
        if lane.baseline:
            trial = lane.study.ask()
            alphas = (1.0, 1.0)
        else:
            if state.work == "replicate" and state.best is not None:
                attrs = {REPLICATE_OF: state.best.number, REPLICATE_SEED: state.seed}
                lane.study.enqueue_trial(dict(state.best.params), user_attrs=attrs, skip_if_exists=False)
            elif state.work == "search":
                sampler = self._next_point_sampler(lane)
                if sampler is None:
                    return False
                lane.study.sampler = sampler
            # ask() hands out the oldest queued trial first (a replicate, an interrupted or a stale point);
            # only when none is queued does the sampler set above decide the point.
            trial = lane.study.ask(
                {
                    "alpha_attn": optuna.distributions.FloatDistribution(*lane.box[0], log=True),
                    "alpha_ffn": optuna.distributions.FloatDistribution(*lane.box[1], log=True),
                }
            )
            alphas = (trial.params["alpha_attn"], trial.params["alpha_ffn"])
        self.storage.record_heartbeat(trial._trial_id)
        replicate = REPLICATE_OF in trial.user_attrs  # whatever ask() handed out decides, not `state`
        seeds = [int(trial.user_attrs[REPLICATE_SEED])] if replicate else lane.seeds
        model = spec.model_config(lane.width, lane.depth, *alphas, norm="rmsnorm" if lane.baseline else None)
        flight = _Flight(lane, trial, seeds, replicate)
        for seed in seeds:
            label = f"{lane.label} #{trial.number} seed {seed}"
            if replicate:
                label += f" (replicate of #{trial.user_attrs[REPLICATE_OF]})"
            request = TrialRequest.build(model, spec.train_config(seed=seed, width=lane.width, baseline=lane.baseline), spec.corpus, label)
            cached = self.cache.get(request.key()) if self.cache else None
            if cached is not None:
                flight.results[seed] = cached
                continue
            handle = self.executor.submit(request, self._progress_callback(flight, seed))
            flight.handles.add(handle)
            self._flights[handle] = flight
            flight.requests[handle] = (seed, request)
        if not flight.handles:  # every seed came from the cache
            self._finish(flight)
        return True

    def _next_point_sampler(self, lane: Lane) -> optuna.samplers.BaseSampler | None:
        """The sampler that hands out the lane's next search point, the same whether or not the study was
        interrupted before (alphasearch.points), or None when the lane must wait.

        An orphan (a point whose trial was interrupted and never re-queued) runs before anything new. While
        a trial of a dead driver is still RUNNING (not yet failed and re-queued by `_reap`, up to
        GRACE_PERIOD_S after the death), the lane waits rather than start a new point: the points then run
        in the order an uninterrupted run ran them, so what depends on that order is the same too (an
        adaptive sampler's next decision, the pruner's verdicts, the analysis's sums). Then a grid lane
        takes its next untaken cell, and an adaptive lane (random / tpe / gp) makes decision number
        `points.decided(...)` with a sampler seeded by that number.
        """
        states = optuna.trial.TrialState
        trials = lane.study.get_trials(deepcopy=False)
        orphans = points.orphans(trials)
        if orphans:
            return points.PointSampler(orphans[0])
        queued = any(t.state == states.WAITING for t in trials)
        ours = {f.trial._trial_id for f in self._flights.values()}
        if not queued and any(t.state == states.RUNNING and t._trial_id not in ours for t in trials):
            return None  # a dead driver's trial: wait for `_reap` to re-queue it (see the docstring)
        if self.spec.sampler == "grid":
            cell = points.next_grid_point(self.spec, lane.index, trials, lane.boxes)
            if cell is None:  # every cell taken: only a queued trial (re-queued point) may still be handed out
                return lane.study.sampler if queued else None
            return points.PointSampler(cell)
        return points.sampler_for(self.spec, lane.index, points.decided(trials))

    def _cancel_requested(self, *, throttle: bool = False) -> bool:
        """Ask should_cancel (it may query a database): always from the loop, at most every 2 s mid-trial."""
        now = time.monotonic()
        if throttle and now - self._last_cancel_check < 2.0:
            return False
        self._last_cancel_check = now
        return bool(self.should_cancel())

    def _progress_callback(self, flight: _Flight, seed: int) -> Callable[[int, float], str | None]:
        def on_progress(step: int, val_loss: float) -> str | None:
            self._heartbeat()  # the in-process executor trains inside poll(): the loop's heartbeats wait
            if flight.stop_reason:
                return flight.stop_reason
            if self._cancel_requested(throttle=True):
                # The in-process executor trains inside poll(): this is the only chance to stop mid-trial.
                flight.stop_reason = "cancelled"
                return "cancelled"
            if flight.replicate or seed != flight.seeds[0] or not math.isfinite(val_loss):
                return None  # the first seed speaks for a search trial in pruning; replicates are never pruned
            if step in flight.reported:
                return None  # a re-run of this trial's run after a worker died: Optuna keeps the first value
            flight.reported.add(step)
            flight.trial.report(val_loss, step)
            if flight.trial.should_prune():
                flight.stop_reason = "pruned"
                for handle in flight.handles:
                    if handle in self._flights:
                        self.executor.stop(handle, "pruned")
                return "pruned"
            return None

        return on_progress

    # -- results -----------------------------------------------------------------------------------
    def _handle(self, event: Finished | Failed) -> None:
        flight = self._flights.pop(event.handle, None)
        if flight is None:
            return
        seed, request = flight.requests[event.handle]
        if isinstance(event, Failed):
            if event.infrastructure and flight.retries < self.max_retries and not flight.stop_reason:
                flight.retries += 1  # the worker died, not the run: run it again elsewhere
                flight.errors.append(f"worker crash, run again (retry {flight.retries}): {event.error}")
                flight.handles.discard(event.handle)  # else the trial waits forever on the dead run
                handle = self.executor.submit(request, self._progress_callback(flight, seed))
                flight.handles.add(handle)
                flight.requests[handle] = (seed, request)
                self._flights[handle] = flight
                return
            flight.errors.append(event.error)
        else:
            flight.results[seed] = event.result
            if self.cache is not None:
                self.cache.put(request.key(), event.result)
        flight.handles.discard(event.handle)
        if not flight.handles:
            self._finish(flight)

    def _finish(self, flight: _Flight) -> None:
        study, trial = flight.lane.study, flight.trial
        results = [flight.results[s] for s in sorted(flight.results)]
        attrs: dict[str, Any] = {
            "seeds": sorted(flight.results),
            "seed_losses": [r.final_val_loss for r in results],
            "runs": [_run_summary(r) for r in results],
        }
        outcome, value, state = _classify(flight, results)
        errors = [*flight.errors, CANCELLED] if outcome == "cancelled" else flight.errors
        if errors:
            attrs["errors"] = [e[-2000:] for e in errors]
        attrs["outcome"] = outcome
        if outcome == "diverged":
            attrs["diverged_at_step"] = min(r.diverged_at_step or 0 for r in results if r.diverged)
        if outcome == "stalled":
            attrs["stalled_at_step"] = min(r.stalled_at_step or 0 for r in results if r.stalled)
        if outcome == "failed":
            attrs["final"] = True  # a crash counts towards the budget: not re-run by this driver
        for key, val in attrs.items():
            trial.set_user_attr(key, json_safe(val))
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_INTERVAL_S / 2:
            return
        self._last_heartbeat = now
        for flight in {id(f): f for f in self._flights.values()}.values():
            self.storage.record_heartbeat(flight.trial._trial_id)

    def _report(self) -> None:
        if self.on_progress is None:
            return
        rows = []
        for lane in self.lanes:
            state = self._state(lane, reap=False)
            values = [
                t.value
                for t in lane.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.user_attrs.get("outcome") == "completed" and t.value is not None
            ]
            rows.append(LaneProgress(lane.label, state.done, state.total, min(values) if values else None))
        self.on_progress(rows)


def _box(stored: Any) -> points.Box:
    (a_lo, a_hi), (f_lo, f_hi), *levels = stored
    box = ((float(a_lo), float(a_hi)), (float(f_lo), float(f_hi)))
    return (*box, int(levels[0])) if levels else box


def _union(boxes: list[points.Box]) -> points.Box:
    return (
        (min(b[0][0] for b in boxes), max(b[0][1] for b in boxes)),
        (min(b[1][0] for b in boxes), max(b[1][1] for b in boxes)),
    )


def _grid_budget(spec: StudySpec, lane_index: int, boxes: list[points.Box]) -> int:
    """Distinct points over the lane's grid passes (a re-centred pass may share points with an earlier one)."""
    seen: list[tuple[float, float]] = []
    for box in boxes:
        for p in points.grid_points(spec, lane_index, box):
            q = (p["alpha_attn"], p["alpha_ffn"])
            if not any(math.isclose(q[0], r[0], rel_tol=1e-9) and math.isclose(q[1], r[1], rel_tol=1e-9) for r in seen):
                seen.append(q)
    return len(seen)


def _classify(flight: _Flight, results: list[TrainResult]) -> tuple[str, float | None, Any]:
    states = optuna.trial.TrialState
    if flight.stop_reason == "cancelled":
        return "cancelled", None, states.FAIL
    if flight.stop_reason == "pruned" or any(r.stopped == "pruned" for r in results):
        return "pruned", None, states.PRUNED
    if not results:
        return "failed", None, states.FAIL
    if any(r.diverged for r in results):
        vocab = flight.lane.study.user_attrs.get("spec", {}).get("vocab_size", 256)
        return "diverged", math.log(vocab), states.COMPLETE
    losses = [r.final_val_loss for r in results if r.final_val_loss is not None]
    if any(r.stalled for r in results):
        # A real (bad) loss: told to the sampler as is, kept out of the loss surface by the analysis.
        return "stalled", sum(losses) / len(losses), states.COMPLETE
    if len(losses) < len(flight.seeds):
        return "failed", None, states.FAIL
    return "completed", sum(losses) / len(losses), states.COMPLETE


def _counts_done(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished for good: complete, pruned, or crashed (not cancelled / interrupted / stale: those re-run)."""
    states = optuna.trial.TrialState
    return trial.state in (states.COMPLETE, states.PRUNED) or (
        trial.state == states.FAIL and bool(trial.user_attrs.get("final"))
    )


def _best_point(search: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The completed search trial with the lowest mean val loss (diverged / stalled points never count)."""
    done = [
        t
        for t in search
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.user_attrs.get("outcome") == "completed"
        and t.value is not None
        and "alpha_attn" in t.params
    ]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def _with_heartbeat(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> set[int]:
    """Which of these trials have a heartbeat row (Optuna has no public query for it)."""
    table = rdb_models.TrialHeartbeatModel
    with storage.engine.connect() as conn:
        rows = conn.execute(sqlalchemy.select(table.trial_id).where(table.trial_id.in_(trial_ids)))
        return {int(r[0]) for r in rows}


def _run_summary(result: TrainResult) -> dict[str, Any]:
    """What the trial view shows per seed (the full val curve included: it is small)."""
    return {
        "final_val_loss": result.final_val_loss,
        "val_curve": result.val_curve,
        "diverged": result.diverged,
        "diverged_at_step": result.diverged_at_step,
        "stopped": result.stopped,
        "stalled": result.stalled,
        "stalled_at_step": result.stalled_at_step,
        "outcome": result.outcome,
        "steps_done": result.steps_done,
        "alphas": result.alphas,
        "embed_scale": result.embed_scale,
        "tokens_per_s": result.tokens_per_s,
        "wall_time_s": result.wall_time_s,
        "n_params": result.n_params,
        "diagnostics": result.diagnostics,
    }
