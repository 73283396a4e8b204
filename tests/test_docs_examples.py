"""The Python blocks of docs/models.md and docs/predict.md, run as written (their placeholders
filled in), so a rename in geoseg.card or geoseg.pipeline cannot leave a user's first example broken.
(docs/tiling.md's blocks: tests/test_tiles_docs.py; docs/service.md's client: tests/test_api_client.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from geoseg.paths import weights_dir

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_block(doc: str, after: str) -> str:
    """The first ```python block of ``docs/doc`` that follows the line ``after``."""
    found = re.search(rf"^{re.escape(after)}.*?```python\n(.*?)```", (DOCS / doc).read_text(),
                      re.DOTALL | re.MULTILINE)
    assert found, f"docs/{doc} lost its Python example after {after!r}"
    return found.group(1)


def test_the_models_md_example_runs_as_written():
    code = python_block("models.md", "The students, how they were trained")
    assert '"path/to/model_dir"' in code
    code = code.replace('"path/to/model_dir"', repr(str(weights_dir() / "buildings-u2net.json")))
    names = {"uint8_batch": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)}
    exec(compile(code, str(DOCS / "models.md"), "exec"), names)  # noqa: S102 (our own docs)
    # "(B, 3, H, W) -> (B, K, H, W), channel = class index"
    assert names["logits"].shape == (2, len(names["card"]["classes"]), 64, 64)


def test_the_predict_md_example_runs_as_written(buildings_dir: Path, tmp_path: Path):
    code = python_block("predict.md", "From Python (this is what the service's workers call)")
    names = {"path": buildings_dir / "kampala" / "kampala_z19_2.tif", "out_dir": tmp_path / "out"}  # 256 x 256 px
    exec(compile(code, str(DOCS / "predict.md"), "exec"), names)  # noqa: S102 (our own docs)
    report = names["report"]
    # the files the pipeline contract names, written where the example says
    assert {"classmap.tif", "classmap.qml", "buildings.geojson", "buildings.gpkg", "report.json"} <= set(
        report["outputs"]) == {p.name for p in (tmp_path / "out").iterdir()}
    assert report["options"]["regularize"] is True and report["tiles"]["size"] == 512
