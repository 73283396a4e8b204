"""The ``geoseg`` command line: thin wrappers, one module per command in ``geoseg.commands``."""
from __future__ import annotations

import typer

from geoseg.commands import evaluate, predict, serve, tile, train

app = typer.Typer(
    name="geoseg",
    help="Land-cover class maps and building footprints from aerial and satellite GeoTIFFs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("tile")(tile.tile)
app.command("train")(train.train)
app.command("predict")(predict.predict)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)

if __name__ == "__main__":  # pragma: no cover
    app()
