"""The user-facing docs against the code, mechanically: what drifts silently when a module, an
option or a setting is added, renamed or removed without its documentation following."""
from __future__ import annotations

import re
from pathlib import Path

import typer

from geoseg.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
COMMANDS = {name: command for name, command in typer.main.get_command(app).commands.items()}
#: where each command's options are documented
COMMAND_DOC = {"predict": "predict.md", "eval": "predict.md", "tile": "tiling.md", "train": "models.md",
               "serve": "service.md"}


def options_of(command: str) -> set[str]:
    params = COMMANDS[command].params
    return {o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}


def mentions(text: str, word: str) -> bool:
    return re.search(re.escape(word) + r"(?![\w-])", text) is not None


def test_every_module_is_in_the_architecture_map():
    """tiles/classes.py, tiles/qml.py and geoseg/commands/outdir.py were in no table. A module of a
    sub-package may be named by its file name on a line that names its folder."""
    text = (DOCS / "ARCHITECTURE.md").read_text()
    lines = text.splitlines()
    missing = []
    for package in ("tiles", "geoseg", "api"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "weights" in path.parts or (path.name == "__init__.py" and rel != "tiles/__init__.py"):
                continue
            folder = rel.rsplit("/", 1)[0] + "/"
            if mentions(text, rel) or (folder.count("/") > 1 and any(
                    folder in line and mentions(line, f"`{path.name}`") for line in lines)):
                continue
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md does not say what these modules do: {missing}"


def test_every_variable_the_service_reads_is_in_service_md():
    read = {v for path in (REPO / "api").rglob("*.py") for v in re.findall(r"GEOSEG_[A-Z_]+[A-Z]", path.read_text())}
    text = (DOCS / "service.md").read_text()
    assert read >= {"GEOSEG_MAX_QUEUED", "GEOSEG_RETENTION_HOURS", "GEOSEG_CORS_ORIGINS"}
    assert not {v for v in read if not mentions(text, v)}
