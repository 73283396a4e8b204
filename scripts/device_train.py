"""The GPU job: train every shipped model within one wall-clock budget and save as it goes.

    python3 scripts/device_train.py --chips .chips --out $OUT --budget-s 480
    .venv/bin/python scripts/device_train.py --chips .chips --out /tmp/dry --budget-s 60 --device cpu   # dry run

Phases (fractions of the budget, measured from start): 1 buildings U2-Net (to 38 %),
2 land-cover AttResUNet (to 66 %), 3 superpixel GCN + fusion weight (to 80 %),
4 distillation students (geoseg.training.ablation.device_phase, the rest). Each phase
writes its fp16 weights + model card into --out as soon as it ends, so a timeout keeps
the finished phases; a failing phase is logged and the next one still runs.

Needs only torch, torch-geometric, numpy, scipy, scikit-image, Pillow/OpenCV: no rasterio.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from geoseg.augment import AugmentConfig  # noqa: E402
from geoseg.card import save_model  # noqa: E402
from geoseg.superpixels import GraphParams, n_node_features  # noqa: E402
from geoseg.training.data import first_per_split, load_packed, select  # noqa: E402
from geoseg.training.loop import (  # noqa: E402
    TrainConfig,
    evaluate_buildings,
    evaluate_landcover,
    train_buildings,
    train_landcover,
)

PHASE_END = {"buildings": 0.38, "landcover": 0.66, "gcn": 0.80}
COMMAND = "python3 scripts/device_train.py --chips .chips --out $OUT --budget-s {budget:g}"


class Clock:
    """Wall clock of the whole job; every phase asks it how much time it has."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def until(self, fraction: float) -> float:
        """Seconds left until ``fraction`` of the budget."""
        return self.t0 + fraction * self.budget_s - time.monotonic()

    def left(self) -> float:
        return self.until(1.0)


def make_log(clock: Clock):
    def log(msg: str) -> None:
        print(f"[{clock.elapsed():6.1f}s] {msg}", flush=True)

    return log


def per_zoom_buildings(model, data: dict, norm: dict, device: str) -> dict:
    """Pixel IoU per source zoom (z19/z20/z21 all resampled to 0.3 m) from the chip ids."""
    zooms = np.array([(re.search(r"_z(\d+)_", c) or [None, "?"])[1] for c in data["chip_id"]])
    out = {}
    for z in sorted(set(zooms)):
        part = {k: (v[zooms == z] if isinstance(v, np.ndarray) and len(v) == len(zooms) else v) for k, v in data.items()}
        out[f"z{z}"] = round(evaluate_buildings(model, part, norm, device)["pixel_iou"], 4)
    return out


def phase_buildings(data: dict, args, clock: Clock, log, dry: bool):
    seconds = clock.until(PHASE_END["buildings"]) - (2 if dry else 8)  # keep time for the test evaluation
    cfg = TrainConfig(
        budget_s=max(seconds, 1.0), batch_size=2 if dry else 32, lr=2e-3, device=args.device,
        val_every_s=1e9 if dry else 12.0, augment=AugmentConfig(out_size=64 if dry else 256), eval_batch=4 if dry else 32,
    )
    model, card = train_buildings(data, cfg, log=log)
    test = select(data, "test")
    scores = evaluate_buildings(model, test, card["normalisation"], args.device)
    scores["pixel_iou"] = round(scores["pixel_iou"], 4)
    scores["pixel_iou_by_source_zoom"] = per_zoom_buildings(model, test, card["normalisation"], args.device)
    card["metrics"]["test"] = {"area": "kampala (never seen in training)", **scores}
    card["metrics"]["command"] = COMMAND.format(budget=args.budget_s)
    save_model(model, card, args.out)
    log(f"buildings: saved; test {card['metrics']['test']}")
    return model, card


