"""The console script exists, lists the contract's commands and says its version; usage errors are one line."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoseg import __version__
from geoseg.cli import app, boolean_word_input, value_after_flag

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("tile", "train", "predict", "eval", "serve"):
        assert name in result.output


def test_version_option_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"geoseg {__version__}\n"


def test_python_m_geoseg_runs_the_same_command_line(tmp_path):
    """``python -m geoseg`` is what a user tries when the console script is not on PATH."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "geoseg", "--version"], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"geoseg {__version__}\n"


def test_service_reports_the_package_version(tmp_path):
    from api.app import create_app
    from api.settings import Settings

    service = create_app(Settings(data_dir=tmp_path / "svc", standby=False), runner="api.pipeline_runner:run_pipeline")
    assert service.openapi()["info"]["version"] == __version__


def _one_line_usage_error(exit_code: int, stdout: str, stderr: str, command: str, *words: str) -> None:
    """A usage error: exit 2, nothing on stdout, one stderr line 'geoseg COMMAND: error: ... (see
    'geoseg COMMAND --help')' naming the bad option or value (``words``)."""
    assert exit_code == 2, (exit_code, stdout, stderr)
    assert stdout == "", stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{command}: error: ") and lines[0].endswith(f"(see '{command} --help')"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]


# (arguments, the command that errs, words its line must hold): each a usage error click raises
USAGE_ERRORS = [
    (["predict", "x.tif", "--out", "o", "--tile-size", "abc"], "geoseg predict", ("--tile-size", "'abc'")),
    (["predict", "x.tif", "--out", "o", "--gsd", "x"], "geoseg predict", ("--gsd", "'x'")),
    (["predict", "--out", "o"], "geoseg predict", ("missing argument 'INPUT'",)),
    (["predict", "x.tif"], "geoseg predict", ("missing option", "--out")),
    (["predict", "x.tif", "--out"], "geoseg predict", ("--out", "requires an argument")),
    (["predict", "x.tif", "--out", "o", "--tilesize", "512"], "geoseg predict", ("--tilesize", "--tile-size")),
    (["predict", "x.tif", "--out", "o", "--no-buildings=1"], "geoseg predict", ("--no-buildings",)),
    (["predict", "x.tif", "--out", "o", "--model", "buildings=a", "--model", "landcover=c", "--model", "buildings=b"],
     "geoseg predict", ("--model", "buildings is given twice (buildings=a, buildings=b)")),
    (["predict", "x.tif", "--out", "o", "--regularize", "true"], "geoseg predict",
     ("'true' is not a file", "--regularize is a flag and takes no value")),
    (["predict", "x.tif", "--no-buildings", "No", "--out", "o"], "geoseg predict",
     ("'No' is not a file", "--no-buildings is a flag")),
    (["predict", "true", "x.tif", "--out", "o"], "geoseg predict", ("INPUT 'true' names no file", "no input")),
    (["predict", "x.tif", "--out", "o", "--", "Yes"], "geoseg predict", ("INPUT 'Yes' names no file",)),
    (["predcit", "x.tif"], "geoseg", ("'predcit'", "Did you mean 'predict'?")),
    (["--bogus"], "geoseg", ("--bogus",)),
    (["tile", "--out", "o"], "geoseg tile", ("missing argument 'SCENE'",)),
    (["tile", "off", "x.tif", "--out", "o"], "geoseg tile", ("SCENE 'off' names no file",)),
    (["tile", "x.tif", "--out", "o", "--target", "roads"], "geoseg tile", ("--target", "'roads'", "landcover")),
    (["tile", "x.tif", "--out", "o", "--size", "big"], "geoseg tile", ("--size", "'big'")),
    (["train"], "geoseg train", ("missing argument 'TASK'",)),
    (["train", "buildings", "--data", "d", "--out", "o", "--epochs", "1.5"], "geoseg train", ("--epochs", "'1.5'")),
    (["eval"], "geoseg eval", ("missing argument 'PRED_DIR'",)),
    (["eval", "pred", "--truth"], "geoseg eval", ("--truth", "requires an argument")),
    (["eval", "pred"], "geoseg eval", ("give exactly one of --labels or --truth",)),
    (["eval", "pred", "--labels", "l.geojson", "--truth", "t.tif"], "geoseg eval", ("exactly one of",)),
    (["serve", "--port", "0"], "geoseg serve", ("--port", "'0'", "greater than or equal to 1")),
    (["serve", "--workers", "two"], "geoseg serve", ("--workers", "'two'")),
    # the commands' own checks of a value's choices or range, or of options that do not go together: exit 1
    # before session 31, as a run that failed
    (["predict", "x.tif", "--out", "o", "--profile", "turbo"], "geoseg predict", ("--profile", "'turbo'")),
    (["predict", "x.tif", "--out", "o", "--batch-size", "0"], "geoseg predict", ("--batch-size must be >= 1",)),
    (["predict", "x.tif", "--out", "o", "--mosaic", "--scheduler", "local"], "geoseg predict", ("--mosaic",)),
    (["tile", "x.tif", "--out", "o", "--split", "later"], "geoseg tile", ("--split", "'later'")),
    (["tile", "x.tif", "--out", "o", "--size", "0"], "geoseg tile", ("--size must be > 0",)),
    (["train", "buildings", "--data", "d", "--out", "o", "--epochs", "1", "--device", "gpu"], "geoseg train",
     ("--device", "'gpu'")),
    (["train", "buildings", "--data", "d", "--out", "o", "--epochs", "1", "--minutes", "5"], "geoseg train",
     ("--minutes or --epochs, not both",)),
    (["serve", "--log-level", "loud", "--data-dir", "d"], "geoseg serve", ("--log-level", "'loud'")),
    (["serve", "--root-path", "geoseg", "--data-dir", "d"], "geoseg serve", ("--root-path", "'geoseg'")),
]


