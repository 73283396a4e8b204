"""int8 ONNX graphs of a shipped head for ``--runtime int8`` (CPU).

Why: on CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, ARM dot product),
ONNX Runtime runs a statically quantised convolution network 2-3x faster than float32.
The U2-Net building head is the accurate profile's cost (8-9 of 10 s on a 2.1 Mpx scene).

How: the head is exported as the pipeline exports it (normalisation and softmax inside,
``geoseg.infer.export_onnx``), then quantised with ONNX Runtime's static QDQ quantiser:
int8 weights per output channel, uint8 activations whose ranges come from tiles of the
TRAINING areas only (never the validation or test areas). The graph is written beside the
weights and named in the card (``int8_onnx``) with the SHA-256 of the weights it was made
from, so a retrained head never runs a stale graph.

    python -m geoseg.training.quantize geoseg/weights/buildings-u2net.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geoseg import card as cards
from geoseg.paths import data_root
from tiles.grid import tile_grid
from tiles.source import Scene

#: calibration scenes per task: training areas of the shipped cards (see their ``training.splits``)
CALIBRATION = {
    "buildings": ["buildings/zanzibar/zanzibar_z19_1.tif", "buildings/zanzibar/zanzibar_z19_2.tif",
                  "buildings/nairobi/nairobi_z19_1.tif"],
}


def calibration_tiles(scenes: list[Path], gsd_m: float | None, size: int = 512, per_scene: int = 4) -> list[np.ndarray]:
    """Up to ``per_scene`` full (1, 3, size, size) float32 tiles of valid pixels from each scene."""
    tiles = []
    for path in scenes:
        with Scene(path, gsd=gsd_m) as scene:
            taken = 0
            for tile in tile_grid(scene.width, scene.height, size, 0):
                window = tile.read
                if taken == per_scene:
                    break
                if window.width < size or window.height < size:
                    continue
                rgb, valid = scene.read(Window(window.col_off, window.row_off, size, size))
                if valid.mean() > 0.9:
                    tiles.append(rgb[None].astype(np.float32))
                    taken += 1
    if not tiles:
        raise ValueError("no calibration tile: the scenes are smaller than a tile or mostly nodata")
    return tiles


def quantize_head(card_path: Path, scenes: list[Path]) -> Path:
    """Write ``<name>.int8.onnx`` beside the card's weights and record it in the card."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from geoseg.infer import ProbabilityHead, export_onnx

    module, card = cards.load_model(card_path)
    tiles = calibration_tiles(scenes, card.get("gsd_m"), int(card.get("tile_size") or 512))
    fp32 = export_onnx(ProbabilityHead(module, card, False), card, False)
    out = Path(card["card_path"]).parent / f"{card['name']}.int8.onnx"

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(tiles)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        # the softmax stays float: uint8 probabilities (steps of 1/255) would blur the card's
        # low building threshold (0.02) and the polygons' confidence
        softmax = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Softmax"]
        # reduce_range: 7-bit weights. ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI
        # (AVX2 only, e.g. an AMD EPYC of this project's CI) add products in int16 and saturate: the
        # full-range graph's building mask agreed with float32 at IoU 0.71 there (> 0.9 with VNNI)
        quantize_static(str(pre), str(out), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=softmax)
    raw = json.loads(Path(card["card_path"]).read_text())
    raw["int8_onnx"] = {
        "file": out.name,
        "weights_sha256": cards.weights_sha256(card),
        "outputs": ["probs"],
        "method": "ONNX Runtime static QDQ: int8 weights per channel in 7 bits (reduce_range), uint8 activations (MinMax), float softmax",
        "calibration": {"scenes": [Path(s).name for s in scenes], "tiles": len(tiles)},
    }
    Path(card["card_path"]).write_text(json.dumps(raw, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("card", type=Path, help="model card of the head (its weights sit beside it)")
    parser.add_argument("--scenes", type=Path, nargs="*", help="calibration rasters (default: training areas)")
    args = parser.parse_args(argv)
    card = cards.read_card(cards.find_card(args.card))
    scenes = args.scenes or [data_root() / s for s in CALIBRATION[card["task"]]]
    out = quantize_head(args.card, scenes)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and recorded it in {args.card}")


if __name__ == "__main__":
    main()
