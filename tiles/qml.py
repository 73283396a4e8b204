"""A QGIS layer style (``.qml``) for a paletted class raster.

Why: QGIS loads ``NAME.qml`` found beside ``NAME.tif`` as the layer's default style. A GeoTIFF
colour table always has 256 entries and no labels, so without a style QGIS lists 256 unnamed
values in the legend; with this one it shows each class by name and colour, and nothing for the
classes left out (no data).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

__all__ = ["paletted_qml", "write_paletted_qml"]

RGBA = tuple[int, int, int, int]


def paletted_qml(entries: Sequence[tuple[int, str, RGBA]], band: int = 1) -> str:
    """QML text of a paletted renderer: one ``(value, label, (r, g, b, a))`` per class, in order."""
    rows = "\n".join(
        f"        <paletteEntry value=\"{int(value)}\" label={quoteattr(str(label))} "
        f"color=\"#{r:02x}{g:02x}{b:02x}\" alpha=\"{int(a)}\"/>"
        for value, label, (r, g, b, a) in entries
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        "<qgis version=\"3.28\" styleCategories=\"Symbology\">\n"
        "  <pipe>\n"
        f"    <rasterrenderer type=\"paletted\" band=\"{int(band)}\" opacity=\"1\" alphaBand=\"-1\" nodataColor=\"\">\n"
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{rows}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "    <brightnesscontrast brightness=\"0\" contrast=\"0\" gamma=\"1\"/>\n"
        "    <rasterresampler maxOversampling=\"2\"/>\n"
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def write_paletted_qml(raster_path: str | Path, entries: Sequence[tuple[int, str, RGBA]]) -> Path:
    """Write the style beside ``raster_path`` (same name, ``.qml``), where QGIS looks for it."""
    path = Path(raster_path).with_suffix(".qml")
    path.write_text(paletted_qml(entries), encoding="utf-8")
    return path
