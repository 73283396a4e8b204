"""Second GPU job: retrain the building head with cross-area colour augmentation, then distil.

The first job's U2-Net never beat its step-1 checkpoint on the held-out block (it
predicted 'building' everywhere); this run added channel shuffles and grey scale so
roof colour stops being the cue (now part of ``geoseg.augment``: AugmentConfig
channel_shuffle_p / grey_p), validates from 25 s on, then trains both students
from the new building teacher and the shipped land-cover teacher.

    python3 scripts/device_retrain_buildings.py --chips .chips --out $OUT --train-s 175 --students-s 75
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import geoseg.training.loop as loop  # noqa: E402
from geoseg.augment import AugmentConfig  # noqa: E402
from geoseg.card import load_model, save_model  # noqa: E402
from geoseg.paths import weights_dir  # noqa: E402
from geoseg.training.data import first_per_split, load_packed, select  # noqa: E402

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chips", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-s", type=float, default=175.0)
    ap.add_argument("--students-s", type=float, default=75.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    t0 = time.monotonic()
    log = lambda m: print(f"[{time.monotonic() - t0:6.1f}s] {m}", flush=True)  # noqa: E731
    dry = args.device == "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    packed = {t: load_packed(args.chips / f"{t}.npz") for t in ("buildings", "landcover")}
    if dry:
        packed = {t: first_per_split(d, 4) for t, d in packed.items()}
    cfg = loop.TrainConfig(
        budget_s=args.train_s, batch_size=2 if dry else 32, lr=2e-3, device=args.device,
        val_every_s=1e9 if dry else 25.0, augment=AugmentConfig(out_size=64 if dry else 256), eval_batch=4 if dry else 32,
    )
    model, card = loop.train_buildings(packed["buildings"], cfg, log=log)
    test = select(packed["buildings"], "test")
    scores = loop.evaluate_buildings(model, test, card["normalisation"], args.device)
    card["metrics"]["test"] = {"area": "kampala (never seen in training)", **scores}
    card["metrics"]["command"] = f"python3 scripts/device_retrain_buildings.py --chips .chips --out $OUT --train-s {args.train_s:g}"
    save_model(model, card, args.out)
    log(f"buildings: saved; val {card['metrics']['val']} test {scores}")
    from geoseg.training.ablation import device_phase

    lc = load_model(weights_dir() / "landcover-attresunet.json", device=args.device)
    teachers = {"buildings": (model, card), "landcover": lc}
    device_phase(packed, teachers, args.out, args.students_s, args.device, log=log, max_steps=2 if dry else None)
    log(f"done; files {sorted(p.name for p in args.out.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
