"""Validations in the service: which study a request names, whether it can be validated, and running one
queued row (the scheduler) or one the CLI created, through the same code.

The training itself is alphasearch/validation.py. A study is either a service study (`app_studies`, run by
the scheduler; it must be `completed`) or one `alphasearch study run` ran on this database (id
`cli-<fingerprint>`, only in Optuna's tables; its search must have finished at every proxy width).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker

from alphasearch.analysis import OUTCOMES
from alphasearch.cache import ResultCache
from alphasearch.errors import NotFoundError, StateError
from alphasearch.executor import Executor
from alphasearch.search import make_storage, optuna_study_name
from alphasearch.spec import StudySpec
from alphasearch.validation import Run, ValidationPlan, plan_for_study, run_validation, summarise
from service import crud
from service.db import transaction
from service.models import Validation

PROGRESS_WRITE_S = 1.0


def study_spec(session: Session, storage_url: str, study_id: str) -> StudySpec:
    """The spec of a study that can be validated; NotFoundError (unknown id) or StateError (not finished)."""
    study = crud.get_study(session, study_id=study_id)
    if study is not None:
        if study.status != "completed":
            hint = {"queued": "it has not started", "running": f"it is running ({study.trials_done}/"
                    f"{study.trials_total} trials)", "failed": f"it failed: {study.error}",
                    "cancelled": "it was cancelled"}[study.status]  # fmt: skip
            raise StateError(f"study {study_id} cannot be validated yet: {hint}; a validation needs a completed study")
        return StudySpec.from_dict(study.spec)
    return _cli_study_spec(storage_url, study_id)


def _cli_study_spec(storage_url: str, study_id: str) -> StudySpec:
    storage = make_storage(storage_url)
    prefix = f"alphasearch/{study_id}/"
    names = [n for n in optuna.get_all_study_names(storage) if n.startswith(prefix)]
    if not names:
        raise NotFoundError(f"no study with id {study_id!r} in this database (neither a service study nor one "
                            "`alphasearch study run` ran here); list them with `alphasearch status`")  # fmt: skip
    spec = StudySpec.from_dict(optuna.load_study(study_name=names[0], storage=storage).user_attrs["spec"])
    for depth in spec.proxy_depths:
        for width in spec.proxy_widths:
            try:
                lane = optuna.load_study(study_name=optuna_study_name(study_id, width, depth), storage=storage)
            except KeyError:
                lane = None
            done = 0 if lane is None else sum(
                1 for t in lane.get_trials(deepcopy=False) if t.user_attrs.get("outcome") in OUTCOMES)  # fmt: skip
            if done < spec.trials_per_width:
                raise StateError(
                    f"study {study_id} cannot be validated yet: width {width} depth {depth} finished {done} of "
                    f"{spec.trials_per_width} trials; run the same `alphasearch study run` command again to finish it"
                )
    return spec


def progress_of(row: Validation) -> dict[str, Any]:
    total = len((row.plan or {}).get("points") or []) * row.seeds
    return {"done": 0, "total": total, "message": "", **(row.progress or {})}


def execute(
    validation_id: str,
    sessions: sessionmaker[Session],
    storage_url: str,
    *,
    owner: str,
    executor: Executor,
    cache: ResultCache | None,
    should_stop: Callable[[], bool] | None = None,
    on_run: Callable[[int, int, Run | None], None] | None = None,
    corpus_path: Callable[[Any], str | None] | None = None,
) -> dict[str, Any]:
    """Plan (the recommendation at the row's width), train and summarise one validation row held by `owner`;
    progress, runs and the running summary are written as runs finish. Returns the result. Raises
    ValidationInterrupted when `should_stop` turns true (its finished runs are cached), or what went wrong."""
    with transaction(sessions) as s:
        row = crud.get_validation(s, validation_id=validation_id)
        assert row is not None
        study_id, width, seeds, stored = row.study_id, row.width, row.seeds, row.plan
        spec = study_spec(s, storage_url, study_id)
    if corpus_path is not None:  # a service study names its corpus; only the runs see the server's path
        spec = replace(spec, corpus=corpus_path(spec.corpus))
    plan = ValidationPlan.from_dict(stored) if stored else plan_for_study(spec, study_id, storage_url, width=width, seeds=seeds)
    with transaction(sessions) as s:
        crud.record_validation(s, validation_id=validation_id, owner=owner, plan=plan.to_dict(), runs=[],
                               progress={"done": 0, "total": plan.total_runs, "message": "training"})  # fmt: skip
    runs: list[Run] = []
    last = 0.0

    def on_progress(done: int, total: int, run: Run | None) -> None:
        nonlocal last
        if run is not None:
            runs.append(run)
        if on_run is not None:
            on_run(done, total, run)
        now = time.monotonic()
        if run is None or (done < total and now - last < PROGRESS_WRITE_S):
            return
        last = now
        with transaction(sessions) as s:
            crud.record_validation(s, validation_id=validation_id, owner=owner, runs=[r.to_dict() for r in runs],
                                   result=summarise(plan, runs),
                                   progress={"done": done, "total": total, "message": run.label})  # fmt: skip

    finished = run_validation(spec, plan, executor=executor, cache=cache, on_progress=on_progress,
                              should_stop=should_stop)  # fmt: skip
    result = summarise(plan, finished)
    with transaction(sessions) as s:
        crud.finish_validation(s, validation_id=validation_id, owner=owner, runs=[r.to_dict() for r in finished],
                               result=result, error=None)  # fmt: skip
    return result
