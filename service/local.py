"""Run one study to completion on this machine: the CLI's `study run`, same code path as the service.

The study id is derived from the spec, so running the same command again resumes the same Optuna
studies instead of starting over.
"""

from __future__ import annotations

from rich.console import Console

from alphasearch.cache import ResultCache
from alphasearch.config import default_data_dir, default_database_url
from alphasearch.executor import Executor, InProcessExecutor
from alphasearch.report import StudyReport, build_report
from alphasearch.search import StudyRunner
from alphasearch.spec import StudySpec
from service.render import StudyProgress


def make_executor(name: str) -> Executor:
    """"ray": a local Ray instance (or RAY_ADDRESS's cluster); "inprocess": one trial at a time here."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "ray":
        from workers.ray_executor import RayExecutor

        return RayExecutor()
    from alphasearch.errors import ConfigError

    raise ConfigError("executor", f"got {name!r}; use 'ray' or 'inprocess'")


def run_study_locally(
    spec: StudySpec, *, database_url: str | None, executor: str, console: Console
) -> StudyReport:
    study_id = f"cli-{spec.fingerprint()}"
    url = database_url or default_database_url()
    console.print(
        f"study [bold]{study_id}[/]: {spec.total_trials} trials over widths {spec.proxy_widths}, "
        f"depths {spec.proxy_depths}; database {url}"
    )
    cache = ResultCache(default_data_dir() / "cache")
    with make_executor(executor) as ex, StudyProgress(console) as bars:
        StudyRunner(spec, study_id, url, ex, cache=cache, on_progress=bars.update).run()
    return build_report(spec, study_id, url)
