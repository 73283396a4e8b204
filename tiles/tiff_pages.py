"""The images (IFDs) of a TIFF, each once, for code that walks them with tifffile.

Why: a TIFF whose chain of images points back to an earlier one (its last IFD's "next" offset set
to the first: a damaged or hostile file of a few KB) is opened by GDAL, which notices the loop, but
tifffile's page iterator follows it for ever, keeping every page: the service's upload check spun
at full CPU while its memory grew by GBs, and the upload was never answered.
"""
from __future__ import annotations

from collections.abc import Iterator

import tifffile

__all__ = ["LoopedTiff", "tiff_pages"]


class LoopedTiff(ValueError):
    """A TIFF whose chain of images loops back: damaged, not a raster to read."""


def tiff_pages(tif: tifffile.TiffFile) -> Iterator[tifffile.TiffPage]:
    """``tif``'s pages in file order, each once; ``LoopedTiff`` where the chain leads back to one seen."""
    seen: set[int] = set()
    for page in tif.pages:
        if page.offset in seen:
            raise LoopedTiff(f"its chain of images loops back to the one at byte {page.offset}")
        seen.add(page.offset)
        yield page
