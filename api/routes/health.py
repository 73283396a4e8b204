"""``GET /healthz``: liveness for load balancers and the Docker HEALTHCHECK (no API key)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.routes.common import settings_of, store_of, supervisor_of
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(request: Request) -> JSONResponse:
    """200 while the job table answers and the supervisor runs; 503 otherwise."""
    supervisor, settings = supervisor_of(request), settings_of(request)
    health = Health(status="ok" if supervisor.alive else "degraded", open=settings.api_key is None,
                    workers=settings.workers, running=supervisor.running_count, jobs=store_of(request).counts(),
                    max_queued=settings.max_queued, retention_hours=settings.retention_hours)
    return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)
