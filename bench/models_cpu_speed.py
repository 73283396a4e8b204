"""CPU cost of the accurate profile's first architectures on one 512 x 512 tile (eager torch, fp32, random weights).

Not the shipped pipeline's cost: the fast heads (LiteUNet, FastSegNet) and the accurate building head's
LiteUNet member are not timed, and predict runs ONNX Runtime, not eager torch (`bench/predict.py` times
the pipeline).

    .venv/bin/python bench/models_cpu_speed.py [--threads 2] [--repeats 3]

Prints median seconds per tile for U2-NetP (reference width) vs the shipped U2-Net width,
the AttResUNet (features + logits in one pass) and the GCN refinement (SLICO superpixels,
graph assembly, GCN forward, fusion) on a real Dubai crop. Timings on a shared machine are
noisy: compare the rows of one run, not runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from geoseg.models.attresunet import AttResUNet  # noqa: E402
from geoseg.models.gcn import SuperpixelGCN, refine_probabilities  # noqa: E402
from geoseg.models.u2net import U2Net  # noqa: E402
from geoseg.paths import data_root  # noqa: E402
from geoseg.superpixels import GraphParams, n_node_features  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitives)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 512, 512)
    rows = []
    for name, model in (("U2-NetP (mid 16)", U2Net(mid=16)), ("U2-Net shipped (mid 24)", U2Net(mid=24)),
                        ("AttResUNet", AttResUNet())):
        model.eval()
        n = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            if isinstance(model, AttResUNet):
                s = timed(lambda: model.classify(model.features(x)), args.repeats)
            else:
                s = timed(lambda: model(x), args.repeats)
        rows.append((name, n, s))
    img = np.asarray(Image.open(data_root() / "landcover/dubai/tile_5/image_part_001.jpg").convert("RGB"))[:512, :512]
    att = AttResUNet().eval()
    with torch.inference_mode():
        feats = att.features(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255)
        probs = torch.softmax(att.classify(feats)[:, 1:], 1)[0].numpy()
    feats = feats[0].numpy()
    gcn = SuperpixelGCN(n_node_features(feats.shape[0], 5)).eval()
    card = {"graph": vars(GraphParams()), "fusion": {"alpha": 0.5}}
    with torch.inference_mode():
        s = timed(lambda: refine_probabilities(gcn, card, img, feats, probs), args.repeats)
    rows.append(("GCN refinement (SLICO + graph + GCN + fusion)", sum(p.numel() for p in gcn.parameters()), s))
    print(f"threads={args.threads} repeats={args.repeats} tile=512x512")
    for name, n, s in rows:
        print(f"{name:48s} {n / 1e6:6.2f} M params  {s:6.2f} s/tile")


if __name__ == "__main__":
    main()
