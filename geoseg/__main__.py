"""``python -m geoseg``: the same command line as the ``geoseg`` console script."""
from geoseg.cli import app

app(prog_name="geoseg")
