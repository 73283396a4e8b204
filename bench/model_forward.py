"""Forward throughput (Mpx/s of model input) of the networks behind each model card.

Pure torch: runs where rasterio is absent (the GPU machine). On CUDA it uses bf16
autocast + channels-last, on CPU fp32 with ``inference_mode``. Weights don't change
the speed, so cards without weight files are timed with their random init.

    python bench/model_forward.py --cards geoseg/weights --device cuda --size 512 --batch 16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from geoseg.card import build_module  # noqa: E402


def time_forward(model: torch.nn.Module, device: str, size: int, batch: int, seconds: float) -> float:
    """Mpx/s over repeated forwards of a (batch, 3, size, size) input after warm-up."""
    x = torch.rand(batch, 3, size, size, device=device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        for _ in range(3):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return n * batch * size * size / dt / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", type=Path, nargs="+", default=[Path("geoseg/weights")])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    paths: list[Path] = []
    for p in args.cards:
        paths += sorted(p.glob("*.json")) if p.is_dir() else [p]
    rows = []
    for path in paths:
        card = json.loads(path.read_text())
        if card.get("architecture") in (None, "SuperpixelGCN") or "arch_kwargs" not in card:
            continue
        model = build_module(card["architecture"], card["arch_kwargs"]).to(args.device).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        mpx = time_forward(model, args.device, args.size, args.batch, args.seconds)
        rows.append({"card": card.get("name", path.stem), "params_M": round(params, 2), "mpx_s": round(mpx, 2)})
        print(f"{rows[-1]['card']:<32} {params:6.2f} M params  {mpx:9.2f} Mpx/s "
              f"({args.device}, {args.size}px, batch {args.batch})", flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "rows": rows}))


if __name__ == "__main__":
    main()