@pytest.mark.parametrize(("args", "command", "words"), USAGE_ERRORS, ids=[" ".join(a) for a, _, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_exit_2(args, command, words, tmp_path, monkeypatch):
    """A scripted batch reads one line per failure; a usage error was typer's boxed panel (a usage
    line, a hint and the message wrapped over several lines)."""
    monkeypatch.chdir(tmp_path)  # a usage error no longer caught would write its relative --out here
    result = CliRunner().invoke(app, args)
    _one_line_usage_error(result.exit_code, result.stdout, result.stderr, command, *words)


EMPTY_VALUES = [
    (["predict", "x.tif", "--out", ""], "geoseg predict", "empty value for --out"),
    (["predict", "x.tif", "--out="], "geoseg predict", "empty value for --out"),
    (["predict", "", "--out", "o"], "geoseg predict", "empty argument"),
    (["tile", "x.tif", "--out", ""], "geoseg tile", "empty value for --out"),
    (["train", "buildings", "--data", "", "--out", "m", "--epochs", "1"], "geoseg train", "empty value for --data"),
    (["eval", "", "--truth", "t.tif"], "geoseg eval", "empty argument"),
    (["train", "buildings", "--data", "d", "--out", "m", "--epochs", "1", "--name", ""], "geoseg train",
     "empty value for --name"),
]


@pytest.mark.parametrize(("args", "command", "words"), EMPTY_VALUES, ids=[" ".join(a) for a, _, _ in EMPTY_VALUES])
def test_an_empty_value_is_a_usage_error(args, command, words, tmp_path, monkeypatch):
    """A script's unset variable (--out "$OUT") was the path '', the current folder: predict, tile
    and train wrote into it, and an empty INPUT predicted every raster in it."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    _one_line_usage_error(result.exit_code, result.stdout, result.stderr, command, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_an_interruption_before_a_command_begins_says_so(monkeypatch, tmp_path, stop):
    """Ctrl-C in the seconds predict spends importing its models' libraries, before its own handler runs,
    exited 130 without a word (typer's handler)."""
    import geoseg.pipeline
    from geoseg.commands.termination import Terminated

    def interrupted(**_):
        raise KeyboardInterrupt if stop == "ctrl-c" else Terminated("SIGTERM")

    monkeypatch.setattr(geoseg.pipeline, "PredictOptions", interrupted)
    result = CliRunner().invoke(app, ["predict", "x.tif", "--out", str(tmp_path / "o")])
    assert result.exit_code == (130 if stop == "ctrl-c" else 143), result.output
    word = "interrupted" if stop == "ctrl-c" else "terminated"
    assert result.stderr == f"geoseg predict: {word}\n", result.stderr
    assert not (tmp_path / "o").exists()


def test_usage_error_from_the_environment_is_one_line():
    result = CliRunner().invoke(app, ["serve"], env={"GEOSEG_WORKERS": "abc"})
    _one_line_usage_error(result.exit_code, result.stdout, result.stderr, "geoseg serve", "GEOSEG_WORKERS", "'abc'")


def test_usage_error_without_a_terminal_is_one_line(tmp_path):
    """The path of a script or CI job: the real process, no terminal, a narrow COLUMNS."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "30"}
    done = subprocess.run([sys.executable, "-m", "geoseg", "predict", "x.tif", "--out", "o", "--tilesize", "512"],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    _one_line_usage_error(done.returncode, done.stdout, done.stderr, "geoseg predict", "--tilesize", "--tile-size")


def test_a_truncated_tiff_is_one_line_without_gdal_s_own_stderr_lines(tmp_path):
    """GDAL's default handler printed ``ERROR 1: TIFFFetchDirectory: ...`` (eight lines) before the one
    line saying why a truncated GeoTIFF cannot be predicted: a call rasterio makes outside its own error
    handler (the mask flags). The real process, as a script runs it."""
    import numpy as np
    import rasterio

    scene = tmp_path / "cut.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.Affine(0.3, 0, 4_000_000, 0, -0.3, -100_000)) as ds:
        ds.write(np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
        ds.write_mask(np.full((64, 64), 255, np.uint8))  # an internal mask: its directory is cut off
    scene.write_bytes(scene.read_bytes()[:scene.stat().st_size // 2])
    env = {**{k: v for k, v in os.environ.items() if k != "CPL_LOG"}, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "geoseg", "predict", str(scene), "--out", "o", "--profile", "fast"],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg predict: error: cut.tif: cannot read its pixels"), lines


def test_help_and_a_bare_command_keep_their_rich_help():
    """Only errors changed: ``--help`` and a bare ``geoseg`` still print typer's formatted help."""
    bare = CliRunner().invoke(app, [])
    assert "Usage: geoseg" in bare.stdout and "╭─ Commands" in bare.stdout, bare.output
    helped = CliRunner().invoke(app, ["predict", "--help"])
    assert helped.exit_code == 0 and "╭─ Options" in helped.stdout and "--tile-size" in helped.stdout, helped.output


@pytest.mark.parametrize("command", [[], ["tile"], ["train"], ["predict"], ["eval"], ["serve"]], ids=" ".join)
def test_help_shows_flags_as_flags(command):
    """typer 0.29 gave each flag a type, '--regularize <bool>', which users read as a value to give
    ('--regularize true', the word then an INPUT); and a repeatable option or argument '<list[str]>'."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout and "--help " in result.stdout, result.stdout
    assert "<list[" not in result.stdout, result.stdout  # the Arguments panel too: 'INPUT <list[str]>'
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # INPUT..., not {INPUT}...
    if command == ["predict"]:
        assert "Usage: geoseg predict [OPTIONS] INPUT..." in result.stdout, result.stdout
        assert re.search(r"--regularize +Square building outlines", result.stdout), result.stdout
        assert re.search(r"--model +<str> +TASK=CARD", result.stdout), result.stdout
        assert re.search(r"--tile-size +<int>", result.stdout), result.stdout  # an option taking a value keeps its type
        assert re.search(r"\* +INPUT\.\.\. +<str> +Rasters to predict", result.stdout), result.stdout
    if command == ["tile"]:
        assert re.search(r"\* +SCENE\.\.\. +<str> +Scene rasters", result.stdout), result.stdout  # strings: /vsizip// keeps its //
    if command == ["train"]:
        assert re.search(r"\* +TASK +<str> +landcover", result.stdout), result.stdout  # one value: no '...'


def test_a_file_named_like_a_boolean_is_still_an_input(tmp_path, monkeypatch):
    """Only a word naming no file is taken for a flag's value: a scene saved as 'true' is an INPUT."""
    from typer.main import get_command

    predict_command = get_command(app).commands["predict"]
    monkeypatch.chdir(tmp_path)
    args = ["a.tif", "--regularize", "true", "--out", "o"]
    assert "--regularize is a flag" in value_after_flag(predict_command, args)
    (tmp_path / "true").touch()
    assert value_after_flag(predict_command, args) is None
    assert value_after_flag(predict_command, ["--out", "true", "x.tif"]) is None  # a value of --out
    assert value_after_flag(predict_command, ["x.tif", "--out", "o", "--", "--mosaic", "1"]) is None


def test_a_boolean_word_as_the_first_input_fails_before_any_work(tmp_path, monkeypatch):
    """'geoseg predict true scene.tif' predicted scene.tif and only then failed on 'true' (input not
    found, exit 1): the word, a flag's value put in the wrong place, is now a usage error up front."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scene.tif").touch()  # never read: the command stops before any input is
    result = CliRunner().invoke(app, ["predict", "true", "scene.tif", "--out", "o"])
    _one_line_usage_error(result.exit_code, result.stdout, result.stderr, "geoseg predict", "INPUT 'true'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]  # no --out folder, no batch.json


def test_a_boolean_word_naming_a_file_is_an_input(tmp_path, monkeypatch):
    """Only a word that names nothing is refused; options' values are not inputs."""
    from typer.main import get_command

    predict_command = get_command(app).commands["predict"]
    monkeypatch.chdir(tmp_path)
    assert "INPUT 'on'" in boolean_word_input(predict_command, ["a.tif", "on", "--out", "o"])
    (tmp_path / "on").touch()
    assert boolean_word_input(predict_command, ["a.tif", "on", "--out", "o"]) is None
    assert boolean_word_input(predict_command, ["a.tif", "--out", "true", "-o", "1", "--gsd", "0"]) is None
    train_command = get_command(app).commands["train"]  # one TASK, not inputs: its own check names the tasks
    assert boolean_word_input(train_command, ["true", "--data", "d", "--out", "o"]) is None
