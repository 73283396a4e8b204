"""Third-party warnings about missing georeferencing, which geoseg reports itself: ignored by
targeted filters installed once, when ``tiles`` is imported (``tiles/__init__.py``).

rasterio warns ``NotGeoreferencedWarning`` for every dataset opened or written without a
geotransform (a JPEG or PNG such as the Dubai images, a chip cut from one, its class map), and
again for one written with the identity transform; pyogrio warns for every vector layer written
without a CRS (``buildings.gpkg`` of such an input). tiles tells its callers instead
(``Scene.crs`` is None, ``Scene.ground_control``), and ``geoseg predict`` tells users once per
input, in a note that names what that means for each output.

Why not ``warnings.catch_warnings()`` around each open and write: it replaces the process-wide
filter list and puts back the list it found when it exits, so two threads inside such blocks at
once (the class map is written on a thread beside the building head; the service validates
uploads on a thread pool) lose or leak each other's filters. These filters are installed at
import and never swapped at run time.

Each filter names a message and the module that warns (rasterio, pyogrio), so no other warning
is touched. The category is ``UserWarning`` (``NotGeoreferencedWarning`` is one): naming
rasterio's class would import rasterio here, which ``geoseg --help`` and the GPU machine
(``tiles.splits`` without rasterio) must not load. A block that records warnings must not put
``simplefilter("always")`` in front of these (``geoseg predict`` appends it), or call
``ignore_georeferencing_warnings()`` again inside it.
"""
from __future__ import annotations

import warnings

__all__ = ["GEOREFERENCING_WARNINGS", "ignore_georeferencing_warnings"]

#: (message regex, module regex) of each warning ignored; a message matches from its start
GEOREFERENCING_WARNINGS: tuple[tuple[str, str], ...] = (
    # rasterio.open of a file without geotransform, GCPs or RPCs, for reading or writing
    (r"Dataset has no geotransform, gcps, or rpcs", r"rasterio(\.|$)"),
    # a raster written with the identity transform (the pixel grid of such an input)
    (r"The given matrix is equal to Affine\.identity", r"rasterio(\.|$)"),
    # a vector layer written without a CRS (buildings.gpkg in pixel or world-file coordinates)
    (r"'crs' was not provided", r"pyogrio(\.|$)"),
)


def ignore_georeferencing_warnings() -> None:
    """Put the filters of ``GEOREFERENCING_WARNINGS`` in front of the process's warning filters
    (idempotent: ``filterwarnings`` drops an identical filter before inserting it)."""
    for message, module in GEOREFERENCING_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
