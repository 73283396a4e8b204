"""`geoseg eval` (placeholder until its issue lands)."""
from __future__ import annotations

import typer


def evaluate() -> None:
    """Not implemented yet."""
    typer.echo("geoseg eval: not implemented yet", err=True)
    raise typer.Exit(2)
