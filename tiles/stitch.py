"""``BlendingWriter``: seamless mosaics of overlapping per-tile predictions, on disk.

Why: predicting tiles independently leaves seams at tile borders, and full-scene
float accumulators blow up memory on large rasters. Each tile's float predictions
are multiplied by a 2-D Hann (cosine) window — high in the tile centre, near zero at
its edges — and added into a weighted sum and a weight total kept in ``np.memmap``
files in a temporary folder (disk, not RAM; pages are written back as we go).
``finalise`` then walks the raster block by block and writes sum / weight as
probabilities and/or the argmax class map. Pixels no valid tile covered get
``nodata`` in the class map and 0 probabilities.

Usage::

    with BlendingWriter(width, height, n_classes=3, transform=t, crs=crs) as bw:
        for tile in tile_grid(width, height, 512, 64):
            bw.add(tile.read, probs, valid)            # probs (3,512,512) float
        bw.finalise(classes_path="classes.tif", probs_path="probs.tif")

Disk use: 4 * (n_classes + 1) bytes per pixel in the temporary folder, reserved when the writer
is made (a full disk, or one with less free space than that, is an OSError there, not SIGBUS
later), removed by ``close`` (the ``with``
block's end, also on an exception).

Threads: ``add`` is a read-modify-write of the memmaps; call it from one thread (or hold a lock),
as the predict pipeline does (tiles read on a thread, blended on the caller's).
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from tiles.file_modes import follow_umask
from tiles.grid import check_is_window, tile_grid

__all__ = ["PROBABILITY_TOLERANCE", "BlendingWriter", "hann_weights"]

#: how far past [0, 1] a probability may stray (float rounding of a softmax, int8 dequantisation)
PROBABILITY_TOLERANCE = 1e-3


def hann_weights(height: int, width: int) -> np.ndarray:
    """Separable 2-D Hann window, strictly positive (``sin^2`` at pixel centres)."""
    wy = np.sin(np.pi * (np.arange(height) + 0.5) / height) ** 2
    wx = np.sin(np.pi * (np.arange(width) + 0.5) / width) ** 2
    return np.outer(wy, wx).astype(np.float32)


def _zeros_on_disk(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A float32 ``np.memmap`` of zeros at ``path`` whose disk blocks are reserved before it is mapped.

    Why: ``np.memmap(mode="w+")`` makes a sparse file, whose blocks the file system allocates only
    when a page is written back; on a full disk that cannot happen and the kernel ends the process
    with SIGBUS: a batch died half-way (exit 135) without a word, its ``batch.json`` still 'running'
    and its ``.part`` folder left. Reserved first (``posix_fallocate``), a full disk is an
    ``OSError`` (No space left on device) here, which fails this input only."""
    nbytes = int(np.prod(shape)) * np.dtype(np.float32).itemsize
    with open(path, "wb") as f:
        if hasattr(os, "posix_fallocate"):
            try:  # glibc writes zeros where the file system lacks it
                os.posix_fallocate(f.fileno(), 0, nbytes)
            except OSError as exc:  # it names no file: "[Errno 27] File too large" was the whole message
                limit = " (a file-size limit: `ulimit -f`?)" if exc.errno == errno.EFBIG else ""
                raise OSError(exc.errno, f"{exc.strerror or exc}{limit}: reserving {size_words(nbytes)} for a "
                                         f"blending accumulator on {_file_system(path)}") from exc
        else:  # macOS, Windows: a sparse file, as before
            f.truncate(nbytes)
    return np.memmap(path, dtype=np.float32, mode="r+", shape=shape)


def _file_system(path: Path) -> str:
    """Which file system ``path`` is on, for a message: its mount point, then the folder (the
    accumulators' own folder goes with the run, so its name alone says little)."""
    mount = Path(os.path.abspath(path)).parent
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"the file system mounted at {mount} ({Path(path).parent})"


def accumulator_bytes(width: int, height: int, n_classes: int) -> int:
    """Disk bytes a ``BlendingWriter`` of this shape reserves: float32 sums per class and a weight."""
    return 4 * (n_classes + 1) * height * width


