"""geoseg: land-cover class maps and building footprints from aerial and satellite GeoTIFFs."""

#: the package version: pyproject.toml reads it from here (``[tool.setuptools.dynamic]``), so a
#: checkout run with ``PYTHONPATH``, the installed wheel, ``geoseg --version`` and the service's
#: OpenAPI document all say the same
__version__ = "0.1.0"
