"""`geoseg serve` (placeholder until its issue lands)."""
from __future__ import annotations

import typer


def serve() -> None:
    """Not implemented yet."""
    typer.echo("geoseg serve: not implemented yet", err=True)
    raise typer.Exit(2)
