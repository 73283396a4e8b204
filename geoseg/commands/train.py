"""`geoseg train` (placeholder until its issue lands)."""
from __future__ import annotations

import typer


def train() -> None:
    """Not implemented yet."""
    typer.echo("geoseg train: not implemented yet", err=True)
    raise typer.Exit(2)
