"""`geoseg tile` (placeholder until its issue lands)."""
from __future__ import annotations

import typer


def tile() -> None:
    """Not implemented yet."""
    typer.echo("geoseg tile: not implemented yet", err=True)
    raise typer.Exit(2)
