"""`geoseg tile`: cut scenes (+ labels) into training chips; see tiles.chips for the format."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tiles.chips import ChipOptions, ChipRecord, building_chips, landcover_chips, landcover_pairs, write_index
from tiles.errors import UnsupportedRaster
from tiles.grid import tile_grid
from tiles.labels import LabelIndex
from tiles.source import Scene
from tiles.splits import buildings_split, landcover_split, scene_area


class Target(str, Enum):
    buildings = "buildings"
    landcover = "landcover"


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def _expand_scenes(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in RASTER_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise typer.BadParameter(f"{p}: no such file or directory")
    return out


def _parse_bands(bands: str | None) -> tuple[int, ...] | None:
    if bands is None:
        return None
    try:
        return tuple(int(b) for b in bands.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"--bands must look like 1,2,3, got {bands!r}") from exc


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _run_buildings(scenes: list[Path], labels: list[Path] | None, out: Path, opts: ChipOptions,
                   split: str | None) -> list[ChipRecord]:
    records: list[ChipRecord] = []
    cache: dict[tuple, LabelIndex] = {}
    with _progress() as progress:
        task = progress.add_task("chips", total=None)
        for path in scenes:
            label_files = labels or [path.parent / "labels.geojson"]
            missing = [p for p in label_files if not p.exists()]
            if missing:
                raise typer.BadParameter(f"{path.name}: label file {missing[0]} not found (use --labels)")
            with Scene(path, bands=opts.bands, gsd=opts.gsd) as scene:
                key = (tuple(str(p) for p in label_files), scene.crs.to_wkt() if scene.crs else None)
                if key not in cache:
                    cache[key] = LabelIndex.from_files(label_files, scene.crs)
                area, block = scene_area(path)
                n = len(tile_grid(scene.width, scene.height, opts.size, opts.overlap))
                progress.update(task, total=(progress.tasks[0].total or 0) + n, description=path.name)
                for rec in building_chips(scene, cache[key], out, opts, path.name, area,
                                          split or buildings_split(area, block)):
                    records.append(rec)
                    progress.advance(task)
    return records


def _run_landcover(roots: list[Path], out: Path, opts: ChipOptions, split: str | None) -> list[ChipRecord]:
    pairs = [pair for root in roots for pair in landcover_pairs(root)]
    if not pairs:
        raise typer.BadParameter("no image + *_label.png pairs found")
    records: list[ChipRecord] = []
    with _progress() as progress:
        task = progress.add_task("chips", total=len(pairs))
        for image, mask in pairs:
            tile_dir = image.parent.name
            prefix = f"{image.parent.parent.name}_{tile_dir}_{image.stem}".replace("image_part_", "p")
            with Scene(image, bands=opts.bands) as scene:
                records += list(landcover_chips(scene, mask, out, opts, f"{tile_dir}/{image.name}", prefix,
                                                tile_dir, split or landcover_split(tile_dir)))
            progress.update(task, advance=1, description=f"{tile_dir}/{image.name}")
    return records


def tile(
    scenes: list[Path] = typer.Argument(..., help="Scene rasters, or folders (land cover: folder of image + _label.png pairs)."),
    out: Path = typer.Option(..., "--out", help="Chip directory (index.geojson, images/, labels/)."),
    labels: list[Path] = typer.Option(None, "--labels", help="Building polygons (any CRS); repeatable. Default: labels.geojson beside each scene."),
    size: int = typer.Option(512, help="Chip size in working-grid pixels."),
    overlap: int = typer.Option(0, help="Overlap between neighbouring chips in pixels."),
    gsd: float = typer.Option(None, help="Resample to this ground sample distance in metres."),
    target: Target = typer.Option(Target.buildings, help="buildings (0/1/2 + 255) or landcover (class-index masks)."),
    min_valid: float = typer.Option(0.5, help="Skip windows with a smaller valid-pixel fraction (recorded as skipped)."),
    bands: str = typer.Option(None, help="Comma-separated 1-based bands for R,G,B (default: colour interpretation or 1,2,3)."),
    split: str = typer.Option(None, help="Force this split for all chips (default: by area, see docs/ARCHITECTURE.md)."),
) -> None:
    """Cut scenes into training chips with labels and an index."""
    opts = ChipOptions(size=size, overlap=overlap, gsd=gsd, min_valid=min_valid, bands=_parse_bands(bands))
    try:
        if target is Target.landcover:
            records = _run_landcover(scenes, out, opts, split)
        else:
            records = _run_buildings(_expand_scenes(scenes), labels, out, opts, split)
    except (UnsupportedRaster, ValueError) as exc:
        if isinstance(exc, typer.BadParameter):
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    index = write_index(out, records)
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "empty", "skipped")}
    typer.echo(f"{len(records)} windows ({counts['ok']} ok, {counts['empty']} empty, "
               f"{counts['skipped']} skipped) -> {index}")
