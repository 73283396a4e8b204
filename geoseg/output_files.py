"""The files a prediction writes into its folder, what other programs keep beside them, and which of a
folder's other files are the user's own. No heavy imports: the command line reads it before a batch.
"""
from __future__ import annotations

from geoseg.staging import PREFIX as STAGING_PREFIX

OUTPUT_FILES = ("classmap.tif", "classmap.qml", "buildings.geojson", "buildings.gpkg", "report.json")

#: what other programs keep beside an output, which they would read with (over) a new file of its name:
#: SQLite's journal of a GeoPackage a GIS has open (its pending edits), GDAL's .aux.xml (statistics, a band
#: description) and external overviews or mask of the class map
OUTPUT_SIDECARS = {"buildings.gpkg": ("-wal", "-shm", "-journal"), "classmap.tif": (".aux.xml", ".ovr", ".msk")}

_MADE = {*OUTPUT_FILES, *(f"{name}{suffix}" for name, suffixes in OUTPUT_SIDECARS.items() for suffix in suffixes),
         "mosaic.vrt"}


def is_users_own(name: str) -> bool:
    """Whether a file of a prediction's folder is none of a prediction's (nor its sidecars or staging):
    the user's own, a QGIS style or notes kept beside the results, which a re-run keeps."""
    return name not in _MADE and not name.startswith(STAGING_PREFIX)