def phase_landcover(data: dict, args, clock: Clock, log, dry: bool):
    seconds = clock.until(PHASE_END["landcover"]) - (2 if dry else 8)
    cfg = TrainConfig(
        budget_s=max(seconds, 1.0), batch_size=2 if dry else 32, lr=2e-3, device=args.device,
        val_every_s=1e9 if dry else 15.0, augment=AugmentConfig(out_size=64 if dry else 256), eval_batch=4 if dry else 32,
    )
    model, card = train_landcover(data, cfg, log=log)
    test = select(data, "test")
    scores = evaluate_landcover(model, test, card["normalisation"], args.device, boundary=True)
    card["metrics"]["test"] = {"area": "Dubai tile 6", **scores}
    card["metrics"]["command"] = COMMAND.format(budget=args.budget_s)
    save_model(model, card, args.out)
    log(f"landcover: saved; test mIoU {scores['miou']:.4f} boundary F {scores['boundary_f_2px']:.4f}")
    return model, card


def image_part(chip_ids: np.ndarray) -> np.ndarray:
    return np.array([int((re.search(r"_p(\d+)_", c) or [None, "0"])[1]) for c in chip_ids])


def phase_gcn(data: dict, parts_async, cnn, cnn_card: dict, params: GraphParams, args, clock: Clock, log, dry: bool):
    from geoseg.card import CREDITS_LANDCOVER, LANDCOVER_CLASSES
    from geoseg.training.graphs import build_graphs, evaluate_refinement, train_gcn

    parts = parts_async.get(timeout=max(clock.until(PHASE_END["gcn"]), 1.0))
    norm, dev = cnn_card["normalisation"], args.device
    # GCN fit set: training tiles + tile-5 images 1-4 (CNN outputs there are honest, not memorised);
    # GCN selection set (epoch, fusion alpha): tile-5 images 5-9. Tile 6 stays the untouched test.
    part_no = image_part(data["chip_id"])
    split = data["split"]
    fit = (split == "train") | ((split == "val") & (part_no <= 4))
    sel = (split == "val") & (part_no > 4)
    if dry:
        fit, sel = split == "train", split == "val"
    test = split == "test"
    graph_deadline = clock.t0 + (PHASE_END["gcn"] - 0.06) * clock.budget_s
    graphs = build_graphs(cnn, norm, data["images"], parts, dev, deadline=None if dry else graph_deadline)
    n = len(graphs)
    log(f"gcn: {n} graphs ({np.mean([g.n_nodes for g in graphs]):.0f} nodes each)")
    idx = np.arange(len(split))
    fit_i, sel_i, test_i = [idx[m & (idx < n)] for m in (fit, sel, test)]
    arch = {"in_features": n_node_features(cnn.feature_channels, 5), "n_classes": 6, "hidden": 96, "n_layers": 3}
    train_s = max(min(clock.until(PHASE_END["gcn"]) * 0.5, 30.0), 1.0)
    gcn, hist = train_gcn([graphs[i] for i in fit_i], [graphs[i] for i in sel_i], arch, dev,
                          budget_s=train_s, epochs=20 if dry else 3000, log=log)
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    sel_scores = evaluate_refinement(cnn, norm, gcn, data["images"][sel_i], data["labels"][sel_i],
                                     [graphs[i] for i in sel_i], alphas, dev)
    alpha = max(alphas[:-1], key=lambda a: sel_scores[a]["miou"])
    log("gcn: selection mIoU by alpha " + ", ".join(f"{a}: {sel_scores[a]['miou']:.4f}" for a in alphas))
    test_scores = evaluate_refinement(cnn, norm, gcn, data["images"][test_i], data["labels"][test_i],
                                      [graphs[i] for i in test_i], [alpha, 1.0], dev, boundary=True)
    with_gcn, cnn_only = test_scores[alpha], test_scores[1.0]
    log(f"gcn: TEST tile 6 mIoU {cnn_only['miou']:.4f} -> {with_gcn['miou']:.4f}, "
        f"boundary F {cnn_only['boundary_f_2px']:.4f} -> {with_gcn['boundary_f_2px']:.4f} (alpha {alpha})")
    card = {
        "name": "landcover-gcn",
        "task": "gcn",
        "architecture": "SuperpixelGCN",
        "arch_kwargs": arch,
        "output": "node logits (N,6); channel = class index; use geoseg.models.gcn.refine_probabilities",
        "cnn": cnn_card["name"],
        "classes": LANDCOVER_CLASSES,
        "ignore_index": 0,
        "bands": [1, 2, 3],
        "input": "uint8 RGB (+ features and probabilities of the cnn card's model)",
        "normalisation": norm,
        "gsd_m": cnn_card["gsd_m"],
        "tile_size": cnn_card["tile_size"],
        "graph": asdict(params),
        "fusion": {"alpha": alpha, "rule": "softmax(alpha * log p_cnn + (1 - alpha) * log p_gcn(node))",
                   "selection_miou_by_alpha": {str(a): round(sel_scores[a]["miou"], 4) for a in alphas}},
        "training": {
            "data": "packed Dubai chips", "fit": "tiles 1-4 + tile 5 images 1-4", "selection": "tile 5 images 5-9",
            "graphs": {"fit": int(len(fit_i)), "selection": int(len(sel_i)), "test": int(len(test_i))},
            "device": cnn_card["training"]["device"], **hist,
        },
        "metrics": {
            "test": {"area": "Dubai tile 6", "cnn_only": cnn_only, "cnn_plus_gcn": with_gcn,
                     "delta_miou": round(with_gcn["miou"] - cnn_only["miou"], 4)},
            "command": COMMAND.format(budget=args.budget_s),
        },
        "credits": CREDITS_LANDCOVER,
    }
    save_model(gcn, card, args.out)
    log("gcn: saved")
    return gcn, card


