"""The stored chunks (tiles or strips) of a TIFF's full-resolution image, each keyed by its bytes.

Why: only a read of every pixel proves that a raster holds no valid pixel, and an all-nodata
raster is mostly chunks of the same bytes (one fill value, compressed alike, or chunks left out
of a sparse file). Identical bytes decode to identical pixels, so a scan decodes one chunk of each
kind: 20000 x 20000 px of nodata are a few reads, not 400 Mpx (``tiles.masks.has_valid_pixel``).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tifffile
from rasterio.windows import Window

from tiles.tiff_pages import tiff_pages

#: NewSubfileType bits: a reduced-resolution image (overview), a transparency mask
_REDUCED, _MASK = 1, 4
#: chunks smaller than this (pixels) are not keyed: one read per chunk costs ~0.3 ms of calls, as much as
#: decoding ~15,000 pixels in a window of many chunks (16 px tiles of 4096 x 4096 px: 15 s keyed, 0.4 s
#: read in windows)
MIN_KEYED_CHUNK_PIXELS = 128 * 128


@dataclass(frozen=True)
class _Chunking:
    """Where each chunk of one TIFF image lies in the file."""

    width: int
    height: int
    chunk_width: int
    chunk_height: int
    planes: int  # 1 for pixel-interleaved data; the samples per pixel for band-interleaved
    offsets: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def per_plane(self) -> int:
        return -(-self.width // self.chunk_width) * -(-self.height // self.chunk_height)


def _chunk_shape(page: tifffile.TiffPage) -> tuple[int, int]:
    """(height, width) of ``page``'s tiles or strips, from its tags alone."""
    height, width = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        return int(page.tilelength), int(page.tilewidth)
    return min(int(page.rowsperstrip or height), height), width


def _chunking(page: tifffile.TiffPage) -> _Chunking | None:
    """``page``'s chunk grid, None when its chunk counts do not match one (a layout not followed)."""
    height, width = int(page.imagelength), int(page.imagewidth)
    chunk_height, chunk_width = _chunk_shape(page)
    planes = int(page.samplesperpixel) if page.planarconfig == 2 else 1
    chunking = _Chunking(width, height, chunk_width, chunk_height, planes,
                         tuple(int(o) for o in page.dataoffsets), tuple(int(c) for c in page.databytecounts))
    if min(chunk_width, chunk_height) < 1 or len(chunking.offsets) != planes * chunking.per_plane:
        return None
    if len(chunking.counts) != len(chunking.offsets):
        return None
    return chunking


class StoredChunks:
    """The full-resolution image's chunks of a single-file TIFF, row by row: for each, its window
    and a key of its bytes (every plane's, and the internal mask's at the same place) and shape,
    None for a chunk that no other can equal (its byte counts are its own: not worth hashing).

    Two chunks of one key hold the same pixels and the same mask. Build with ``stored_chunks``."""

    def __init__(self, path: Path, image: _Chunking, mask: _Chunking | None) -> None:
        self.path, self.image, self.mask = path, image, mask

    @property
    def shape(self) -> tuple[int, int]:
        """The image's (height, width)."""
        return self.image.height, self.image.width

    def _sizes(self, index: int) -> tuple[int, ...]:
        """The byte counts of chunk ``index`` (every plane's, the mask's): chunks of other counts
        cannot hold the same bytes."""
        image = self.image
        counts = tuple(image.counts[plane * image.per_plane + index] for plane in range(image.planes))
        return counts + ((self.mask.counts[index],) if self.mask is not None else ())

    def __iter__(self) -> Iterator[tuple[Window, bytes | None]]:
        image, mask = self.image, self.mask
        across = -(-image.width // image.chunk_width)
        with open(self.path, "rb") as file:
            def chunk_bytes(chunking: _Chunking, index: int) -> bytes:
                if chunking.counts[index] == 0:  # left out of a sparse file: GDAL reads it as fill
                    return b""
                file.seek(chunking.offsets[index])
                return file.read(chunking.counts[index])

            sizes = [self._sizes(i) for i in range(image.per_plane)]
            repeated = Counter(sizes)
            for i in range(image.per_plane):
                row, col = (i // across) * image.chunk_height, (i % across) * image.chunk_width
                window = Window(col, row, min(image.chunk_width, image.width - col),
                                min(image.chunk_height, image.height - row))
                if repeated[sizes[i]] == 1:  # no other chunk stores as many bytes: no other like it
                    yield window, None
                    continue
                digest = hashlib.blake2b(f"{window.width}x{window.height}".encode(), digest_size=20)
                for plane in range(image.planes):
                    piece = chunk_bytes(image, plane * image.per_plane + i)
                    digest.update(len(piece).to_bytes(8, "little") + piece)
                if mask is not None:
                    piece = chunk_bytes(mask, i)
                    digest.update(len(piece).to_bytes(8, "little") + piece)
                yield window, digest.digest()


def stored_chunks(path: Path | str) -> StoredChunks | None:
    """The chunks of ``path``'s first image, as GDAL reads it, with its internal mask's; None when
    ``path`` is no TIFF that tifffile reads, its layout is one this does not follow (a mask on
    another grid), it is stored uncompressed (reading is as cheap as hashing) or an external mask
    (``path.msk``, which GDAL reads as its mask) lies beside it (chunks of the same bytes may be
    masked differently there), or its chunks are small (``MIN_KEYED_CHUNK_PIXELS``: reading them one by
    one costs more than reading them in windows), for the caller to read the raster as it would without
    keys."""
    if any(Path(f"{path}{suffix}").exists() for suffix in (".msk", ".MSK")):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tiff_pages(tif))
            chunk_height, chunk_width = _chunk_shape(pages[0])
            if chunk_height * chunk_width < MIN_KEYED_CHUNK_PIXELS:
                return None
            image = _chunking(pages[0])
            uncompressed = pages[0].compression == 1  # hashing its bytes costs more than reading them
            masks = [p for p in pages[1:] if p.subfiletype & _MASK and not p.subfiletype & _REDUCED]
            mask = _chunking(masks[0]) if masks else None
    except Exception:  # noqa: BLE001 - tifffile raises several types on files it cannot read
        return None
    if image is None or (masks and mask is None) or uncompressed:
        return None
    if mask is not None and (mask.width, mask.height, mask.chunk_width, mask.chunk_height, mask.planes) != (
            image.width, image.height, image.chunk_width, image.chunk_height, 1):
        return None
    return StoredChunks(Path(path), image, mask)
