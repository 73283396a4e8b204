"""What ``pip install`` of the project gets: the version it reports and the files it ships.

Read from pyproject.toml, so no wheel or venv is built here (too slow for the suite).
"""
from __future__ import annotations

import subprocess
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


def _shipped(package: str) -> set[Path]:
    """The files of ``package`` that ``[tool.setuptools.package-data]`` puts in a wheel (setuptools globs)."""
    patterns = PYPROJECT["tool"]["setuptools"].get("package-data", {}).get(package, [])
    return {p.resolve() for pattern in patterns for p in (REPO / package).glob(pattern) if p.is_file()}


def test_every_file_the_packages_hold_besides_code_is_in_the_wheel():
    """A tracked asset under geoseg/, tiles/ or api/ that no package-data glob names is missing from
    ``pip install``: it works from the checkout and fails in a user's venv."""
    listed = subprocess.run(["git", "ls-files", "geoseg", "tiles", "api"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assets = [REPO / f for f in listed.stdout.splitlines() if not f.endswith(".py")]
    assert assets, "the shipped weights are tracked under geoseg/weights"
    for asset in assets:
        package = asset.relative_to(REPO).parts[0]
        assert asset.resolve() in _shipped(package), f"{asset.relative_to(REPO)} is not in pyproject's package-data"


def test_every_file_a_shipped_card_loads_is_in_the_wheel():
    """Weights and int8 graphs are found beside their card by name."""
    from geoseg.card import read_card
    from geoseg.paths import weights_dir

    shipped = _shipped("geoseg")
    card_paths = sorted(weights_dir().glob("*.json"))
    assert card_paths
    for card_path in card_paths:
        assert card_path.resolve() in shipped, card_path.name
        card = read_card(card_path)
        needed = [card["weights"]] + ([card["int8_onnx"]["file"]] if card.get("int8_onnx") else [])
        for name in needed:
            assert (card_path.parent / name).resolve() in shipped, f"{name} (named by {card_path.name})"


def test_the_build_backend_floor_reads_the_license_expression():
    """``license = "Apache-2.0"`` (PEP 639) is a validation error before setuptools 77: a build without
    isolation on setuptools 68-76, which the old floor allowed, failed ('project.license must be ...')."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    assert isinstance(PYPROJECT["project"]["license"], str)
    setuptools = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    floor = min(Version(s.version) for s in setuptools.specifier if s.operator == ">=")
    assert floor >= Version("77")


def test_the_docker_build_copies_every_file_the_package_build_reads():
    """The image ran ``pip install .`` without LICENSE: its wheel carried no licence text (setuptools
    includes LICEN[CS]E* only when present), while pyproject.toml declares Apache-2.0."""
    copied = {src for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for src in line.split()[1:-1]}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "LICENSE", "tiles", "geoseg", "api"}
    assert not needed - copied
