"""Terminal rendering shared by the CLI commands: recommendation tables and study progress bars."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _interval(rec: dict[str, Any], key: str) -> str:
    lo, hi = rec["interval"][key]
    return f"[{lo:.3g}, {hi:.3g}]"


def print_recommendation(console: Console, rec: dict[str, Any]) -> None:
    """The recommendation as a table plus its warnings, in the words of the JSON contract."""
    level = rec["interval"].get("level", 0.9)
    insufficient = rec.get("evidence") == "insufficient"
    if insufficient:
        console.print(
            f"[bold red]Not enough evidence[/] for alpha0 at width {rec['width']}, depth {rec['depth']}: the values "
            "below are tentative, not a recommendation."
        )
    table = Table(
        title=f"{'tentative ' if insufficient else ''}alpha0 for width {rec['width']}, depth {rec['depth']} ({rec['norm']})"
    )
    table.add_column("parameter")
    table.add_column("alpha0", justify="right")
    table.add_column(f"{level:.0%} interval", justify="right")
    table.add_column("width exponent", justify="right")
    for key in ("alpha_attn", "alpha_ffn", "alpha_final"):
        fit = rec.get("fit", {}).get(key)
        exponent = "-" if not fit else f"{fit['exponent']:+.2f} [{fit['exponent_interval'][0]:+.2f}, {fit['exponent_interval'][1]:+.2f}]"
        table.add_row(key, f"{rec[key]:.3g}", _interval(rec, key), exponent)
    console.print(table)
    console.print(
        f"proxy widths {rec['proxy_widths']}, extrapolation factor {rec['extrapolation_factor']:.1f}x"
    )
    for warning in rec.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    backtest = rec.get("backtest") or {}
    if backtest.get("status") == "ok":
        r = backtest["regret"]
        console.print(
            f"backtest (width {backtest['held_out_width']} predicted from {backtest['fitted_widths']}): regret "
            f"{_regret_words(r['predicted'])}; (1, 1) {_regret_words(r['(1, 1)'])}; (0.5, 0.5) "
            f"{_regret_words(r['(0.5, 0.5)'])}"
        )
    for step in rec.get("next_steps", []):
        console.print(f"[cyan]next step:[/] {step}")
    if insufficient:
        return  # no copy-paste flags for a number the data do not support
    console.print(
        "DyT reference flags: "
        f"--attn_alpha_init_value {rec['alpha_attn']:.3g} --ffn_alpha_init_value {rec['alpha_ffn']:.3g} "
        f"--dec_alpha_init_value {rec['alpha_final']:.3g}"
    )


class StudyProgress:
    """A rich progress bar per lane (proxy width/depth): trials done / total, ETA, best loss so far."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> StudyProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, lanes: list[Any]) -> None:
        for lane in lanes:
            best = "-" if lane.best is None else f"{lane.best:.3f}"
            if lane.label not in self.tasks:
                self.tasks[lane.label] = self.progress.add_task(lane.label, total=lane.total, best=best)
            self.progress.update(self.tasks[lane.label], completed=lane.done, best=best)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def print_studies(console: Console, studies: list[dict[str, Any]], *, title: str = "studies") -> None:
    """One row per study as the REST API returns it: id, status, progress, ETA, target."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True)  # ids are for copying
    for column in ("name", "status", "trials", "ETA", "target", "norm", "created"):
        table.add_column(column)
    for s in studies:
        p = s["progress"]
        table.add_row(
            s["id"], s.get("name") or "", s["status"], f"{p['trials_done']}/{p['trials_total']}",
            _eta(p.get("eta_s")), f"w{s['target_width']} d{s['target_depth']}", s["norm"],
            s["created_at"][:19].replace("T", " "),
        )  # fmt: skip
    console.print(table)


def print_study(console: Console, study: dict[str, Any]) -> None:
    """One study: status, progress per proxy lane, error."""
    p = study["progress"]
    console.print(
        f"study [bold]{study['id']}[/] {study.get('name') or ''}: [bold]{study['status']}[/], "
        f"{p['trials_done']}/{p['trials_total']} trials, ETA {_eta(p.get('eta_s'))}; "
        f"target width {study['target_width']}, depth {study['target_depth']} ({study['norm']})"
    )
    if p.get("lanes"):
        table = Table()
        for column in ("lane", "trials", "best val loss"):
            table.add_column(column)
        for lane in p["lanes"]:
            best = "-" if lane.get("best") is None else f"{lane['best']:.4f}"
            table.add_row(lane["label"], f"{lane['done']}/{lane['total']}", best)
        console.print(table)
    if study.get("error"):
        console.print(f"[red]error:[/] {study['error']}")


class CalibrationBars:
    """A rich progress bar per calibrated width: runs done / total, the phase it is in, its last outcome."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]:<11} {task.fields[message]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[int, Any] = {}

    def __enter__(self) -> CalibrationBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, event: Any) -> None:
        """Takes alphasearch.calibrate.CalibrationProgress."""
        if event.width not in self.tasks:
            self.tasks[event.width] = self.progress.add_task(f"width {event.width}", total=event.total,
                                                             phase=event.phase, message=event.message)  # fmt: skip
        self.progress.update(self.tasks[event.width], completed=event.done, total=event.total, phase=event.phase,
                             message=event.message[:48])  # fmt: skip


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_calibrations(console: Console, rows: list[dict[str, Any]]) -> None:
    """One row per width (WidthCalibration.to_dict() plus its stored `id`), then each width's details."""
    table = Table(title="calibration per proxy width")
    for column in ("width", "lr", "warmup", "RMSNorm", "seed std", "α effect", "SNR", "gap", "stalled"):
        table.add_column(column, justify="right")
    for r in rows:
        regime, snr = r.get("regime") or {}, r.get("snr")
        table.add_row(
            str(r["width"]), _num(regime.get("lr"), "g"), _num(regime.get("warmup_steps"), "d"),
            _num(r.get("baseline_loss"), ".4f"), _num(r.get("seed_std"), ".4f"), _num(r.get("alpha_effect"), ".4f"),
            _num(snr, ".1f") if snr is None or snr >= 3 else f"[yellow]{snr:.1f}[/]",
            "-" if r.get("gap") is None else f"{100 * r['gap']:+.1f}%",
            f"{r.get('stalled', 0)}/{len(r.get('grid_runs') or [])}",
        )  # fmt: skip
    console.print(table)
    console.print("RMSNorm: its final val loss at the chosen lr; α effect: loss range over the alpha grid; "
                  "SNR = α effect / seed std; gap: best DyT point vs RMSNorm")  # fmt: skip
    if rows:
        s = rows[0]["settings"]
        console.print(f"regime: {s['steps']} steps of {s['batch_size']} x {s['seq_len']} bytes, depth {s['depth']}, "
                      f"lr ladder {s['lrs']}; seed noise: {s['seeds']} seeds at alpha {tuple(s['alpha'])}; "
                      f"alpha grid {s['grid']}x{s['grid']} over {tuple(s['alpha_attn_range'])} x {tuple(s['alpha_ffn_range'])}")  # fmt: skip
    for r in rows:
        best = r.get("best")
        point = f"best DyT point ({best['alpha_attn']:.3g}, {best['alpha_ffn']:.3g}) → {best['loss']:.4f}" if best else "no DyT point completed"
        console.print(f"width {r['width']}: {point}; id {r.get('id') or '-'}")
        if r.get("error"):
            console.print(f"[red]error:[/] width {r['width']}: {r['error']}")
        for warning in r.get("warnings") or []:
            if warning != r.get("error"):
                console.print(f"[yellow]warning:[/] width {r['width']}: {warning}")