def phase_students(packed: dict, teachers: dict, args, clock: Clock, log, dry: bool) -> None:
    try:
        from geoseg.training.ablation import device_phase
    except ImportError as exc:
        log(f"students: skipped ({exc})")
        return
    budget = max(clock.left() - 5.0, 20.0 if dry else 0.0)
    if budget < 5:
        log("students: no time left")
        return
    device_phase(packed, teachers, args.out, budget, args.device, log=log)
    log("students: done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=Path, required=True, help="folder with buildings.npz and landcover.npz")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny batches and chip subsets (implied by --device cpu)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    clock = Clock(args.budget_s)
    log = make_log(clock)
    dry = args.dry_run or args.device == "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    if dry:
        torch.set_num_threads(2)
    else:
        torch.set_float32_matmul_precision("high")

    packed = {}
    for task in ("buildings", "landcover"):
        path = args.chips / f"{task}.npz"
        if path.is_file():
            packed[task] = load_packed(path)
            if dry:
                packed[task] = first_per_split(packed[task], 4)
            counts = {s: int((packed[task]["split"] == s).sum()) for s in ("train", "val", "test")}
            log(f"{task}: {len(packed[task]['images'])} chips {counts}")
        else:
            log(f"{task}: no pack at {path}")

    if not packed:
        log(f"no packs in {args.chips}: run `python -m geoseg.training.pack CHIPS_DIR {args.chips}/<task>.npz` first")
        return 2
    params = GraphParams()
    pool = parts_async = None
    if "landcover" in packed:  # superpixels cost CPU only: start them now, collect in phase 3
        from geoseg.training.graphs import start_parts

        pool = mp.get_context("fork").Pool(args.workers)
        parts_async = start_parts(pool, packed["landcover"]["images"], packed["landcover"]["labels"], params)
    # CUDA is touched only now, after the fork of the CPU pool
    log(f"device {args.device} ({torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}), "
        f"torch {torch.__version__}, budget {args.budget_s:.0f}s, dry={dry}, {args.workers} superpixel workers")

    teachers: dict = {}
    failures = []
    for task, phase in (("buildings", phase_buildings), ("landcover", phase_landcover)):
        if task not in packed:
            continue
        try:
            teachers[task] = phase(packed[task], args, clock, log, dry)
        except Exception:  # noqa: BLE001 - one failed phase must not lose the others
            failures.append(task)
            log(f"{task}: FAILED\n{traceback.format_exc()}")
    if "landcover" in teachers and parts_async is not None:
        try:
            phase_gcn(packed["landcover"], parts_async, *teachers["landcover"], params, args, clock, log, dry)
        except Exception:  # noqa: BLE001
            failures.append("gcn")
            log(f"gcn: FAILED\n{traceback.format_exc()}")
    if pool is not None:
        pool.terminate()
    if teachers:
        try:
            phase_students(packed, teachers, args, clock, log, dry)
        except Exception:  # noqa: BLE001
            failures.append("students")
            log(f"students: FAILED\n{traceback.format_exc()}")
    files = sorted(p.name for p in args.out.iterdir() if p.is_file())
    log(f"done in {clock.elapsed():.0f}s; failures {failures or 'none'}; files {files}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
