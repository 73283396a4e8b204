"""``GET /healthz``: liveness for load balancers and the Docker HEALTHCHECK (no API key)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.routes.common import RETRY_AFTER_HEADER, settings_of, store_of, supervisor_of
from api.schemas import Health

router = APIRouter(tags=["health"])


# 503 has two bodies: the supervisor died (a Health, status degraded), or the job table cannot be
# read (the app's handler answers a Problem with Retry-After, as on every route)
_UNHEALTHY = {"description": "Degraded: the job supervisor died or the job runner does not import (a "
                             "Health, its `problem` says which), or the job table is unavailable (a Problem, "
                             "with Retry-After)",
              "content": {"application/json": {"schema": {"anyOf": [
                  {"$ref": "#/components/schemas/Health"}, {"$ref": "#/components/schemas/Problem"}]}}},
              "headers": {"Retry-After": RETRY_AFTER_HEADER}}


@router.get("/healthz", response_model=Health, responses={503: _UNHEALTHY})
def healthz(request: Request) -> JSONResponse:
    """200 while the job table answers, the supervisor runs and the job runner imports (checked once at
    start-up, ``Supervisor._probe_runner``); 503 otherwise, ``problem`` saying why."""
    supervisor, settings = supervisor_of(request), settings_of(request)
    problem = None if supervisor.alive else "the job supervisor stopped: no job will run; restart the server"
    problem = problem or supervisor.runner_error
    health = Health(status="degraded" if problem else "ok", open=not settings.keyed,
                    workers=settings.workers, running=supervisor.running_count, jobs=store_of(request).counts(),
                    max_queued=settings.max_queued, retention_hours=settings.retention_hours, problem=problem)
    return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)
