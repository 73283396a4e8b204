"""How the building pipeline holds up when the same ground is delivered the way other sources deliver it.

    .venv/bin/python bench/robustness.py                                   # validation: nairobi_z19_2, both profiles
    .venv/bin/python bench/robustness.py --scenes kampala_z19_1,kampala_z19_2   # the test area, for the record only
    .venv/bin/python bench/robustness.py --profiles fast --shifts gsd0.5,uint16 --keep /tmp/me/shifted
    .venv/bin/python bench/robustness.py --profiles fast --shifts gsd1.0 --buildings-model CANDIDATE_DIR

Each shift is a plain transform of a real scene (GDAL/rasterio/numpy, georeferencing kept correct),
written as a new GeoTIFF under a temp dir (or ``--keep``):

  crop16          a control: the first 16 rows and columns cut off, pixels and georeferencing untouched;
                  only the 32 px tile grid meets other pixels (the models are not shift-invariant), so
                  its differences are the noise floor of the others
  gsd0.5, gsd1.0  the 0.3 m scene resampled (GDAL ``average``) to 0.5 m / 1.0 m: a coarser sensor
  z20             the z20 scene of the same block as delivered (0.15 m): a finer one
  uint16          uint16, values x 257 (0..65535), same mask
  12bit           uint16, values x 16 (0..4080), nodata=0 (masked pixels 0; no internal mask)
  uint16+7        uint16, values x 257 + 7: no longer 8-bit values in a wider type, so stretched
  linear12        uint16, a sensor's linear 12-bit values: round(4095 (x / 255)^2.2), the rendering's
                  gamma undone; stretched (uint16, 12bit and float01 are 8-bit data the reader
                  scales back exactly)
  jpeg40          uint8 JPEG-compressed GeoTIFF, quality 40 (YCbCr), same mask
  haze            uint8, 0.7 x + 40: darker contrast, lifted blacks (haze)
  bgr             bands stored blue, green, red without colour labels (grey, undefined, undefined),
                  as many 4-band satellite products order them (B, G, R, NIR)
  bgr+bands       the bgr copy predicted with ``--bands 3,2,1`` (what a user of such a product passes)
  rgba            RGBA: alpha 0 on a triangle over the top-left corner (18 % of the scene; RGB 0 there)
  float01         float32, values / 255 (0..1), NaN as nodata on a triangle over the bottom-right corner
  epsg4326        reprojected (bilinear) to EPSG:4326 at about the same GSD
  utm             reprojected (bilinear) to the scene's own UTM zone (square metres, ~0.3 m)
  utm-next        reprojected (bilinear) to the next UTM zone west (the grid turned by convergence)
  tm-feet         reprojected (bilinear) to a transverse Mercator in US survey feet on the scene
                  (State Plane style): ~0.98 ft pixels

Each copy goes through ``predict_scene`` (no class map), as ``bench/accuracy.py`` runs it, and is
scored by ``geoseg.evaluate.evaluate_buildings`` on its own grid and valid mask (what a user's
``geoseg eval`` would say). Beside it, the unshifted scene's prediction is scored on that same grid
and mask ("base"), so the difference is what the delivery did to the prediction, not to the metric
(a label rasterised on a 1 m grid scores differently from one on a 0.3 m grid). Columns: input GSD
as report.json gives it, predicted buildings, their total ``area_m2`` (GeoJSON), pixel IoU, polygon
F1, base pixel IoU / polygon F1 on the same grid, and the differences.

Data rules: Nairobi block 2 is the validation block (the default); Kampala is the test area (run
it for the record, never to choose a rule). Zanzibar block 2 was in the shipped models' training.
About 2 minutes on the 2-core CPU box for nairobi_z19_2 with both profiles; not part of the tests.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from accuracy import predict_buildings, score_buildings  # noqa: E402
from geoseg.paths import data_root  # noqa: E402
from tiles.gsd import dataset_gsd_m  # noqa: E402


def _profile(src, **changes) -> dict:
    """A tiled GeoTIFF profile from ``src``'s, with ``changes``."""
    profile = src.profile.copy()
    for key in ("photometric", "jpeg_quality", "blockxsize", "blockysize", "interleave", "nodata", "compress"):
        profile.pop(key, None)
    profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    profile.update(changes)
    return profile


