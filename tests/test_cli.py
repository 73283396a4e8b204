"""The console script exists and lists the contract's commands."""
from typer.testing import CliRunner

from geoseg.cli import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("tile", "train", "predict", "eval", "serve"):
        assert name in result.output
