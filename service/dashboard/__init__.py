"""The web dashboard: static HTML + vanilla JS modules served at `/`, no build step and no CDN.

`install(app)` adds, outside the product API (none of it is in the OpenAPI schema):
- `/`                                  the single page (hash routes: #/, #/study/<id>, #/batch[/<id>])
- `/dashboard/static/...`              its JS modules and CSS (this package's `static/` folder)
- `/dashboard/vendor/plotly.min.js`    Plotly's bundle from the installed `plotly` package, gzipped once
- `/dashboard/config.json`             what the page must know before a write: is a token required?
- `/dashboard/studies/{id}/width-fit.json`
                                       the alpha*-vs-width trend lines with their interval band, refitted
                                       from the stored recommendation's per-width optima (the JSON carries
                                       the exponent but not the intercept and covariance a band needs)

Everything the page shows otherwise comes from /api/v1, exactly as any other client sees it.

    >>> from service.api.main import create_app
    >>> app = create_app(Settings())  # doctest: +SKIP
    >>> install(app)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import math
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from service.settings import Settings

STATIC = Path(__file__).parent / "static"
VENDOR_CACHE = "public, max-age=604800"  # the URL carries plotly's version, so a new one is a new URL
router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Serve the dashboard from `app` (call once, after the API routers)."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")


@cache
def _plotly() -> tuple[str, bytes, bytes]:
    """(version, bundle, gzipped bundle) of the installed plotly package's plotly.min.js."""
    try:
        import plotly
    except ImportError as exc:  # a dependency of the package; only a broken install lacks it
        raise RuntimeError("the dashboard needs the `plotly` package: pip install plotly") from exc
    raw = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return plotly.__version__, raw, gzip.compress(raw, compresslevel=6, mtime=0)


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    version = _plotly()[0]
    html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{PLOTLY_VERSION}}", version)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/vendor/plotly.min.js")
def plotly_bundle(request: Request) -> Response:
    _, raw, zipped = _plotly()
    headers = {"Cache-Control": VENDOR_CACHE, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(zipped, media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return Response(raw, media_type="text/javascript", headers=headers)


@router.get("/dashboard/config.json")
def config(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    return {"token_required": settings.token is not None, "api": "/api/v1", "plotly": _plotly()[0]}


@router.get("/dashboard/studies/{study_id}/width-fit.json")
async def width_fit(study_id: str, request: Request) -> JSONResponse:
    """Per parameter: trend centre and band at widths from the smallest proxy to past the target.

    `{"params": {}}` when the study has no trend (one proxy width, or it has not completed): the page
    then draws the per-width optima alone, and never sees an error status for a normal situation.
    """
    from service import crud
    from service.api.routes.studies import load_study

    with request.app.state.sessions() as session:
        study = load_study(session, study_id)  # 404 for an unknown id, like the API
        result = crud.get_result(session, study_id=study.id) if study.status == "completed" else None
        rec = dict(result.recommendation) if result is not None else None
    if rec is None:
        return JSONResponse({"params": {}})
    return JSONResponse({"params": await run_in_threadpool(trend_lines, rec)})


def trend_lines(rec: dict[str, Any], points: int = 40) -> dict[str, Any]:
    """Refit the width trend from `rec["per_width"]` (the same fit `recommend` ran) and sample it.

    Returns {param: {"widths", "center", "lo", "hi", "exponent", "level", "depth"}}; {} without a trend.
    """
    from alphasearch.analysis import WidthOptimum, fit_width_trend
    from alphasearch.errors import AlphaSearchError

    try:
        opts = [_optimum(WidthOptimum, d) for d in rec.get("per_width") or []]
        level = float(rec.get("interval", {}).get("level", 0.9))
        fits = fit_width_trend(opts, level=level) if len({o.width for o in opts}) > 1 else {}
    except (AlphaSearchError, TypeError, ValueError, KeyError):
        return {}  # an old or partial record: the page shows the points without a band
    if not fits:
        return {}
    lo_w = min(o.width for o in opts) / 1.25
    hi_w = max(int(rec["width"]), max(o.width for o in opts)) * 1.25
    widths = [lo_w * (hi_w / lo_w) ** (i / (points - 1)) for i in range(points)]
    depth = int(rec["depth"])
    out: dict[str, Any] = {}
    for param, fit in fits.items():
        rows = [fit.predict(w, depth if fit.depth_exponent is not None else None) for w in widths]
        out[param] = {
            "widths": widths,
            "center": [_num(r[0]) for r in rows],
            "lo": [_num(r[1]) for r in rows],
            "hi": [_num(r[2]) for r in rows],
            "exponent": _num(fit.exponent),
            "level": level,
            "depth": depth if fit.depth_exponent is not None else None,
        }
    return out


def _optimum(cls: Any, d: dict[str, Any]) -> Any:
    fields = dict(d)
    fields["interval_attn"] = tuple(fields["interval_attn"])
    fields["interval_ffn"] = tuple(fields["interval_ffn"])
    fields["on_edge"] = list(fields.get("on_edge") or [])
    if not all(isinstance(fields[k], int | float) for k in ("alpha_attn", "alpha_ffn")):
        raise ValueError("optimum without a value")
    known = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in fields.items() if k in known})


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