def _regret_words(regret: dict[str, Any]) -> str:
    """'0.012 nats (0.8 seed std)' from a backtest regret entry."""
    if regret.get("nats") is None:
        return "-"
    units = regret.get("in_seed_std")
    return f"{regret['nats']:.3g} nats" + ("" if units is None else f" ({units:.1f} seed std)")


class ValidationBar:
    """One rich progress bar over a validation's runs (points x seeds), naming the run that just finished."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console)  # fmt: skip
        self.task: Any = None

    def __enter__(self) -> ValidationBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, done: int, total: int, run: Any) -> None:
        last = "" if run is None else f"{run.label} seed {run.seed}: " + (
            f"{run.final_val_loss:.4f}" if run.final_val_loss is not None else run.outcome)  # fmt: skip
        if self.task is None:
            self.task = self.progress.add_task("validate", total=total, last=last)
        self.progress.update(self.task, completed=done, total=total, last=last)


def print_validation(console: Console, data: dict[str, Any]) -> None:
    """A validation's points (mean loss, seed std) and the regret of the recommendation and the defaults."""
    result = data.get("result") or {}
    table = Table(title=f"validation of study {data['study_id']} at width {data['width']}, depth "
                        f"{result.get('depth', '-')}, {data['seeds']} seed(s) per point ({data['status']})")  # fmt: skip
    for name, justify in (("point", "left"), ("alpha_attn", "right"), ("alpha_ffn", "right"),
                          ("mean loss", "right"), ("seed std", "right"), ("above best", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    best = (result.get("best") or {}).get("mean")
    for p in result.get("points", []):
        mean, std = p.get("mean"), p.get("seed_std")
        table.add_row(
            p["label"] + (" [bold green](best)[/]" if (result.get("best") or {}).get("label") == p["label"] else ""),
            f"{p['alpha_attn']:.3g}", f"{p['alpha_ffn']:.3g}",
            f"{mean:.4f}" if mean is not None else p.get("outcome", "-"),
            f"{std:.4f}" if std is not None else "-",
            f"{mean - best:+.4f}" if mean is not None and best is not None else "-",
        )  # fmt: skip
    console.print(table)
    for role, r in (result.get("regret") or {}).items():
        if r.get("nats") is None:
            console.print(f"regret of {role}: not measured ({r.get('label')} did not complete every seed)")
            continue
        noise = "" if r.get("noise") is None else (
            f" = {r['in_noise']:.1f} x its noise {r['noise']:.2g} ({r['noise_kind']})")  # fmt: skip
        console.print(f"regret of {role}: {r['nats']:.4f} nats{noise}")
    if data.get("error"):
        console.print(f"[red]error:[/] {data['error']}")