def check_free_space(folder: Path, nbytes: int, what: str = "the blending accumulators need") -> None:
    """Raise ``OSError`` (ENOSPC) when ``folder``'s file system has less than ``nbytes`` free.

    Why: reserving more than the disk holds is not refused up front: glibc's ``posix_fallocate``
    fallback writes zeros until the disk is full, and a file system may keep the blocks it claimed
    before it ran out, so the disk can fill for every process on it. A batch input 2.4 million px
    square (a VRT over two tiles 700 km apart) ran 260 s and failed with 'No space left on device'.
    Asked first, it fails at once and claims nothing."""
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {what} "
                      f"{size_words(nbytes)} on {_file_system(folder)}, {size_words(free)} are free")


def size_words(nbytes: int) -> str:
    return f"{nbytes / 1e9:.3g} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.3g} MB"


class BlendingWriter:
    """Accumulates weighted per-tile class scores on disk (see module docstring)."""

    def __init__(self, width: int, height: int, n_classes: int, transform: Affine | None = None,
                 crs: CRS | str | None = None, tmp_dir: str | Path | None = None):
        if width <= 0 or height <= 0 or n_classes <= 0:
            raise ValueError(f"bad writer shape {n_classes}x{height}x{width}")
        self.width, self.height, self.n_classes = width, height, n_classes
        self.transform = transform if transform is not None else Affine.identity()
        self.crs = crs
        self._dir = Path(tempfile.mkdtemp(prefix="geoseg-blend-", dir=tmp_dir))
        if tmp_dir is not None:  # a caller's folder (a run's staging): as the umask asks, not 0700, so a
            follow_umask(self._dir, 0o777)  # group member can clear what a killed run of a colleague left
        # a writer used without `with` and dropped (a notebook cell) left 4 x (classes + 1) bytes a pixel
        # in /tmp; the folder now goes with the object, or at exit
        self._remove_dir = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        try:  # a raster too big for the disk or the file system fails here: no folder may stay behind
            check_free_space(self._dir, accumulator_bytes(width, height, n_classes))
            self._sum = _zeros_on_disk(self._dir / "sum.f32", (n_classes, height, width))
            self._weight = _zeros_on_disk(self._dir / "weight.f32", (height, width))
        except BaseException:
            self.close()
            raise
        self._window_cache: dict[tuple[int, int], np.ndarray] = {}

    def _weights(self, h: int, w: int) -> np.ndarray:
        key = (h, w)
        if key not in self._window_cache:
            self._window_cache[key] = hann_weights(h, w)
        return self._window_cache[key]

    def add(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Blend ``probs`` (n_classes, h, w) float probabilities in [0, 1] predicted for ``window`` (whole
        pixels; it may extend past the raster but must overlap it).

        ``valid`` (h, w) bool: pixels to ignore (nodata) get zero weight. Raises ``ValueError`` naming what
        is wrong: shapes, a window off the raster, values that are not probabilities (logits, NaN, 0-255).
        """
        h, w = self._check_window(window, inside=False)
        probs = np.asarray(probs)
        if probs.shape != (self.n_classes, h, w):
            hint = " (channels last? move them first)" if probs.shape == (h, w, self.n_classes) else ""
            raise ValueError(f"probs must be (n_classes, height, width) = ({self.n_classes}, {h}, {w}) for "
                             f"{_window_text(window)}, got {probs.shape}{hint}")
        if not np.issubdtype(probs.dtype, np.floating):
            raise ValueError(f"probs must be float probabilities in [0, 1], got {probs.dtype}")
        lo, hi = float(probs.min()), float(probs.max())
        if not (lo >= -PROBABILITY_TOLERANCE and hi <= 1 + PROBABILITY_TOLERANCE):  # NaN fails too
            raise ValueError(f"probs must be probabilities in [0, 1] (softmax or sigmoid outputs, not logits), "
                             f"got values {lo:.4g}..{hi:.4g} for {_window_text(window)}")
        weight = self._weights(h, w)
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != (h, w):
                raise ValueError(f"valid must be (height, width) = ({h}, {w}) for {_window_text(window)}, "
                                 f"got {valid.shape}")
            weight = weight * valid.astype(bool, copy=False)
        c0, r0 = int(window.col_off), int(window.row_off)
        x0, y0 = max(c0, 0), max(r0, 0)
        x1, y1 = min(c0 + w, self.width), min(r0 + h, self.height)
        sl = (slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
        wt = weight[sl]
        self._sum[:, y0:y1, x0:x1] += probs[(slice(None),) + sl].astype(np.float32) * wt
        self._weight[y0:y1, x0:x1] += wt

    def _check_window(self, window: Window, inside: bool) -> tuple[int, int]:
        """(height, width) of a window of whole pixels that overlaps the raster (``inside``: lies in it)."""
        self._check_open()
        check_is_window(window)
        parts = (window.col_off, window.row_off, window.width, window.height)
        if any(float(v) != int(v) for v in parts) or window.width <= 0 or window.height <= 0:
            raise ValueError(f"{_window_text(window)} is not whole pixels of positive size "
                             f"(round a window from bounds first: window.round_offsets().round_lengths())")
        c0, r0, w, h = (int(v) for v in parts)
        size = f"the {self.width} x {self.height} px raster"
        if inside and (c0 < 0 or r0 < 0 or c0 + w > self.width or r0 + h > self.height):
            raise ValueError(f"{_window_text(window)} is not inside {size}")
        if c0 + w <= 0 or r0 + h <= 0 or c0 >= self.width or r0 >= self.height:
            raise ValueError(f"{_window_text(window)} does not overlap {size}")
        return h, w

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalised probabilities (n_classes, h, w) float32 and covered mask (h, w) of a window inside the raster."""
        h, w = self._check_window(window, inside=True)
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + h, c0 + w
        weight = np.asarray(self._weight[r0:r1, c0:c1])
        covered = weight > 0
        probs = np.asarray(self._sum[:, r0:r1, c0:c1]) / np.where(covered, weight, 1.0)
        return probs.astype(np.float32, copy=False), covered

    def _profile(self, count: int, dtype: str, nodata: float | None) -> dict:
        profile = dict(driver="GTiff", width=self.width, height=self.height, count=count, dtype=dtype,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
                       transform=self.transform, nodata=nodata)
        if self.crs is not None:
            profile["crs"] = self.crs
        return profile

    def finalise(self, classes_path: str | Path | None = None, probs_path: str | Path | None = None,
                 probs_dtype: str = "uint8", nodata: int = 255, block: int = 1024) -> None:
        """Write the argmax class map (uint8, ``nodata`` where uncovered) and/or probabilities.

        ``probs_dtype`` "uint8" stores round(p * 255) (compact), "float32" stores p.
        Plain tiled GeoTIFFs; make COGs from them with ``tiles.cog.write_cog``. When writing fails,
        the files it began are removed (a half-written class map looks like a finished one).
        """
        self._check_open()
        if probs_dtype not in ("uint8", "float32"):  # int16 wrote zeros; float16 failed after the class map began
            raise ValueError(f"probs_dtype must be 'uint8' or 'float32', got {probs_dtype!r}")
        if classes_path and not self.n_classes <= nodata <= 255:
            raise ValueError(f"nodata {nodata} must be a uint8 value that is not a class index (0..{self.n_classes - 1})")
        self._sum.flush()
        self._weight.flush()
        begun: list[Path] = []
        datasets = []
        try:
            cls_ds = prob_ds = None
            if classes_path:
                begun.append(Path(classes_path))
                cls_ds = rasterio.open(classes_path, "w", **self._profile(1, "uint8", nodata))
                datasets.append(cls_ds)
            if probs_path:
                begun.append(Path(probs_path))
                prob_ds = rasterio.open(probs_path, "w", **self._profile(self.n_classes, probs_dtype, None))
                datasets.append(prob_ds)
            for tile in tile_grid(self.width, self.height, block, 0):
                win = tile.core
                probs, covered = self.read(win)
                if cls_ds is not None:
                    classes = np.argmax(probs, axis=0).astype(np.uint8)
                    classes[~covered] = nodata
                    cls_ds.write(classes, 1, window=win)
                if prob_ds is not None:
                    probs[:, ~covered] = 0.0
                    out = np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8) if probs_dtype == "uint8" else probs
                    prob_ds.write(out.astype(probs_dtype, copy=False), window=win)
            for ds in datasets:
                ds.close()
        except BaseException:
            for ds in datasets:
                ds.close()
            for path in begun:
                path.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Delete the temporary accumulators; the writer cannot be used afterwards."""
        for name in ("_sum", "_weight"):
            if hasattr(self, name):
                delattr(self, name)
        self._remove_dir()

    def _check_open(self) -> None:
        if not hasattr(self, "_sum"):  # was: AttributeError: 'BlendingWriter' object has no attribute '_sum'
            raise ValueError("this BlendingWriter is closed (its accumulators were deleted): make a new one")

    def __enter__(self) -> "BlendingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _window_text(window: Window) -> str:
    return (f"window (col {window.col_off}, row {window.row_off}, "
            f"{window.width} x {window.height} px)")
