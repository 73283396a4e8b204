"""What ``pip install`` of the project gets: the version it reports and the files it ships.

Read from pyproject.toml, so no wheel or venv is built here (too slow for the suite).
"""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the suite runs on the project's 3.11 venv

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_distribution_takes_its_version_from_the_package():
    """One version string: a second literal in pyproject.toml would drift from ``geoseg --version``."""
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "geoseg.__version__"}
