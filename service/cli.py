"""The `alphasearch` console command. Thin: parse, then call the library, the workers or the service.

It lives in service/ because it is the outermost front: it may import every layer below it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from alphasearch.errors import AlphaSearchError

app = typer.Typer(help="Find DyT alpha0 for the Transformer you are about to train.", no_args_is_help=True)
study_app = typer.Typer(help="Run studies on this machine.", no_args_is_help=True)
bench_app = typer.Typer(help="Reproducible performance measurements (see docs/benchmarks.md).", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """--set key=value, the value read as JSON when it parses (numbers, lists), else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"{pair!r}: use --set field=value, e.g. --set trials_per_width=16")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@study_app.command("run")
def study_run(
    target_width: Annotated[int, typer.Option(help="Width (d_model) of the model you will train.")],
    target_depth: Annotated[int, typer.Option(help="Depth (number of blocks) of the model you will train.")],
    preset: Annotated[str, typer.Option(help="smoke | quick | standard | paper-like")] = "quick",
    out: Annotated[Path, typer.Option(help="Folder for result.json and the PNGs.")] = Path("alphasearch-out"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the recommendation as JSON.")] = False,
    corpus: Annotated[str | None, typer.Option(help="Text file or folder (default: Shakespeare).")] = None,
    executor: Annotated[str, typer.Option(help="ray (parallel, default) | inprocess (one at a time)")] = "ray",
    database: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override any StudySpec field: --set seeds=2")] = [],  # noqa: B006
) -> None:
    """Run one study to completion on this machine and print the recommendation.

    Re-running the same command resumes the study instead of starting over.
    """
    from service.local import run_study_locally
    from alphasearch.spec import StudySpec

    try:
        fields = {"preset": preset, "target_width": target_width, "target_depth": target_depth}
        fields.update(_parse_overrides(set_))
        if corpus is not None:
            fields["corpus"] = corpus
        spec = StudySpec.from_dict(fields)
        report = run_study_locally(spec, database_url=database, executor=executor, console=console)
        written = report.write(out)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    rec = report.recommendation.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()["recommendation"], indent=2) + "\n")
    else:
        from service.render import print_recommendation

        print_recommendation(Console(), rec)
    console.print(f"wrote {len(written)} files to {out}/ (result.json, heatmaps, width fit)")


@bench_app.command("train")
def bench_train(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    steps: Annotated[int, typer.Option(help="Timed steps per measurement.")] = 20,
    repeats: Annotated[int, typer.Option(help="Measurements per side; medians are reported.")] = 3,
) -> None:
    """Training throughput and MFU of the proxy LM vs x-transformers (width 256, depth 4, seq 256, batch 16)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.train_throughput import main as bench_main

    bench_main(as_json=as_json, steps=steps, repeats=repeats)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
