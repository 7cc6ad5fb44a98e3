"""Operations endpoints: health, readiness, metrics and the failing-hosts report, for
operators and their probes rather than for batch clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from pixelbatch import hosts
from pixelbatch.api import schemas
from pixelbatch.api.routes import ERROR_RESPONSES, runtime_of
from pixelbatch.api.security import CurrentPrincipal
from pixelbatch.db.health import database_status

router = APIRouter()


@router.get(
    "/api/stats/hosts",
    responses=ERROR_RESPONSES,
    summary="The supplier hosts with the most failed images of your batches",
)
def failing_hosts(
    request: Request, who: CurrentPrincipal, query: Annotated[hosts.HostQuery, Query()]
) -> schemas.HostStats:
    found = hosts.failing_hosts(runtime_of(request), query, tenant=who.tenant)
    return schemas.HostStats(
        hours=query.hours,
        hosts=[schemas.HostFailures(**vars(h)) for h in found],
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/healthz", summary="Liveness")
def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    responses={503: {"model": schemas.Health}},
    summary="Readiness: database reachable and migrated",
)
def readyz(request: Request) -> Response:
    status = database_status(runtime_of(request).engine)
    if status == "unmigrated":
        return JSONResponse(
            status_code=503,
            content={"status": "unavailable", "detail": "database schema is not migrated"},
        )
    if status == "unreachable":
        return JSONResponse(
            status_code=503, content={"status": "unavailable", "detail": "database unreachable"}
        )
    return JSONResponse(content={"status": "ready", "detail": None})
