"""Where geoseg finds its data and its shipped weights."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The shared data folder: ``$GEOSEG_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("GEOSEG_DATA")
    if env:
        return Path(env)
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def weights_dir() -> Path:
    """Folder of the weights and model cards shipped inside the package."""
    return Path(__file__).resolve().parent / "weights"
