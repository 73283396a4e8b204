"""`geoseg predict` on the command line: option checks, odd paths, batches, warnings, units."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.paths import data_root
from geoseg.pipeline import PredictError, PredictOptions, _json_safe

KAMPALA = data_root() / "buildings" / "kampala"
SCENE = KAMPALA / "kampala_z19_1.tif"


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped Python error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg predict: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("option, value, word", [
    ("--gsd", "inf", "--gsd"), ("--gsd", "nan", "--gsd"), ("--gsd", "0", "--gsd"),
    ("--simplify", "-1", "--simplify"), ("--simplify", "inf", "--simplify"), ("--simplify", "nan", "--simplify"),
    ("--min-area", "inf", "--min-area"), ("--min-area", "nan", "--min-area"), ("--min-area", "-1", "--min-area"),
])
def test_float_options_must_be_finite(tmp_path, option, value, word):
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), option, value])
    assert_one_line_error(result, word, "finite")
    assert not (tmp_path / "o").exists()


def test_zero_simplify_and_min_area_are_allowed():
    PredictOptions(simplify_m=0.0, min_area_m2=0.0, gsd=0.3).check()
    with pytest.raises(PredictError):
        PredictOptions(simplify_m=-0.1).check()


def test_report_values_are_strict_json():
    report = {"gsd": {"input_m": math.inf, "used_m": 0.3}, "tile_px": (512, float("nan")), "n": 3, "s": "x"}
    text = json.dumps(_json_safe(report), allow_nan=False)
    assert json.loads(text) == {"gsd": {"input_m": None, "used_m": 0.3}, "tile_px": [512, None], "n": 3, "s": "x"}
