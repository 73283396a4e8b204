"""Shared fixtures: where the real shared data lives."""
from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.paths import data_root as _data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$GEOSEG_DATA`` or ``../shared/data``; fails loudly if missing (CI always has it)."""
    root = _data_root()
    assert root.is_dir(), f"shared data not found at {root} (set GEOSEG_DATA)"
    return root


@pytest.fixture(scope="session")
def rasters_dir(data_root: Path) -> Path:
    return data_root / "rasters"


@pytest.fixture(scope="session")
def buildings_dir(data_root: Path) -> Path:
    return data_root / "buildings"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The warning filters ``tiles`` and ``geoseg.infer`` install at import, in force for every
    test as in the product: pytest imports the test modules (and so those) inside a
    ``catch_warnings`` block of its own, which throws them away when it ends;
    ``pytest_sessionstart`` is not inside one."""
    from geoseg.infer import ignore_tracer_warnings
    from tiles.georeferencing_warnings import ignore_georeferencing_warnings

    ignore_georeferencing_warnings()
    ignore_tracer_warnings()
