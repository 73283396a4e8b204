"""`geoseg predict` (placeholder until its issue lands)."""
from __future__ import annotations

import typer


def predict() -> None:
    """Not implemented yet."""
    typer.echo("geoseg predict: not implemented yet", err=True)
    raise typer.Exit(2)
