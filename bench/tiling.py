"""Tiling throughput vs a plain rasterio block-by-block read of the same file, and peak RSS.

Each measurement runs in its own fresh process (so peak RSS is its own) and the modes
alternate, repeated ``--repeats`` times; the best time of each mode is reported.

    .venv/bin/python bench/tiling.py [SCENE] [--size 512] [--overlap 64] [--repeats 3]

Throughput is the scene's decoded pixel data (width x height x 3 bytes) per second,
so the tiler's overlap re-reads count against it. A second table shows peak RSS of the
tiler on the same area at three zooms (4x and 16x the pixels) — it should stay flat.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("GDAL_CACHEMAX", "64")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def plain_read(path: str, *_args) -> dict:
    """Every internal block read once with rasterio (the I/O + decode limit)."""
    import rasterio

    t0 = time.perf_counter()
    n = 0
    with rasterio.open(path) as ds:
        for _, window in ds.block_windows(1):
            ds.read(window=window)
            n += 1
        w, h = ds.width, ds.height
    return {"seconds": time.perf_counter() - t0, "units": n, "width": w, "height": h, "rss_mb": _peak_rss_mb()}


def tiled_read(path: str, size: int, overlap: int) -> dict:
    """Scene.read over the tile grid: uint8 RGB + validity mask per tile."""
    from tiles.grid import tile_grid
    from tiles.source import Scene

    t0 = time.perf_counter()
    n = 0
    with Scene(path) as scene:
        for tile in tile_grid(scene.width, scene.height, size, overlap):
            scene.read(tile.read)
            n += 1
        w, h = scene.width, scene.height
    return {"seconds": time.perf_counter() - t0, "units": n, "width": w, "height": h, "rss_mb": _peak_rss_mb()}


def _child(fn, args, queue) -> None:
    queue.put(fn(*args))


def in_fresh_process(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    default = repo.parent / "shared/data/buildings/zanzibar/zanzibar_z21_1.tif"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", nargs="?", default=str(default))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, fn in (("plain block read", plain_read), ("tiles.Scene grid", tiled_read)):
            r = in_fresh_process(fn, args.scene, args.size, args.overlap)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    file_mb = Path(args.scene).stat().st_size / 1e6
    print(f"scene {Path(args.scene).name}: {best['plain block read']['width']}x{best['plain block read']['height']}"
          f" px, {file_mb:.1f} MB on disk; tiles {args.size} px, overlap {args.overlap}; GDAL_CACHEMAX="
          f"{os.environ['GDAL_CACHEMAX']} MB; best of {args.repeats}")
    print(f"{'mode':<18} {'s':>7} {'units/s':>9} {'MB/s (decoded)':>15} {'peak RSS MB':>12}")
    for name, r in best.items():
        mb = r["width"] * r["height"] * 3 / 1e6
        unit = "blocks" if name.startswith("plain") else "chips"
        print(f"{name:<18} {r['seconds']:7.2f} {r['units'] / r['seconds']:8.1f}{unit[0]} {mb / r['seconds']:15.1f}"
              f" {r['rss_mb']:12.0f}")
    ratio = best["plain block read"]["seconds"] / best["tiles.Scene grid"]["seconds"]
    print(f"tiler / plain throughput: {ratio:.2f} (goal >= 0.70)")

    scene = Path(args.scene)
    zooms = sorted(scene.parent.glob(scene.name.replace("_z21_", "_z*_")))
    if len(zooms) > 1:
        print("peak RSS of the tiler by scene size (same ground, three zooms):")
        for z in zooms:
            r = in_fresh_process(tiled_read, str(z), args.size, args.overlap)
            print(f"  {z.name:<22} {r['width'] * r['height'] / 1e6:6.1f} Mpx  {r['rss_mb']:6.0f} MB")


if __name__ == "__main__":
    main()
