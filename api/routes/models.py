"""``GET /v1/models``: the model cards shipped with the package."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from api.schemas import ModelCard
from geoseg.paths import weights_dir

router = APIRouter(prefix="/v1", tags=["models"])
log = logging.getLogger("geoseg.api")


def read_cards(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` card in ``folder`` that has at least a name and a task."""
    cards = []
    for path in sorted(folder.glob("*.json")):
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable model card %s: %s", path.name, exc)
            continue
        if isinstance(card, dict) and isinstance(card.get("name"), str) and isinstance(card.get("task"), str):
            cards.append(card)
    return cards


@router.get("/models", response_model=list[ModelCard])
def list_models() -> list[dict[str, Any]]:
    """Names, tasks, classes, GSD, training data and test metrics of the shipped models."""
    return read_cards(weights_dir())


router.add_api_route("/models", list_models, methods=["HEAD"], include_in_schema=False,
                     response_model=list[ModelCard])  # HEAD, as of every GET
