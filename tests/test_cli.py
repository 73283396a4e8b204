"""The console script exists, lists the contract's commands and says its version."""
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from geoseg import __version__
from geoseg.cli import app

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
