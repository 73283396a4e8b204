"""Paletted rasters (one band of colour-table indices) opened as the RGBA they stand for.

Why: a PNG8, a GIF-like GeoTIFF (``PHOTOMETRIC=PALETTE``) or an indexed-colour export of an
orthophoto holds one band of indices into a colour table; the colours are the picture. Read as
one band it is no RGB image (``geoseg predict`` refused it as "1 band(s)"), and its indices are
no brightness to stretch. GDAL expands it on the fly (``vrt://PATH?expand=rgba``, as
``gdal_translate -expand rgba`` does), keeping the georeferencing; the alpha band it makes from
the colour table is the mask, so transparent entries (GDAL gives a declared nodata index alpha 0)
are no data. A location holding a ``?`` (a URL's query, ``https://h/a.tif?sig=x``) cannot be put in
a ``vrt://`` string, whose path GDAL ends at the first ``?``: it is expanded by a VRT written here
instead (``expansion_vrt``: each band a colour-table component of the one band, the nodata index
left out, the georeferencing copied), opened from its XML text.
"""
from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

import rasterio
from rasterio.enums import ColorInterp

from tiles.rasterpath import RasterPath

__all__ = ["EXPANDED_COLORINTERP", "EXPANSION", "expanded_location", "expansion_vrt", "is_expanded", "is_paletted",
           "open_expanded"]

#: what ``vrt://`` is asked to do with the colour table
EXPANSION = "?expand=rgba"

#: the bands a paletted band expands into (the colour table's four components), as GDAL labels them
EXPANDED_COLORINTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)


def is_paletted(dataset) -> bool:
    """True for a one-band raster whose band is colour-table indices."""
    return dataset.count == 1 and dataset.colorinterp[0] == ColorInterp.palette


def expanded_location(path: RasterPath) -> str:
    """GDAL's connection string for ``path`` read as RGBA through its colour table."""
    return f"vrt://{path}{EXPANSION}"


#: how ``expansion_vrt``'s XML starts (what ``is_expanded`` knows it by)
_VRT_START = "<VRTDataset "
_VRT_MARK = "<!-- geoseg: a paletted band expanded to RGBA -->"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def expansion_vrt(src) -> str:
    """The XML of a VRT reading paletted ``src`` as the RGBA of its colour table, as
    ``vrt://?expand=rgba`` does: the nodata index (0, 0, 0, 0), the CRS, geotransform or GCPs kept.
    The source is ``src.name``, the location GDAL opened (``/vsicurl/https://...?...``)."""
    parts = [f'{_VRT_START}rasterXSize="{src.width}" rasterYSize="{src.height}">{_VRT_MARK}\n']
    if src.crs is not None:
        parts.append(f"  <SRS>{escape(src.crs.to_wkt())}</SRS>\n")
    if not src.transform.is_identity:
        t = src.transform
        parts.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n")
    gcps, gcp_crs = src.gcps
    if gcps:
        projection = f" Projection={quoteattr(gcp_crs.to_wkt())}" if gcp_crs else ""
        parts.append(f"  <GCPList{projection}>\n" + "".join(
            f'    <GCP Id={quoteattr(str(g.id))} Pixel="{g.col!r}" Line="{g.row!r}" X="{g.x!r}" Y="{g.y!r}" '
            f'Z="{(g.z or 0.0)!r}"/>\n' for g in gcps) + "  </GCPList>\n")
    nodata = f"      <NODATA>{_number(src.nodata)}</NODATA>\n" if src.nodata is not None else ""
    for band, interp in enumerate(EXPANDED_COLORINTERP, start=1):
        parts.append(f'  <VRTRasterBand dataType="Byte" band="{band}">\n'
                     f"    <ColorInterp>{interp.name.capitalize()}</ColorInterp>\n"
                     f"    <ComplexSource>\n"
                     f'      <SourceFilename relativeToVRT="0">{escape(src.name)}</SourceFilename>\n'
                     f"      <SourceBand>1</SourceBand>\n{nodata}"
                     f"      <ColorTableComponent>{band}</ColorTableComponent>\n"
                     f"    </ComplexSource>\n  </VRTRasterBand>\n")
    parts.append("</VRTDataset>\n")
    return "".join(parts)


def is_expanded(dataset) -> bool:
    """True for a dataset opened as a paletted raster's expansion (``open_expanded``)."""
    name = dataset.name
    return (name.startswith("vrt://") and name.endswith(EXPANSION)) or (
        name.startswith(_VRT_START) and _VRT_MARK in name)


def open_expanded(path: RasterPath, **options):
    """``rasterio.open(path)``, or its RGBA expansion when it is paletted (``options`` go to both)."""
    src = rasterio.open(path, **options)
    if not is_paletted(src):
        return src
    if "?" not in str(path):
        src.close()
        return rasterio.open(expanded_location(path), **options)
    with src:  # GDAL would end a vrt:// string's path at the query's '?'
        xml = expansion_vrt(src)
    return rasterio.open(xml, **options)
