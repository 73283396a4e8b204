"""The ``geoseg`` command line: thin wrappers, one module per command in ``geoseg.commands``."""
from __future__ import annotations

import typer

from geoseg import __version__
from geoseg.commands import evaluate, predict, serve, tile, train

app = typer.Typer(
    name="geoseg",
    help="Land-cover class maps and building footprints from aerial and satellite GeoTIFFs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"geoseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the geoseg version and exit."),
) -> None:
    """Land-cover class maps and building footprints from aerial and satellite GeoTIFFs."""


app.command("tile")(tile.tile)
app.command("train")(train.train)
app.command("predict")(predict.predict)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)

if __name__ == "__main__":  # pragma: no cover
    app()
