"""``GET /v1/models``: the shipped model cards and the operator's own (``geoseg serve --models``)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.routes.common import catalog_of
from api.schemas import ModelCard

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=list[ModelCard])
def list_models(request: Request) -> list[dict[str, Any]]:
    """Names, tasks, classes, GSD, training data and test metrics of the models a job may name
    (form field `model`): the shipped ones (`shipped: true`), then the server's own."""
    return catalog_of(request).listing()
