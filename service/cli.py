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
    target_lr: Annotated[float | None, typer.Option(help="Peak lr you will train the target with; proxies "
                                                         "derive theirs from it (lr_rule, default inverse_width).")] = None,
    target_tokens: Annotated[int | None, typer.Option(help="Tokens the target will train on; proxies never train "
                                                           "longer.")] = None,
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
    from service.local import resolve_study_spec, run_study_locally

    try:
        fields = {"preset": preset, "target_width": target_width, "target_depth": target_depth}
        fields.update(_parse_overrides(set_))
        if corpus is not None:
            fields["corpus"] = corpus
        for name, value in (("target_lr", target_lr), ("target_tokens", target_tokens)):
            if value is not None:
                fields[name] = value
        spec = resolve_study_spec(fields, database_url=database)  # use_calibration: regimes from the database
        report = run_study_locally(spec, database_url=database, executor=executor, console=console)
        written = report.write(out)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    rec = report.recommendation_dict()
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()["recommendation"], indent=2) + "\n")
    else:
        from service.render import print_recommendation

        print_recommendation(Console(), rec)
    console.print(f"wrote {len(written)} files to {out}/ (result.json, heatmaps, width fit)")


@app.command()
def calibrate(
    widths: Annotated[str, typer.Option(help="Proxy widths to calibrate, comma-separated: 64,128,256.")],
    depth: Annotated[int | None, typer.Option(help="Proxy depth (default: the preset's first proxy depth).")] = None,
    preset: Annotated[str, typer.Option(help="Study preset whose training regime (steps, batch, seq_len, warmup) "
                                             "is calibrated: smoke | quick | standard | paper-like")] = "quick",
    lrs: Annotated[str | None, typer.Option(help="Learning-rate ladder, comma-separated (default 2.5e-3,5e-3,1e-2,2e-2).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds for the seed-noise point (>= 3; default 3).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibrations as JSON.")] = False,
    corpus: Annotated[str | None, typer.Option(help="Text file or folder (default: Shakespeare).")] = None,
    executor: Annotated[str, typer.Option(help="ray (parallel, default) | inprocess (one at a time)")] = "ray",
    database: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override any calibration setting: --set steps=300, "
                                                          "--set alpha=[0.5,0.5], --set grid=3")] = [],  # noqa: B006
) -> None:  # fmt: skip
    """Per proxy width: the lr at which RMSNorm trains best without diverging, DyT's seed noise and alpha
    effect there (SNR), the gap to RMSNorm and the stall rate. Stored in the database, so studies with
    `use_calibration=true` at these widths take their lr from it.
    """
    from alphasearch.calibrate import CalibrationSettings, parse_widths
    from service.local import run_calibration_locally

    try:
        fields: dict[str, Any] = {"preset": preset, **_parse_overrides(set_)}
        for key, value in (("depth", depth), ("seeds", seeds), ("corpus", corpus)):
            if value is not None:
                fields[key] = value
        if lrs is not None:
            fields["lrs"] = _parse_floats("lrs", lrs)
        settings = CalibrationSettings.from_dict(fields)
        width_list = parse_widths(widths)
        rows = run_calibration_locally(width_list, settings, database_url=database, executor=executor, console=console)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps({"calibrations": rows}, indent=2) + "\n")
    else:
        from service.render import print_calibrations

        print_calibrations(Console(), rows)
        console.print(f"stored {len(rows)} calibration(s); a study takes their lr with --set use_calibration=true")
    if any(r.get("error") for r in rows):
        raise typer.Exit(1)


@app.command()
def validate(
    study: Annotated[str, typer.Argument(help="A finished study's id: a service study, or `cli-...` from "
                                              "`alphasearch study run` on this database.")],
    width: Annotated[int | None, typer.Option(help="Width to validate at, wider than every proxy (default: twice "
                                                   "the widest proxy, or the target width when it fits).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per point, the same for every point (default 2).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validation as JSON (as the API shows it).")] = False,
    executor: Annotated[str, typer.Option(help="ray (parallel, default) | inprocess (one at a time)")] = "ray",
    database: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir).")] = None,
) -> None:  # fmt: skip
    """Train a finished study's recommendation at a width wider than its proxies, beside (1, 1), (0.5, 0.5) and
    its x2 / ÷2 neighbours (same seeds for every point), and report its regret: its loss minus the best point's,
    in nats and in units of the noise of that difference. Stored in the database with every run.
    """
    from service.local import run_validation_locally

    try:
        data = run_validation_locally(study, width=width, seeds=seeds, database_url=database, executor=executor,
                                      console=console)  # fmt: skip
    except AlphaSearchError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        from service.render import print_validation

        print_validation(Console(), data)
    if data["status"] != "completed":
        raise typer.Exit(1)


