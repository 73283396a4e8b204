"""Benchmarks of `geoseg predict`: whole-pipeline speed, vectorisation vs rasterio, peak memory.

    .venv/bin/python bench/predict.py                      # all three, CPU
    .venv/bin/python bench/predict.py --what speed --device cuda
    .venv/bin/python bench/predict.py --what speed --profiles fast --buildings-model DIR   # shipped vs DIR
    .venv/bin/python bench/predict.py --what vector --vector-size 10000   # 100 Mpx mask
    .venv/bin/python bench/predict.py --what memory
    .venv/bin/python bench/predict.py --what pairs --toggle classmap-thread --profiles fast --pairs 5
    .venv/bin/python bench/predict.py --what pairs --toggle int8 --profiles accurate
    .venv/bin/python bench/predict.py --what seams   # shipped models of --profiles, 256 vs 1024 px tiles
    .venv/bin/python bench/predict.py --what seams --profiles accurate --buildings-model DIR --scene A.tif B.tif

speed   : predict_scene on a 0.3 m scene (both heads + GCN + vectorisation), Mpx/s of input,
          for the 'accurate' and (when students ship) 'fast' profiles side by side: a lone
          scene (models loaded) and the next scene of a batch (models already in memory).
vector  : the same synthetic building mask (rectangles, touching rows of houses, 3 classes)
          through ``rasterio.features.shapes`` (binary mask, mask= given, the peers' way) and
          through ``geoseg.vectorize`` (separating, simplifying, merging across strips) with 1
          and 2 threads; median and range of paired runs (``--vector-repeats``).
pairs   : paired runs with a pipeline switch off and on (``--toggle classmap-thread``: the class
          map after vs beside the building model; ``ort-spinning``: ONNX Runtime's busy-waiting; ``ort-arena``: its CPU memory arena;
          ``int8``: ``--runtime onnx`` vs ``--runtime int8``).
memory  : peak RSS of predict_scene in a fresh process, 1 Mpx scene vs zanzibar_z21_1 (33.5 Mpx at 0.075 m: 2.1 Mpx of work at
          0.3 m, so how memory follows a finer input, not a larger area).
seams   : building masks of each --scene from 256 and 1024 px tiles (``--tile-sizes``: any, pairwise),
          per profile: IoU (goal >= 0.95 for 256 vs 1024);
          ``--buildings-model`` checks a candidate card or folder instead of the shipped model.
classmap-seams : the same for the land-cover class map (``--no-buildings``): the share of valid pixels
          given the same class by each pair of tile sizes (``--gsd 1.1`` for the Dubai JPEGs).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geoseg.paths import data_root  # noqa: E402


def warm_up(opts, out: Path) -> float:
    """One small scene with ``opts`` (model load, ONNX export if not cached, first-call costs); seconds."""
    from geoseg.pipeline import predict_scene

    t = time.perf_counter()
    predict_scene(data_root() / "buildings" / "kampala" / "kampala_z19_2.tif", out, opts)
    return time.perf_counter() - t


def mpx(report: dict) -> float:
    """Input megapixels of a predict report."""
    return report["grid"]["width"] * report["grid"]["height"] / 1e6


def bench_speed(scene: Path, device: str, profiles: list[str], threads: int, model: Path | None = None) -> None:
    """Each profile with its shipped models and, given ``model``, the same profile with that building
    model instead, in the same process (the box's speed drifts: compare within one run)."""
    import torch

    from geoseg import heads
    from geoseg.card import default_card_path
    from geoseg.pipeline import PredictOptions, predict_scene

    torch.set_num_threads(threads)
    print(f"== whole pipeline on {scene.name} (device {device}, {threads} threads)")
    runs = [(profile, candidate) for profile in profiles for candidate in ([None, model] if model else [None])]
    for profile, candidate in runs:
        if profile == "fast" and not default_card_path("buildings", "fast").is_file():
            print("fast: no student shipped (geoseg/weights/*-fast.json): skipped")
            continue
        if candidate is not None:
            print(f"{profile:9s}: buildings model {candidate}")
        with tempfile.TemporaryDirectory() as out:
            opts = PredictOptions(device=device, profile=profile,
                                  model_dirs={"buildings": str(candidate)} if candidate else {})
            print(f"{profile:9s}: warm-up (model load, ONNX export if not cached) {warm_up(opts, Path(out)):.1f} s")
            # a lone scene loads its models; the next scene of a batch (or a service job on the
            # preloaded standby worker) finds them in memory
            for label in ("lone scene", "next scene"):
                if label == "lone scene":
                    heads.forget_heads()
                t = time.perf_counter()
                report = predict_scene(scene, Path(out), opts)
                wall = time.perf_counter() - t
                stages = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings_s"].items() if k != "total")
                refine = "GCN" if "gcn" in report["models"] else "no GCN"
                print(f"{profile:9s}: {label}: {mpx(report):.2f} Mpx in {wall:.2f} s = {mpx(report) / wall:.3f} Mpx/s "
                      f"({refine}; {report['counts'].get('buildings', 0)} buildings; {stages})")


#: --what pairs --toggle NAME: a module switch measured off vs on in alternating runs
TOGGLES = {"classmap-thread": ("geoseg.pipeline", "OVERLAP_CLASSMAP"),  # class map beside the building model
           "ort-spinning": ("geoseg.infer", "ORT_SPINNING"),  # ONNX Runtime workers busy-wait between runs
           "ort-arena": ("geoseg.infer", "ORT_ARENA"),  # ONNX Runtime keeps the buffers it grew for reuse
           "int8": ("options", "runtime")}  # PredictOptions.runtime 'onnx' (off) vs 'int8' (on)


def bench_pairs(scene: Path, device: str, profiles: list[str], threads: int, pairs: int, toggle: str) -> None:
    """Paired runs in one process with a pipeline switch off and on (models loaded once)."""
    import importlib
    import statistics

    import torch

    from geoseg.pipeline import PredictOptions, predict_scene

    module_name, attr = TOGGLES[toggle]
    runtime_toggle = module_name == "options"
    module = None if runtime_toggle else importlib.import_module(module_name)
    default = "auto" if runtime_toggle else getattr(module, attr)
    torch.set_num_threads(threads)
    print(f"== {toggle} ({module_name}.{attr}, default {default}) off vs on, {scene.name}, {pairs} alternating pairs")
    for profile in profiles:
        opts = PredictOptions(device=device, profile=profile)
        rates: dict[bool, list[float]] = {False: [], True: []}
        with tempfile.TemporaryDirectory() as out:
            warm_up(opts, Path(out))
            try:
                for _ in range(pairs):
                    for on in (False, True):
                        if runtime_toggle:
                            opts = replace(opts, runtime="int8" if on else "onnx")
                            if not rates[on]:
                                warm_up(opts, Path(out))  # first-call costs of this runtime's graph
                        else:
                            setattr(module, attr, on)
                        t = time.perf_counter()
                        report = predict_scene(scene, Path(out), opts)
                        rates[on].append(mpx(report) / (time.perf_counter() - t))
            finally:
                if module is not None:
                    setattr(module, attr, default)
        for on in (False, True):
            r = rates[on]
            print(f"{profile:9s}: {'on ' if on else 'off'} median {statistics.median(r):.3f} Mpx/s "
                  f"[{min(r):.3f}-{max(r):.3f}]")


def synthetic_classes(size: int, seed: int = 0) -> np.ndarray:
    """0/1/2 raster of ~size^2/5000 buildings: rectangles with 2 px outlines, some in touching rows."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    n = size * size // 5000
    ys = rng.integers(0, size - 80, n)
    xs = rng.integers(0, size - 80, n)
    hw = rng.integers(8, 30, (n, 2))
    row = rng.random(n) < 0.2  # a fifth are a terrace of 3 houses sharing walls
    for y, x, (h, w), terrace in zip(ys, xs, hw, row):
        for k in range(3 if terrace else 1):
            x0 = x + k * w
            classes[y:y + h, x0:x0 + w] = 2
            classes[y + 2:y + h - 2, x0 + 2:x0 + w - 2] = 1
    return classes


def bench_vector(size: int, repeats: int = 5, workers: tuple[int, ...] = (1, 2)) -> None:
    """Paired, alternating runs on one mask: the machine is shared, so ratios are taken run by run."""
    import os

    from rasterio import features

    from geoseg.vectorize import VectorizeOptions, vectorize_strips

    classes = synthetic_classes(size)
    mask = (classes > 0).astype(np.uint8)
    print(f"== vectorisation of a {size}x{size} ({size * size / 1e6:.0f} Mpx) mask, "
          f"{mask.mean():.1%} building pixels; {repeats} alternating runs, median [min-max]; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    runs: dict[str, list[float]] = {"shapes": [], "solaris": [], **{f"ours{w}": [] for w in workers}}
    found = {}
    for _ in range(repeats):
        t = time.perf_counter()
        n_shapes = sum(1 for _ in features.shapes(mask, mask=mask > 0))
        runs["shapes"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_solaris = len(solaris_style(mask))
        runs["solaris"].append(time.perf_counter() - t)
        for w in workers:
            t = time.perf_counter()
            found[w] = vectorize_strips(lambda a, b: (classes[a:b], None), size,
                                        VectorizeOptions(min_area_px=4, simplify_px=0.5, workers=w))
            runs[f"ours{w}"].append(time.perf_counter() - t)

    def spread(values) -> str:
        return f"{np.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

    print(f"rasterio.features.shapes alone   : {spread(runs['shapes'])} s, {n_shapes} polygons "
          "(touching houses merged)")
    print(f"solaris-style (shapes + shapely) : {spread(runs['solaris'])} s, {n_solaris} polygons "
          "(buffer(0), min area, simplify)")
    shapes = np.asarray(runs["shapes"])
    for w in workers:
        ours = np.asarray(runs[f"ours{w}"])
        print(f"geoseg.vectorize, {w} thread{'s' if w > 1 else ' '}   : {spread(ours)} s, {len(found[w])} polygons "
              f"(separated, simplified, merged); ratio to shapes alone {spread(ours / shapes)}x, "
              f"to solaris-style {spread(ours / np.asarray(runs['solaris']))}x")


def solaris_style(mask: np.ndarray) -> list:
    """What solaris' mask_to_poly_geojson does: shapes -> shapely, buffer(0), min area, simplify."""
    import shapely
    from rasterio import features

    polys = [shapely.geometry.shape(g).buffer(0) for g, _ in features.shapes(mask, mask=mask > 0)]
    return [p.simplify(0.5) for p in polys if p.area >= 4]


def peak_rss_mb(scene: Path, device: str, profile: str = "accurate") -> float:
    code = (
        "import sys, tempfile, torch; torch.set_num_threads(2)\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from geoseg.pipeline import PredictOptions, predict_scene\n"
        "with tempfile.TemporaryDirectory() as out:\n"
        f"    predict_scene(Path({str(scene)!r}), Path(out), PredictOptions(device={device!r}, profile={profile!r}))\n"
        # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec,
        # so after --what speed ran in this process every child would report at least its size
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def bench_memory(device: str, profiles: list[str]) -> None:
    small = data_root() / "buildings" / "nairobi" / "nairobi_z19_1.tif"  # 1024 x 1024
    big = data_root() / "buildings" / "zanzibar" / "zanzibar_z21_1.tif"  # 8192 x 4096
    print("== peak RSS of predict_scene in a fresh process")
    for profile in profiles:
        a = peak_rss_mb(small, device, profile)
        b = peak_rss_mb(big, device, profile)
        print(f"{profile:9s}: {small.name} (1.0 Mpx) {a:.0f} MB; {big.name} (33.5 Mpx, 2.1 at 0.3 m) {b:.0f} MB -> ratio {b / a:.2f}x")


def bench_seams(scene: Path, device: str, profiles: list[str], model: Path | None = None,
                sizes: tuple[int, ...] = (256, 1024)) -> None:
    """Building masks from each of ``sizes`` px tiles (default 256 and 1024) with each profile's shipped
    model (or ``model``): IoU of every pair (goal >= 0.95 for 256 vs 1024)."""
    import itertools

    import rasterio
    from rasterio import features

    import geopandas as gpd
    from geoseg.pipeline import PredictOptions, predict_scene

    with rasterio.open(scene) as src:
        transform, shape = src.transform, (src.height, src.width)
    for profile in profiles:
        masks = {}
        for size in sizes:
            with tempfile.TemporaryDirectory() as out:
                predict_scene(scene, Path(out), PredictOptions(
                    device=device, tile_size=size, classmap=False, profile=profile,
                    model_dirs={"buildings": str(model)} if model else {}))
                frame = gpd.read_file(Path(out) / "buildings.gpkg")
            masks[size] = features.rasterize(((g, 1) for g in frame.geometry), out_shape=shape,
                                             transform=transform) > 0 if len(frame) else np.zeros(shape, bool)
        which = f"{profile}, {model}" if model else profile
        for s, t in itertools.combinations(sizes, 2):
            a, b = masks[s], masks[t]
            union = (a | b).sum()
            print(f"== tile-size independence on {scene.name}, {which}: building masks {s} vs {t} px tiles IoU "
                  f"{(a & b).sum() / union if union else 1.0:.4f} (building share {a.mean():.3f})")


def bench_classmap_seams(scene: Path, device: str, profiles: list[str], sizes: tuple[int, ...] = (256, 1024),
                         gsd: float | None = None) -> None:
    """Class maps from each of ``sizes`` px tiles: share of valid pixels with the same class, per pair."""
    import itertools

    import rasterio

    from geoseg.pipeline import PredictOptions, predict_scene

    for profile in profiles:
        maps = {}
        for size in sizes:
            with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the not-georeferenced note of a JPEG
                predict_scene(scene, Path(out), PredictOptions(device=device, tile_size=size, buildings=False,
                                                               profile=profile, gsd=gsd))
                with rasterio.open(Path(out) / "classmap.tif") as cm:
                    maps[size] = cm.read(1)
        valid = maps[sizes[-1]] > 0
        for s, t in itertools.combinations(sizes, 2):
            same = float(np.mean(maps[s][valid] == maps[t][valid])) if valid.any() else 1.0
            print(f"== class-map tile-size independence on {scene.name}, {profile}: {s} vs {t} px tiles, "
                  f"same class on {same:.4f} of valid pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", default="speed,vector,memory")
    parser.add_argument("--scene", type=Path, nargs="+",
                        default=[data_root() / "buildings" / "zanzibar" / "zanzibar_z19_1.tif"],
                        help="scene(s): speed and pairs use the first, seams every one")
    parser.add_argument("--buildings-model", type=Path, default=None,
                        help="with --what seams: this building model card or folder instead of the shipped one; "
                             "with --what speed: timed after the shipped one, in the same run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profiles", default="accurate,fast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vector-size", type=int, default=10000)
    parser.add_argument("--vector-repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3, help="with --what pairs")
    parser.add_argument("--tile-sizes", default="256,1024",
                        help="with --what seams: tile sizes compared pairwise (e.g. 256,512,1024)")
    parser.add_argument("--gsd", type=float, default=None, help="with --what classmap-seams: PredictOptions.gsd "
                        "(1.1 for the Dubai JPEGs, which carry no georeferencing)")
    parser.add_argument("--toggle", choices=sorted(TOGGLES), default="classmap-thread", help="with --what pairs")
    args = parser.parse_args()
    what = set(args.what.split(","))
    if "speed" in what:
        bench_speed(args.scene[0], args.device, args.profiles.split(","), args.threads, args.buildings_model)
    if "pairs" in what:
        bench_pairs(args.scene[0], args.device, args.profiles.split(","), args.threads, args.pairs, args.toggle)
    if "vector" in what:
        bench_vector(args.vector_size, args.vector_repeats)
    if "seams" in what:
        for scene in args.scene:
            bench_seams(scene, args.device, args.profiles.split(","), args.buildings_model,
                        tuple(int(v) for v in args.tile_sizes.split(",")))
    if "classmap-seams" in what:
        for scene in args.scene:
            bench_classmap_seams(scene, args.device, args.profiles.split(","),
                                 tuple(int(v) for v in args.tile_sizes.split(",")), args.gsd)
    if "memory" in what:
        bench_memory(args.device, args.profiles.split(","))


if __name__ == "__main__":
    main()
