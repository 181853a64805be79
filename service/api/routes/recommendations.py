"""/api/v1/recommendations: alpha0 at any (width, depth), pooled over every finished matching study.

service/pooled.py documents which studies match and how their optima are pooled.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from alphasearch.spec import StudySpec
from service.api.schemas import ErrorPublic, RecommendationPublic

router = APIRouter(prefix="/recommendations", tags=["recommendations"])
DEFAULT_EMBED_SCALE = {f.name: f.default for f in dataclasses.fields(StudySpec)}["embed_scale"]



NOT_FOUND = "no finished study matches (`left_out` says why when the family's studies were trained for another width or regime)"


@router.get("", response_model=RecommendationPublic, responses={404: {"model": ErrorPublic, "description": NOT_FOUND}})
async def get_recommendation(
    request: Request,
    width: Annotated[int, Query(ge=8, le=1_000_000, description="width (d_model) of the model you will train")],
    depth: Annotated[int, Query(ge=1, le=10_000, description="its depth (number of blocks)")],
    norm: Annotated[Literal["dyt", "derf"], Query()] = "dyt",
    attention: Annotated[Literal["standard", "differential"], Query()] = "standard",
    embed_scale: Annotated[Literal["unit_rms", "sqrt_width", "one"] | None,
                           Query(description="proxy parametrisation; default: the StudySpec default")] = None,
) -> Any:  # fmt: skip
    """Recommendation (DESIGN §7 JSON) from the pooled per-width optima of all completed matching studies."""
    query = {"width": width, "depth": depth, "norm": norm, "attention": attention,
             "embed_scale": embed_scale or DEFAULT_EMBED_SCALE}  # fmt: skip
    pooled = request.app.state.pooled
    # A cache hit is answered on the event loop; a miss (database + analysis) runs in the threadpool.
    answer = pooled.cached(**query)
    if answer is None:
        answer = await run_in_threadpool(lambda: pooled.get(**query))
    if answer is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no completed study with norm={norm}, attention={attention} yet; submit one with POST /api/v1/studies",
        )
    code, body = answer  # 404 when every study of the family was trained for another width or regime
    return Response(body, status_code=code, media_type="application/json")
