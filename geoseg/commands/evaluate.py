"""`geoseg eval PRED_DIR --labels LABELS [--labels-layer NAME] [--labels-where SQL] [--coverage AREA] | --truth CLASS_RASTER`: a printed table and a JSON file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from geoseg.commands.usage import UsageError
from geoseg.commands.warning_lines import warnings_as_lines


def evaluate(
    pred_dir: Path = typer.Argument(..., metavar="PRED_DIR", help="Output folder of `geoseg predict`."),
    # a string, not a Path: Path would collapse the // of a GDAL virtual path (/vsizip//a.zip/b.gpkg)
    labels: str | None = typer.Option(None, "--labels", help="Building polygons to score against: any OGR vector file (or a folder GDAL reads as one, an Esri x.gdb; or a GDAL virtual path, /vsizip//path/l.zip/labels.geojson), any CRS."),
    labels_where: str | None = typer.Option(None, "--labels-where", help="Only the label features matching this OGR SQL condition are buildings, e.g. \"class = 'building'\" (default: every polygon); as geoseg tile's."),
    labels_layer: str | None = typer.Option(None, "--labels-layer", help="The building layer of a label file with several (a GeoPackage); default: the only polygon layer; as geoseg tile's."),
    coverage: str | None = typer.Option(None, "--coverage", help="Polygons of the area where the --labels are complete (any OGR vector file, any CRS): only the pixels inside it are scored, and only the labels and predicted buildings lying at least half inside it count (a building found where nobody mapped is no false positive); as geoseg tile's."),
    # a string, not a Path: Path would collapse the // of a GDAL virtual path (/vsizip//a.zip/b.tif)
    truth: Optional[str] = typer.Option(None, "--truth", help="Class raster (0 = unlabeled; any GDAL raster or virtual path) to score the class map."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Where to write the scores (default PRED_DIR/eval_<task>.json)."),
) -> None:
    """Score a prediction: buildings (pixel IoU/F1, polygon F1 at IoU >= 0.5) or class map (IoU, mIoU, OA)."""
    if (labels is None) == (truth is None):  # a usage error, one line as click's (geoseg.cli)
        raise UsageError("give exactly one of --labels or --truth")
    if labels is None and (labels_where is not None or labels_layer is not None):  # not ignored with --truth
        given = "--labels-where" if labels_where is not None else "--labels-layer"
        raise UsageError(f"{given} selects building labels: it goes with --labels, not --truth")
    if labels is None and coverage is not None:
        raise UsageError("--coverage says where building labels are complete: it goes with --labels, "
                         "not --truth (a class raster marks its unlabeled pixels 0)")
    out = json_out or pred_dir / f"eval_{'buildings' if labels is not None else 'classmap'}.json"
    try:
        if json_out is not None:  # checked first: scoring a big scene must not end on a typo
            _check_writable(json_out)
        from geoseg.evaluate import evaluate_buildings, evaluate_classmap  # geopandas: load on use

        with warnings_as_lines():  # e.g. points among the label footprints: one line each
            scores = (evaluate_buildings(pred_dir, labels, where=labels_where, layer=labels_layer,
                                         coverage=coverage) if labels is not None
                      else evaluate_classmap(pred_dir, truth))
    except Exception as exc:  # one line for the user
        typer.echo(f"geoseg eval: error: {exc}", err=True)
        raise typer.Exit(1) from None
    Console().print(_table(scores))  # printed before writing: the scores are not lost if the write fails
    try:
        out.write_text(json.dumps(scores, indent=2) + "\n")
    except OSError as exc:
        typer.echo(f"geoseg eval: error: cannot write the scores to {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"scores written to {out}")


def _check_writable(path: Path) -> None:
    """Raise ValueError when ``path`` cannot be a file in an existing folder."""
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder: give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"--json {path}: folder {path.parent} does not exist")


def _table(scores: dict) -> Table:
    if scores["task"] == "buildings":
        inside = f" inside {Path(scores['coverage']).name}" if "coverage" in scores else ""
        table = Table(title=f"buildings{inside}: {scores['n_predicted']} predicted, {scores['n_truth']} labelled")
        for col in ("level", "IoU", "precision", "recall", "F1"):
            table.add_column(col, justify="right")
        p, g = scores["pixel"], scores["polygon"]
        table.add_row("pixel", f"{p['iou']:.3f}", f"{p['precision']:.3f}", f"{p['recall']:.3f}", f"{p['f1']:.3f}")
        table.add_row("polygon (IoU>=0.5)", f"{g['mean_iou_of_matches']:.3f}*", f"{g['precision']:.3f}",
                      f"{g['recall']:.3f}", f"{g['f1']:.3f}")
        table.caption = "* the mean IoU of the matched pairs (mean_iou_of_matches), not an IoU of all polygons"
        return table
    table = Table(title=f"class map: mIoU {scores['miou']:.3f}, overall accuracy {scores['overall_accuracy']:.3f}")
    for col in ("class", "IoU", "truth px", "predicted px"):
        table.add_column(col, justify="right")
    for name, v in scores["per_class"].items():
        table.add_row(name, f"{v['iou']:.3f}", str(v["truth_pixels"]), str(v["predicted_pixels"]))
    return table
