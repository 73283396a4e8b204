"""The models a service job may name: the shipped cards and the operator's own (``--models DIR``).

Why a module of its own: the operator's folder is checked once, at start-up (a broken card, or two
models of one name, stop the server with the file named), ``GET /v1/models`` lists the catalogue, a
submission's ``model`` field names models from it, and the supervisor hands a job's process their
card paths, which it loads as ``geoseg predict --model TASK=CARD`` does (``PredictOptions.model_dirs``).
Cards are checked by ``geoseg.card``, as ``--model`` checks them; it does not import torch, which the
server process never loads.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg import card as cards
from geoseg.paths import weights_dir

log = logging.getLogger("geoseg.api")


class ModelUnavailable(ValueError):
    """A job names a model this server cannot run: unknown, of another task, or its files removed."""


@dataclass(frozen=True)
class CatalogModel:
    """One model a job may name: its card (as listed) and where it lies."""

    name: str
    task: str
    card_path: Path
    shipped: bool
    card: dict[str, Any]

    def files_present(self) -> bool:
        """Whether its card and weights are still there (an operator may remove a folder while the
        server runs)."""
        try:
            cards.weights_path(self.card_path, self.card)
        except cards.ModelCardError:
            return False
        return self.card_path.is_file()


def shipped_models(folder: Path | None = None) -> list[CatalogModel]:
    """The cards shipped in ``geoseg/weights`` (an unreadable one is skipped with a warning, as the
    listing always did: the package's own files are tested, not the operator's)."""
    found = []
    for path in sorted((folder or weights_dir()).glob("*.json")):
        try:
            card = cards.read_json(path)
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable model card %s: %s", path.name, exc)
            continue
        if isinstance(card, dict) and isinstance(card.get("name"), str) and isinstance(card.get("task"), str):
            found.append(CatalogModel(card["name"], card["task"], path, True, card))
    return found


def _names_a_model(path: Path) -> bool:
    """Whether a JSON file in the models folder claims to be a card (it has a ``task`` or an
    ``architecture``); a class list, a log or a report beside the cards is not one. A file that is
    not JSON at all is taken for a broken card, so that ``read_card`` says so."""
    try:
        data = cards.read_json(path)
    except (OSError, ValueError):
        return True
    return isinstance(data, dict) and ("task" in data or "architecture" in data)


def operator_models(folder: Path) -> list[CatalogModel]:
    """The cards in ``folder`` and in its sub-folders (one level: ``geoseg train --out DIR`` writes
    ``NAME.json`` beside ``NAME.pt``, one folder per model or several models in one), each checked as
    ``--model`` checks a card: valid JSON with the required keys, a known task, its weights present.
    ``ModelCardError`` names the first bad file."""
    if not folder.is_dir():
        raise cards.ModelCardError(f"no folder at {folder}")
    paths = sorted(p for p in (*folder.glob("*.json"), *folder.glob("*/*.json"))
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    found = []
    for path in paths:
        if not _names_a_model(path):
            continue
        card = cards.read_card(path)
        if card["task"] not in cards.MODEL_TASKS:
            raise cards.ModelCardError(f"model card {path}: task {card['task']!r} is none of "
                                       f"{', '.join(cards.MODEL_TASKS)}")
        if not isinstance(card["name"], str) or not card["name"].strip():
            raise cards.ModelCardError(f"model card {path}: 'name' must be a non-empty string")
        cards.weights_path(path, card)
        found.append(CatalogModel(card["name"], card["task"], path, False, card))
    return found


class ModelCatalog:
    """The shipped models and the operator's, by name (unique across both)."""

    def __init__(self, models: list[CatalogModel]) -> None:
        self.models = models
        self._by_name: dict[str, CatalogModel] = {}
        for model in models:
            other = self._by_name.get(model.name)
            if other is not None:
                raise cards.ModelCardError(
                    f"two models are named {model.name!r}: {other.card_path} and {model.card_path}; a job "
                    f"names its model by name, so give each its own (geoseg train --name NAME)")
            self._by_name[model.name] = model

    @classmethod
    def load(cls, models_dir: Path | None) -> ModelCatalog:
        """The shipped models, plus those in ``models_dir`` (``--models``, ``GEOSEG_MODELS_DIR``)."""
        own = operator_models(Path(models_dir)) if models_dir is not None else []
        return cls([*shipped_models(), *own])

    def listing(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: each card as written, and whether it is shipped; not the operator's
        models whose files were removed since the start (a job could not use them)."""
        return [{**m.card, "shipped": m.shipped} for m in self.models if m.shipped or m.files_present()]

    def names(self, task: str) -> list[str]:
        """The models of ``task`` a job may name now."""
        return [m.name for m in self.models if m.task == task and (m.shipped or m.files_present())]

    def _available(self, task: str) -> str:
        names = self.names(task)
        return (f"{task} models: {', '.join(names)} (GET /v1/models)" if names
                else f"this server has no {task} model (GET /v1/models)")

    def choose(self, spec: str | None) -> dict[str, str]:
        """A submission's ``model`` field (``buildings=NAME,landcover=NAME``; empty: the shipped
        models) -> {task: name}; ``ModelUnavailable`` with a one-line reason and the names to use."""
        if spec is None or not spec.strip():
            return {}
        # spaces around names and '=' are a form's typing, not part of a name
        items = ["=".join(part.strip() for part in item.split("=", 1)) for item in spec.split(",")]
        try:
            chosen = cards.parse_model_specs(items, what="model", value="NAME")
        except ValueError as exc:
            raise ModelUnavailable(f"{exc}; e.g. buildings=NAME or buildings=NAME,landcover=NAME") from None
        if len(chosen) != len(items):
            raise ModelUnavailable(f"model names a task twice ({spec.strip()!r}): give each task one model")
        for task, name in chosen.items():
            model = self._by_name.get(name)
            if model is None:
                raise ModelUnavailable(f"model: no model named {name!r}; {self._available(task)}")
            if model.task != task:
                raise ModelUnavailable(f"model: {name!r} is a {model.task} model, not a {task} one; "
                                       f"{self._available(task)}")
            if not model.files_present():
                raise ModelUnavailable(f"model: {name!r} is no longer on the server (its card or weights were "
                                       f"removed from the models folder); {self._available(task)}")
        return chosen

    def bands(self, chosen: dict[str, str]) -> tuple[tuple[int, ...], str] | None:
        """The bands the chosen models were trained to read as red, green, blue (a card whose chips
        were cut with ``geoseg tile --bands``) and the model that says so; None when none names any.
        What a job without ``bands`` will read (``geoseg.heads.bands_of_models``)."""
        for name in sorted(chosen.values()):
            model = self._by_name.get(name)
            named = cards.card_bands(model.card) if model is not None else None
            if named is not None:
                return named, name
        return None

    def card_paths(self, chosen: dict[str, str]) -> dict[str, str]:
        """{task: name} of a job about to run -> {task: card path} for ``PredictOptions.model_dirs``;
        ``ModelUnavailable`` (the job's error) when a model went away after the job was accepted."""
        paths = {}
        for task, name in chosen.items():
            model = self._by_name.get(name)
            if model is None or model.task != task:
                raise ModelUnavailable(f"{task} model {name!r} is not among this server's models any more (the "
                                       f"server was restarted without it); submit the job again naming one "
                                       f"GET /v1/models lists")
            if not model.files_present():
                raise ModelUnavailable(f"{task} model {name!r} is gone: its card or weights were removed from the "
                                       f"server's models folder after the job was accepted; restore them, or "
                                       f"submit the job again")
            paths[task] = str(model.card_path)
        return paths