def _parse_floats(name: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        from alphasearch.errors import ConfigError

        raise ConfigError(name, f"got {text!r}; give numbers separated by commas, e.g. 1e-3,2e-3,4e-3") from None


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


# -- the service ---------------------------------------------------------------------------------------


def _settings(**overrides: Any) -> Any:
    from service.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs ALPHASEARCH_API_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    executor: Annotated[str | None, typer.Option(help="ray | inprocess (default: ALPHASEARCH_EXECUTOR or ray)")] = None,
    scheduler: Annotated[bool | None, typer.Option("--scheduler/--no-scheduler",
                                                   help="Run the scheduler in this process (default: on).")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
) -> None:  # fmt: skip
    """Serve the REST API (and, by default, run the scheduler) on the embedded default or your database."""
    import uvicorn
    from pydantic import ValidationError

    from service.settings import check_bind

    try:
        settings = _settings(executor=executor, scheduler=scheduler)
    except ValidationError as exc:
        _fail(exc)
        return
    refusal = check_bind(host, settings)
    if refusal:
        typer.echo(f"error: {refusal}", err=True)  # plain: the command in it must survive copy-paste
        raise typer.Exit(2)
    _logging(log_level)
    from service.api.main import create_app
    from service.db import redacted

    console.print(f"alphasearch API on http://{host}:{port} (docs at /docs); database "
                  f"{redacted(settings.resolved_database_url)}; scheduler "
                  f"{'on, ' + settings.executor + ' executor' if settings.scheduler else 'off'}")  # fmt: skip
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=access_log)


@app.command("scheduler")
def scheduler_command(
    executor: Annotated[str | None, typer.Option(help="ray | inprocess (default: ALPHASEARCH_EXECUTOR or ray)")] = None,
    slots: Annotated[int | None, typer.Option(help="Studies to run at once (default 1).")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Run queued studies from the database, for a deployment where the API runs with --no-scheduler."""
    import signal
    import threading

    from pydantic import ValidationError

    from service.db import make_engine, make_sessionmaker, migrate, redacted, wait_for_database
    from service.scheduler import Scheduler

    try:
        settings = _settings(executor=executor, scheduler_slots=slots)
    except ValidationError as exc:
        _fail(exc)
        return
    _logging(log_level)
    engine = make_engine(settings.resolved_database_url)
    try:
        wait_for_database(engine, settings.db_wait_s)
        migrate(engine)
    except AlphaSearchError as exc:
        _fail(exc)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    runner = Scheduler(settings, make_sessionmaker(engine))
    runner.start()
    console.print(f"scheduler {runner.owner} on {redacted(settings.resolved_database_url)}; Ctrl-C stops it "
                  "(its studies resume on the next start)")  # fmt: skip
    done.wait()
    runner.stop()


ServerOpt = Annotated[str | None, typer.Option(help="API base URL (default: ALPHASEARCH_SERVER or http://127.0.0.1:8000).")]
TokenOpt = Annotated[str | None, typer.Option(help="API token for writes (default: ALPHASEARCH_API_TOKEN).")]


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help='YAML or JSON batch: {"studies": [StudySpec, ...]}', exists=True,
                                         dir_okay=False, readable=True)],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batch as JSON.")] = False,
) -> None:  # fmt: skip
    """Submit a batch of studies to a server. All-or-nothing: one bad entry rejects the batch, listing each."""
    from service.client import Client
    from service.render import print_studies

    try:
        with Client(server, token) as client:
            batch = client.submit_file(file)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(batch, indent=2) + "\n")
        return
    print_studies(Console(), batch["studies"], title=f"batch {batch['id']}: {len(batch['studies'])} studies queued")
    console.print(f"follow them with `alphasearch status` (or GET /api/v1/batches/{batch['id']})")


@app.command("upload-corpus")
def upload_corpus(
    file: Annotated[Path, typer.Argument(help="A text file (byte-level: any bytes).", exists=True, dir_okay=False,
                                         readable=True)],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:  # fmt: skip
    """Upload a corpus to a server; print the `corpus` name its studies take (upload:<sha256>).

    A study submitted to a server names a corpus the server owns, never a path on your machine or on the
    server: upload it first, then put the printed name in the batch's `corpus` field."""
    from service.client import Client

    try:
        with Client(server, token) as client:
            corpus = client.upload_corpus(file)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    console.print(f"{corpus['name']}: {corpus['size_bytes']:,} bytes stored; give studies corpus: {corpus['corpus']}")
    sys.stdout.write(corpus["corpus"] + "\n")


@app.command()
def recommend(
    width: Annotated[int, typer.Option(help="Width (d_model) of the model you will train.")],
    depth: Annotated[int, typer.Option(help="Its depth (number of blocks).")],
    norm: Annotated[str, typer.Option(help="dyt | derf")] = "dyt",
    attention: Annotated[str, typer.Option(help="standard | differential")] = "standard",
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the recommendation JSON.")] = False,
) -> None:
    """alpha0 for (width, depth), pooled over every finished matching study on the server."""
    from service.client import Client
    from service.render import print_recommendation

    try:
        with Client(server) as client:
            rec = client.recommendation(width=width, depth=depth, norm=norm, attention=attention)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(rec, indent=2) + "\n")
    else:
        print_recommendation(Console(), rec)
        console.print(f"pooled from {len(rec.get('studies', []))} studies: {', '.join(rec.get('studies', []))}")


@app.command()
def status(
    study_id: Annotated[str | None, typer.Argument(help="A study id; without it, the latest studies.")] = None,
    server: ServerOpt = None,
    limit: Annotated[int, typer.Option(help="How many studies to list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Status, progress and ETA of one study, or a table of the latest ones."""
    from service.client import Client
    from service.render import print_recommendation, print_studies, print_study

    try:
        with Client(server) as client:
            if study_id is None:
                data = client.studies(limit=limit)
            else:
                data = client.study(study_id)
                if data["status"] == "completed":
                    data["recommendation"] = client.study_recommendation(study_id)
    except AlphaSearchError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif study_id is None:
        print_studies(Console(), data["data"], title=f"latest {len(data['data'])} of {data['count']} studies")
    else:
        print_study(Console(), data)
        if "recommendation" in data:
            print_recommendation(Console(), data["recommendation"])


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
