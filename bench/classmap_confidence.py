"""Does the class map's own confidence tell Dubai (in domain) from other imagery? docs/models.md,
"Class-map confidence", quotes this.

    .venv/bin/python bench/classmap_confidence.py --profiles fast,accurate --out /tmp/conf.json

``predict_scene --no-buildings`` (default options otherwise: ``--refine gcn``; ``--refine none``
with ``--refine none``) on the 9 Dubai tile-5 images (validation: where a threshold may be chosen),
the 9 tile-6 images (test: report only) and the 18 building scenes of Zanzibar, Nairobi and
Kampala (off domain), with two other unlabelled off-domain rasters (``other``: Zürich's
SWISSIMAGE tile and rasterio's winter valley in South Korea, docs/models.md "Other continents"),
and prints report.json's ``classmap_confidence`` per scene, then per set the range of ``mean_max_probability``.
Minutes on the 2-core CPU box; not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geoseg.paths import data_root  # noqa: E402
from geoseg.pipeline import PredictOptions, predict_scene  # noqa: E402


def scene_sets(root: Path) -> dict[str, list[Path]]:
    """The in-domain validation and test images, and the off-domain building scenes."""
    dubai = Path(root, "landcover", "dubai")
    return {
        "dubai tile 5 (val)": sorted((dubai / "tile_5").glob("image_part_*.jpg")),
        "dubai tile 6 (test)": sorted((dubai / "tile_6").glob("image_part_*.jpg")),
        "buildings (off domain)": sorted(Path(root, "buildings").glob("*/*.tif")),
        "other (off domain)": [Path(root, "rasters", "detectree_swissimage", "big_img", "1091-322_00.tif"),
                               Path(root, "rasters", "rasterio", "cogeo.tif")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", default="fast,accurate")
    parser.add_argument("--refine", default="gcn")
    parser.add_argument("--sets", default="val,test,buildings,other",
                        help="which of the sets (val, test, buildings, other) to run")
    parser.add_argument("--out", type=Path, help="JSON of every row")
    args = parser.parse_args()
    keys = dict(zip(("val", "test", "buildings", "other"), scene_sets(data_root())))
    chosen = {keys[k]: scene_sets(data_root())[keys[k]] for k in args.sets.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for profile in args.profiles.split(","):
            options = PredictOptions(buildings=False, profile=profile, refine=args.refine, device="cpu")
            for set_name, scenes in chosen.items():
                for scene in scenes:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        report = predict_scene(scene, Path(tmp) / profile / scene.parent.name / scene.stem, options,
                                               warn_notes=False)
                    conf = report["classmap_confidence"]
                    counts = {c: n for c, n in report["counts"]["classmap_pixels"].items() if c != "nodata"}
                    top = max(counts, key=counts.get)
                    row = {"profile": profile, "refine": args.refine, "set": set_name,
                           "scene": f"{scene.parent.name}/{scene.name}", **conf,
                           "top_class": top, "top_class_share": round(counts[top] / max(1, sum(counts.values())), 3),
                           "uncertain_note": any("uncertain" in w for w in report["warnings"])}
                    rows.append(row)
                    print(f"{profile:8s} {set_name:24s} {row['scene']:32s} mean {conf['mean_max_probability']:.4f} "
                          f"low {conf['low_confidence_share']:.4f} {top} {row['top_class_share']:.0%}", flush=True)
    print()
    for profile in args.profiles.split(","):
        for set_name in chosen:
            means = [r["mean_max_probability"] for r in rows if r["profile"] == profile and r["set"] == set_name]
            lows = [r["low_confidence_share"] for r in rows if r["profile"] == profile and r["set"] == set_name]
            print(f"{profile:8s} {set_name:24s} n={len(means):2d} mean_max_probability {min(means):.3f}-{max(means):.3f} "
                  f"low_confidence_share {min(lows):.3f}-{max(lows):.3f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
