"""GDAL's ``.aux.xml`` sidecars (its Persistent Auxiliary Metadata): which of them change nothing a
prediction reads.

Why: QGIS, ArcGIS and ``gdalinfo -stats`` write ``scene.tif.aux.xml`` holding only each band's
statistics and histogram when a colleague browses a delivery folder, and a batch took the new
sidecar for an edited scene: every such scene was predicted again the next night. geoseg reads no
statistics of GDAL's (``tiles.normalize`` measures the pixels itself); georeferencing, a nodata
value, a mask or a band's description in the file still count.
"""
from __future__ import annotations

import os
from xml.etree import ElementTree

#: larger than any statistics-only file of a few hundred bands: read no further
_MAX_BYTES = 1 << 20


def statistics_only(path: str | os.PathLike) -> bool:
    """Whether the ``.aux.xml`` at ``path`` holds nothing but band statistics (``STATISTICS_*`` items of
    the default metadata domain) and histograms; False for anything else, or a file that cannot be read."""
    try:
        if os.path.getsize(path) > _MAX_BYTES:
            return False
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return False
    if root.tag != "PAMDataset" or root.attrib or (root.text or "").strip():
        return False
    for band in root:
        if band.tag != "PAMRasterBand":
            return False
        for item in band:
            if item.tag == "Histograms":
                continue
            if item.tag != "Metadata" or item.get("domain", "") != "":
                return False
            if not all(mdi.tag == "MDI" and mdi.get("key", "").startswith("STATISTICS_") for mdi in item):
                return False
    return True