def _write(path: Path, profile: dict, data: np.ndarray, mask: np.ndarray | None,
           colorinterp: tuple | None = None) -> None:
    """``data`` into a GeoTIFF; ``mask`` (bool, valid) as its internal per-dataset mask."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
        if mask is not None and not mask.all():
            dst.write_mask(mask.astype(np.uint8) * 255)


def _read(src) -> tuple[np.ndarray, np.ndarray]:
    return src.read([1, 2, 3]), src.dataset_mask() > 0


def _warp(src, path: Path, crs, transform: Affine, width: int, height: int, resampling: Resampling) -> None:
    """``gdalwarp``: ``src`` onto a grid, with GDAL's alpha as the output's mask (nothing outside it)."""
    with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height, resampling=resampling,
                   add_alpha=True) as vrt:
        data = vrt.read([1, 2, 3])
        alpha = vrt.read(vrt.count)
    valid = alpha > 0
    _write(path, _profile(src, crs=crs, transform=transform, width=width, height=height, count=3,
                          photometric="RGB"), data * valid, valid)


def resample(gsd: float) -> Callable:
    def make(src, path: Path) -> None:
        factor = gsd / dataset_gsd_m(src)
        t = src.transform
        transform = Affine(t.a * factor, 0.0, t.c, 0.0, t.e * factor, t.f)
        width, height = math.ceil(src.width / factor - 1e-9), math.ceil(src.height / factor - 1e-9)
        _warp(src, path, src.crs, transform, width, height, Resampling.average)
    return make


def reproject(crs_of: Callable) -> Callable:
    def make(src, path: Path) -> None:
        crs = crs_of(src)
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        _warp(src, path, crs, transform, width, height, Resampling.bilinear)
    return make


def _utm(src, offset: int = 0):
    with WarpedVRT(src, crs="EPSG:4326") as vrt:
        lon, lat = vrt.xy(vrt.height // 2, vrt.width // 2)
    zone = int((lon + 180) // 6) + 1 + offset
    return rasterio.crs.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _tm_feet(src):
    """A transverse Mercator in US survey feet centred on the scene (as US county orthophotos come in
    State Plane feet)."""
    with WarpedVRT(src, crs="EPSG:4326") as vrt:
        lon, lat = vrt.xy(vrt.height // 2, vrt.width // 2)
    return rasterio.crs.CRS.from_proj4(f"+proj=tmerc +lat_0={lat:.4f} +lon_0={lon:.4f} +k=0.9999 "
                                       "+x_0=600000 +y_0=0 +ellps=GRS80 +units=us-ft +no_defs")


def as_uint16(factor: int, nodata_zero: bool, offset: int = 0) -> Callable:
    def make(src, path: Path) -> None:
        data, valid = _read(src)
        data = data.astype(np.uint16) * factor + offset
        if nodata_zero:  # no mask: nodata=0 says it, as many 12-bit deliveries do
            _write(path, _profile(src, dtype="uint16", nodata=0, photometric="RGB"), data * valid, None)
        else:
            _write(path, _profile(src, dtype="uint16", photometric="RGB"), data, valid)
    return make


def linear12(src, path: Path) -> None:
    """A sensor's linear 12-bit values: the 8-bit rendering's gamma undone (2.2), 0..4095."""
    data, valid = _read(src)
    linear = np.rint(4095.0 * (data.astype(np.float64) / 255.0) ** 2.2).astype(np.uint16)
    _write(path, _profile(src, dtype="uint16", photometric="RGB"), linear, valid)


def jpeg(quality: int) -> Callable:
    def make(src, path: Path) -> None:
        data, valid = _read(src)
        _write(path, _profile(src, compress="jpeg", jpeg_quality=quality, photometric="YCbCr"), data, valid)
    return make


def bgr(src, path: Path) -> None:
    data, valid = _read(src)
    _write(path, _profile(src, photometric="MINISBLACK"), data[::-1].copy(), valid,
           (ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined))


def haze(src, path: Path) -> None:
    data, valid = _read(src)
    hazy = np.clip(np.rint(0.7 * data.astype(np.float32) + 40), 0, 255).astype(np.uint8)
    _write(path, _profile(src, photometric="RGB"), hazy, valid)


def _triangle(height: int, width: int, corner: str) -> np.ndarray:
    """True on a right triangle over one corner: x/W + y/H < 0.6 (18 % of the scene)."""
    y, x = np.mgrid[0:height, 0:width]
    u, v = (x + 0.5) / width, (y + 0.5) / height
    if corner == "bottom-right":
        u, v = 1 - u, 1 - v
    return u + v < 0.6


def rgba(src, path: Path) -> None:
    data, valid = _read(src)
    alpha = valid & ~_triangle(src.height, src.width, "top-left")
    _write(path, _profile(src, count=4, photometric="RGB", alpha="YES"),
           np.concatenate([data * alpha, alpha[None].astype(np.uint8) * 255]), None,
           (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha))


def float01(src, path: Path) -> None:
    data, valid = _read(src)
    valid = valid & ~_triangle(src.height, src.width, "bottom-right")
    scaled = np.where(valid, data.astype(np.float32) / 255.0, np.float32(np.nan)).astype(np.float32)
    _write(path, _profile(src, dtype="float32", nodata=float("nan"), photometric="RGB", predictor=3), scaled, None)


def crop(pixels: int) -> Callable:
    def make(src, path: Path) -> None:
        window = Window(pixels, pixels, src.width - pixels, src.height - pixels)
        data, valid = src.read([1, 2, 3], window=window), src.dataset_mask(window=window) > 0
        _write(path, _profile(src, width=int(window.width), height=int(window.height), photometric="RGB",
                              transform=src.window_transform(window)), data, valid)
    return make


#: shift -> the ``--bands`` its copy is predicted with (others: the raster's own choice)
SHIFT_BANDS: dict[str, tuple[int, int, int]] = {"bgr+bands": (3, 2, 1)}

#: name -> (what it is, how it is made from an open source dataset into a path); "z20" is the file itself
SHIFTS: dict[str, tuple[str, Callable | None]] = {
    "crop16": ("control: the first 16 rows and columns cut off, pixels untouched", crop(16)),
    "gsd0.5": ("resampled (average) to 0.5 m", resample(0.5)),
    "gsd1.0": ("resampled (average) to 1.0 m", resample(1.0)),
    "z20": ("the z20 scene of the block, 0.15 m, as delivered", None),
    "uint16": ("uint16, x 257", as_uint16(257, nodata_zero=False)),
    "12bit": ("uint16, x 16, nodata=0", as_uint16(16, nodata_zero=True)),
    "uint16+7": ("uint16, x 257 + 7", as_uint16(257, nodata_zero=False, offset=7)),
    "linear12": ("uint16, linear 12-bit: 4095 (x / 255)^2.2", linear12),
    "jpeg40": ("JPEG quality 40", jpeg(40)),
    "haze": ("0.7 x + 40", haze),
    "bgr": ("bands in B, G, R order, not labelled", bgr),
    "bgr+bands": ("the bgr copy read with --bands 3,2,1", bgr),
    "rgba": ("RGBA, alpha 0 on 18 %", rgba),
    "float01": ("float32 / 255, NaN nodata on 18 %", float01),
    "epsg4326": ("reprojected to EPSG:4326", reproject(lambda src: "EPSG:4326")),
    "utm": ("reprojected to its UTM zone", reproject(_utm)),
    "utm-next": ("reprojected to the next UTM zone west", reproject(lambda src: _utm(src, -1))),
    "tm-feet": ("reprojected to a transverse Mercator in US survey feet", reproject(_tm_feet)),
}


def make_shift(name: str, scene: Path, folder: Path) -> Path:
    """The shifted copy of ``scene`` (``z20``: the block's z20 scene itself)."""
    if name == "z20":
        return scene.with_name(scene.name.replace("_z19_", "_z20_"))
    path = folder / f"{scene.stem}.{name}.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(scene) as src:
            SHIFTS[name][1](src, path)
    return path


def _scored_on(pred_dir: Path, grid: Path, labels: Path, work: Path) -> tuple[float, float]:
    """Scores of ``pred_dir``'s buildings on ``grid``'s pixels and valid mask (``evaluate_buildings``
    reads the grid from the report's input: a folder with the same polygons and that input)."""
    folder = Path(tempfile.mkdtemp(dir=work))
    (folder / "buildings.gpkg").symlink_to(pred_dir / "buildings.gpkg")
    (folder / "report.json").write_text(json.dumps({"input": str(grid)}))
    return score_buildings(folder, labels)


def _area(pred_dir: Path) -> float:
    with open(pred_dir / "buildings.geojson") as f:
        return sum((feat["properties"]["area_m2"] or 0.0) for feat in json.load(f)["features"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default="nairobi_z19_2", help="z19 scene stems under $GEOSEG_DATA/buildings")
    parser.add_argument("--profiles", default="accurate,fast")
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--keep", type=Path, default=None, help="write the shifted copies and predictions here")
    parser.add_argument("--buildings-model", type=Path, default=None,
                        help="a candidate building model (card or folder) instead of the profile's shipped one")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    shifts = args.shifts.split(",")
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        parser.error(f"unknown shift(s) {unknown}: choose from {', '.join(SHIFTS)}")
    root = data_root() / "buildings"
    work = args.keep or Path(tempfile.mkdtemp(prefix="geoseg-robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    header = ("| scene | shift | profile | input GSD m | buildings | area m² | pixel IoU | polygon F1 "
              "| base IoU / F1 on that grid | Δ IoU | Δ F1 |")
    print(header)
    print("| --- " * (header.count("|") - 1) + "|")
    for stem in args.scenes.split(","):
        scene = root / stem.split("_")[0] / f"{stem}.tif"
        labels = scene.parent / "labels.geojson"
        copies = {name: make_shift(name, scene, work) for name in shifts}
        for profile in args.profiles.split(","):
            base = work / f"{stem}.base.{profile}"
            report = predict_buildings(scene, base, profile, model=args.buildings_model)
            iou, f1 = score_buildings(base, labels)
            print(f"| {stem} | none | {profile} | {report['gsd']['input_m']:.3f} | {report['counts']['buildings']} "
                  f"| {_area(base):.0f} | {iou:.4f} | {f1:.4f} | | | |", flush=True)
            for name, path in copies.items():
                out = work / f"{stem}.{name}.{profile}"
                try:
                    report = predict_buildings(path, out, profile, model=args.buildings_model,
                                               bands=SHIFT_BANDS.get(name))
                except Exception as exc:  # a crash is a finding: say it in the table and go on
                    print(f"| {stem} | {name} | {profile} | | | | FAILED: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]} | | | | |", flush=True)
                    continue
                iou, f1 = score_buildings(out, labels)
                biou, bf1 = _scored_on(base, path, labels, work)
                gsd = report["gsd"]["input_m"]
                print(f"| {stem} | {name} | {profile} | {gsd:.3f} | {report['counts']['buildings']} | {_area(out):.0f} "
                      f"| {iou:.4f} | {f1:.4f} | {biou:.4f} / {bf1:.4f} | {iou - biou:+.4f} | {f1 - bf1:+.4f} |",
                      flush=True)


if __name__ == "__main__":
    main()
