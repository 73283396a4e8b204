"""The bookkeeping of one chip set in a chip folder: which options cut it, which scene made
which records, and which finished scenes must be cut again.

Why here and not in the command: ``geoseg tile`` is resumable, so a re-run trusts what an earlier
run left in ``OUT/parts/<options-hash>/``. What may be trusted (the same options; the scene, its
labels and its chip files unchanged) is a property of the chip folder, not of the CLI. Layout:

- ``parts/<hash>/<folder>__<stem>.json``: a finished scene's chip records (``record``);
- ``parts/<hash>/options.json``: the options key the records were cut with;
- ``parts/<hash>/sources.json``: chip-name prefix -> the scene file it was cut from;
- ``parts/<hash>/inputs.json``: scene path -> size and time of it, of the files it reads when it is a
  VRT, and of its label files; for a scene stored wider than 8 bits, how such values are read
  (``WIDE_READING``).

The options key is a JSON list ``[chip options, target, labels, split]``; ``--split`` only labels
records and the labels (with the mapped area, ``coverage <file>``, when ``--coverage`` names one) only
say which polygons a scene's chips are burnt from, so keys that differ by them alone name chip files of
one kind (sibling part dirs: one team's scenes, each cut with its own
label file, and its validation scenes under ``--split val``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import rasterio

from tiles.chips import ChipOptions
from tiles.rasterpath import (
    RasterPath,
    folder_name,
    is_virtual,
    local_file_of,
    location_exists,
    parent_of,
    raster_exists,
    raster_name,
    raster_stem,
    vrt_sources,
)
from tiles.same_content import HashProgress, file_key, same_content

OPTIONS_FILE = "options.json"
SOURCES_FILE = "sources.json"
INPUTS_FILE = "inputs.json"
#: the chip folder's list of every chip (``tiles.chips.write_index``)
INDEX_FILE = "index.geojson"
_BOOKKEEPING = (OPTIONS_FILE, SOURCES_FILE, INPUTS_FILE)
#: how values stored wider than 8 bits become chip bytes, raised when that changes so that a resumed
#: run cuts such scenes again: absent (1), every such scene stretched; 2, 8-bit data kept in a wider
#: type read as its own bytes (``tiles.normalize.eight_bit_scale``), whose stretched chips were kept
WIDE_READING = 2


def options_key(opts: ChipOptions, target: str, labels: list[str], split: str | None) -> str:
    """Everything that decides a chip set's files and records, as JSON (see the module doc)."""
    return json.dumps([asdict(opts), target, labels, split], default=str)


def record_path(part_dir: Path, scene: RasterPath) -> Path:
    """Where a scene's finished chip records go (unique per scene file; a subdataset's by its file
    and its own name, ``tiles.rasterpath.raster_stem``)."""
    return part_dir / f"{folder_name(scene)}__{raster_stem(scene)}.json"


def describe_key(key: list) -> str:
    """An options key as the user typed it, for the message refusing a second chip set."""
    opts, target, labels, split = key
    text = ", ".join(f"{k}={v}" for k, v in opts.items()) + f", target={target}"
    if labels:
        files = [raster_name(p) for p in labels if not p.startswith(_SAID)]
        text += f", labels={','.join(files)}" + "".join(f" {_said_text(p)}" for p in labels if p.startswith(_SAID))
    return text + (f", split={split}" if split else "")


def _labels_text(labels: list[str]) -> str:
    """An options key's labels as the user typed them (``labels a.gpkg where ...``), for a note."""
    if not labels:
        return "the labels beside each scene"
    files = [raster_name(p) for p in labels if not p.startswith(_SAID)]
    return (f"labels {','.join(files) or 'beside each scene'}"
            + "".join(f" {_said_text(p)}" for p in labels if p.startswith(_SAID)))


#: how an options key's labels say what is no label file (``tiles.scene_chips.SceneJob.chip_set``)
_SAID = ("where ", "layer ", "class field ", "coverage ")


def _said_text(said: str) -> str:
    """One of those as the user typed it: ``--coverage`` and its file's name (the key holds its path)."""
    return f"--coverage {raster_name(said[len('coverage '):])}" if said.startswith("coverage ") else said


def _file_state(path: RasterPath) -> list[int] | None:
    """A file's size and modification time (ns); None when it is missing. A folder read as one data
    source (an Esri File Geodatabase ``x.gdb/``, whose tables are edited in place) by its files': their
    total size and latest time. A file read from an archive or a subdataset by the local archive's or
    file's (``local_file_of``; None for a URL): a zip replaced under the same name is cut again."""
    if is_virtual(path):
        local = local_file_of(path)
        if local is None:
            return None
        path = local
    path = Path(path)
    try:
        if path.is_dir():
            stats = [p.stat() for p in path.rglob("*") if p.is_file()]
            return [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
        stat = path.stat()
        if path.suffix.lower() == ".shp":  # its attributes are in the .dbf, edited in place
            stats = [stat, *(f.stat() for f in _shapefile_parts(path))]
            return [sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)]
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _shapefile_parts(shp: Path) -> list[Path]:
    """The files of a shapefile beside its ``.shp`` (attributes, index, CRS, code page), by its stem
    in any case: a class corrected in the ``.dbf`` changes no byte of the ``.shp``, and a re-run kept
    the chips of the old class."""
    wanted = {shp.stem.lower() + suffix for suffix in (".dbf", ".shx", ".prj", ".cpg")}
    return sorted(f for f in shp.parent.iterdir() if f.name.lower() in wanted and f.is_file())


def _stored_wider_than_bytes(path: RasterPath) -> bool | None:
    """Whether a scene holds values other than uint8 (read through ``tiles.normalize``'s scaling);
    None for a file that does not open now (a URL down for a moment; the run itself says why when it
    is cut)."""
    try:
        with rasterio.open(str(path)) as src:
            return any(dtype != "uint8" for dtype in src.dtypes)
    except (rasterio.errors.RasterioError, OSError):
        return None


def changed_since_cut(out: Path) -> list[str]:
    """The finished scenes of the chip folder ``out`` whose scene, label or VRT source files changed
    (size or time, as ``ChipSet.recut_changed`` compares them) since their chips were cut, each as
    ``scene (the files)``; a file gone since (moved data) is not counted.

    Why: after a team corrected its labels and re-ran the command of its training scenes, the
    validation scenes cut from the same file kept their chips of the old labels, and ``geoseg train``
    trained and chose the model on them without a word."""
    found = []
    states: dict[str, list[int] | None] = {}  # a label file or .gdb shared by many scenes: stat it once
    for states_path in sorted(Path(out).glob(f"parts/*/{INPUTS_FILE}")):
        try:
            known = json.loads(states_path.read_text())
        except (OSError, ValueError):
            continue
        for scene, was in sorted(known.items()) if isinstance(known, dict) else ():
            if not isinstance(was, dict) or not record_path(states_path.parent, scene).is_file():
                continue
            files = {scene: was.get("scene"), **(was.get("labels") or {}), **(was.get("sources") or {})}
            for path in files.keys() - states.keys():
                states[path] = _file_state(path)
            changed = [raster_name(path) for path, state in files.items()
                       if states[path] is not None and states[path] != state]
            if changed:
                found.append(f"{raster_name(scene)} ({', '.join(changed)})")
    return sorted(found)  # by name, not by the part folders' hashes


def index_chips(index: Path) -> list[dict]:
    """The chips (their properties) a chip folder's ``index.geojson`` lists; [] without one; a
    one-line ValueError for a file that is no chip index (a folder of something else given as
    ``--out``), which would otherwise fail with JSON's words, or after every scene was cut."""
    if not index.is_file():
        return []
    try:
        return [feature["properties"] for feature in json.loads(index.read_text()).get("features", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise ValueError(f"{index} is no chip index (geoseg tile writes it): use another --out") from None


def _chips_of_other_options(index: Path, key: list) -> str | None:
    """How the chips listed in a chip folder's index differ from an options key (the first such
    chip's size, target or bands, as the user typed them), None when none does.

    Why: ``claim`` knows earlier chip sets by their ``parts/`` records; chips whose records are gone
    (``parts/`` deleted as scratch, a chip folder copied without it, one made by an older geoseg) were
    merged into the index beside chips of another size or target, silently."""
    opts, target, _, _ = key
    for chip in index_chips(index):
        window = chip.get("window") or []
        if chip.get("target", target) != target:
            return f"target={chip['target']}"
        if len(window) == 4 and window[2:] != [opts["size"], opts["size"]]:
            return f"size={window[2]}"
        if "bands" in chip and chip["bands"] != opts["bands"]:
            return "bands=" + (",".join(map(str, chip["bands"])) if chip["bands"] else "the rasters' own")
    return None


def _same_file(recorded: str, path: RasterPath) -> bool:
    """Whether a scene recorded by an earlier run (``sources.json``) is ``path``: the same path, or the
    same file reached another way (runs before links were kept recorded the link's target)."""
    return recorded == str(path) or file_key(recorded) == file_key(path)


def _refuse_copies(scenes: list[RasterPath], known: dict[str, str], prefix: Callable[[RasterPath], str],
                   progress: HashProgress | None = None) -> None:
    """Refuse a scene of this run that is the same scene as another of this run or as one that an
    earlier run cut into this chip set and that is still there (``known``: ``sources.json``'s chip
    names -> scene paths), under another file (``tiles.same_content``: a ``cp`` copy, the same bytes
    and sidecars; one file under two names is refused by name already). Sizes are compared first:
    a run whose scenes' sizes no other has reads none of them; those read through are told to
    ``progress`` (``tiles.hashing_progress``: multi-GB scenes take minutes)."""
    this_run = {file_key(p) for p in scenes}
    earlier: dict[str, tuple[str, str]] = {}  # file key -> (its chips' name, its path)
    for key, recorded in known.items():
        if not key.startswith("record:") and file_key(recorded) not in this_run and _scene_exists(recorded):
            earlier.setdefault(file_key(recorded), (key, recorded))
    cut_before = {recorded: key for key, recorded in earlier.values()}
    given = {str(p) for p in scenes}
    for copy, first in same_content([*cut_before, *scenes], progress).items():
        if str(copy) not in given or file_key(copy) == file_key(first):
            continue
        where = ", cut by an earlier run into this --out" if str(first) in cut_before else ""
        raise ValueError(f"{copy} is a copy of {first} (the same bytes){where}: its chips would be listed twice, "
                         f"as {cut_before.get(str(first)) or prefix(first)} and as {prefix(copy)}; give the scene once")


def _scene_exists(path: str) -> bool:
    """Whether a scene recorded by an earlier run is still there (a link to nothing counts: it was not
    moved; a virtual location as GDAL finds it)."""
    if not is_virtual(path):
        return os.path.lexists(path)
    return location_exists(path) if path.startswith("/vsi") else raster_exists(path)


class ChipSet:
    """One option set's records in a chip folder ``out`` (the folder holds one chip set; runs that
    differ only by ``--split`` share it)."""

    def __init__(self, out: Path, key: str) -> None:
        self.out = out
        self.key = key

    @property
    def part_dir(self) -> Path:
        return self.out / "parts" / hashlib.sha1(self.key.encode()).hexdigest()[:10]

    @property
    def split(self) -> str | None:
        return json.loads(self.key)[3]

    def record(self, scene: RasterPath) -> Path:
        """Where ``scene``'s finished chip records go in this chip set."""
        return record_path(self.part_dir, scene)

    def claim(self) -> list[Path]:
        """Refuse an ``out`` that holds finished records cut with other options; return the part
        dirs of the same chip set under another ``--split`` or other labels (their records stay valid
        beside ours).

        Why: chip files are ``<stem>_rNNN_cNNN`` whatever the options, so a second option set
        overwrites them and the first set's records (kept for resuming) would then point at pixels
        cut otherwise. ``--split`` does not change a pixel, so runs differing only by it share an
        ``out``: that is how a user's own scenes (whose areas the built-in rules do not know, all
        train) get a validation split. Nor does a label file: each scene's chips are burnt from the
        labels of its own run, so a team whose areas each have their own file (``site_a.gpkg`` with
        the training scenes, ``site_b.shp`` with the validation ones) cuts them into one ``out``, as
        scenes with a ``labels.geojson`` beside each always could. A part dir with no record yet (a
        run that failed everywhere) is not a chip set and is dropped.
        """
        mine = self.part_dir
        key = json.loads(self.key)
        parts = self.out / "parts"
        others = sorted(d for d in parts.iterdir() if d.is_dir() and d != mine) if parts.is_dir() else []
        siblings = []
        for other in others:
            if not any(f.name not in _BOOKKEEPING for f in other.glob("*.json")):
                shutil.rmtree(other, ignore_errors=True)
                continue
            stamp = other / OPTIONS_FILE
            was = json.loads(stamp.read_text()) if stamp.exists() else None
            if was is not None and was[:2] == key[:2]:  # all but the labels and the split
                siblings.append(other)
                continue
            raise ValueError(f"{self.out} holds chips cut with other options "
                             f"({describe_key(was) if was else 'unknown options'})"
                             f"; use another --out or the same options as that run")
        other_chips = _chips_of_other_options(self.out / INDEX_FILE, key)
        if other_chips is not None:
            raise ValueError(f"{self.out} holds chips cut with other options ({other_chips}, listed in its "
                             f"{INDEX_FILE}); use another --out or the same options as those chips")
        mine.mkdir(parents=True, exist_ok=True)
        (mine / OPTIONS_FILE).write_text(self.key)
        return siblings

    def check_unique_names(self, scenes: Iterable[RasterPath], prefix: Callable[[RasterPath], str],
                           siblings: Iterable[Path] = (), by_content: bool = True,
                           progress: HashProgress | None = None) -> list[str]:
        """Refuse two scene files whose chips (named ``prefix(scene)_rNNN_cNNN``) or finished-scene
        records would share names, in this run or against earlier runs into ``out`` (``siblings``):
        they would overwrite each other's files, or one would be skipped as already done. Refuse too one
        file under two names, in this run or against earlier runs (two links to it; a link and its
        target, which runs before links were kept named it by): its ground would be listed twice; and,
        with ``by_content``, a scene of this run that is a copy of another of it or of one an earlier run
        cut into ``out`` (``_refuse_copies``), which listed it twice as well; ``progress`` is told of the
        scenes that check reads through (``tiles.hashing_progress``).

        A scene whose earlier namesake is gone was moved (``scenes/`` sorted into ``scenes/train/`` and
        ``scenes/val/``, as the README lays them out): the gone file's records are dropped, so the scene
        is cut again from where it is now, over the same chip files; returns a note per such scene.
        Why: each such re-run was refused, naming a file that no longer existed."""
        scenes, siblings = list(scenes), list(siblings)
        known: dict[str, str] = {}
        for part in (*siblings, self.part_dir):
            if (part / SOURCES_FILE).exists():
                known |= json.loads((part / SOURCES_FILE).read_text())
        cut_as = {file_key(recorded): (key, recorded) for key, recorded in known.items()
                  if not key.startswith("record:")}
        mine: dict[str, str] = {}
        moved: dict[RasterPath, str] = {}  # scene -> its gone namesake
        for path in scenes:
            name = prefix(path)
            cut_name, recorded = cut_as.setdefault(file_key(path), (name, str(path)))
            if cut_name != name and recorded != str(path):
                raise ValueError(f"{path} and {recorded} are one file (a link counts as the file it leads to): its "
                                 f"chips would be listed twice, as {cut_name} and as {name}; give it under one name "
                                 f"(another --out where chips of the other are cut already)")
            for key, what in ((name, f"chips named {name}_rNNN_cNNN"),
                              (f"record:{self.record(path).name}", "the same finished-scene record")):
                other = mine.get(key) or known.get(key)
                if other is not None and not _same_file(other, path):
                    if key in mine or _scene_exists(other):
                        raise ValueError(f"{path} and {other} would both write {what}: "
                                         f"rename one or tile them into different --out folders")
                    moved.setdefault(path, other)
                mine[key] = str(path)
        if by_content:
            _refuse_copies(scenes, known, prefix, progress)
        notes = []
        for path, gone in moved.items():
            for part in (*siblings, self.part_dir):
                record_path(part, gone).unlink(missing_ok=True)
            notes.append(f"{raster_name(path)}: cut before from {gone}, which is gone: cut again from {parent_of(path)}")
        (self.part_dir / SOURCES_FILE).write_text(json.dumps({**known, **mine}, indent=0, sort_keys=True))
        return notes

    def move_to_this_split(self, scenes: Iterable[RasterPath], siblings: Iterable[Path]) -> list[str]:
        """Drop the finished records of ``scenes`` kept under another ``--split`` or other labels of
        this chip set, so that they are cut again with this run's (the index then lists each scene
        once, as asked for last); returns a note per scene moved."""
        notes = []
        siblings = list(siblings)
        key = json.loads(self.key)
        for path in scenes:
            for other in siblings:
                record = record_path(other, path)
                if record.exists():
                    record.unlink()
                    was = json.loads((other / OPTIONS_FILE).read_text())
                    if was[3] != key[3]:
                        notes.append(f"{raster_name(path)}: cut before under {was[3] or 'the split by area'}, "
                                     f"now under {key[3] or 'the split by area'}")
                    if was[2] != key[2]:
                        notes.append(f"{raster_name(path)}: cut before with {_labels_text(was[2])}, now with "
                                     f"{_labels_text(key[2])}")
        return notes

    def recut_changed(self, scenes: Iterable[RasterPath], label_files: Callable[[RasterPath], list[RasterPath]]) -> list[str]:
        """Drop the finished records of ``scenes`` whose scene or label files (``label_files(scene)``)
        changed (size or time) since they were cut, so that the run cuts them again; record the
        files as they are now. Returns a note per scene.

        Why: a re-run skipped a finished scene by its record alone, so after a team corrected its
        labels (or replaced a scene) and re-ran the same command, the chips kept the old labels
        while the run said "1 already done". ``geoseg predict``'s batch re-predicts a replaced input
        the same way. A VRT scene is watched with the files it reads (``vrt_sources``): its own
        bytes stay the same when a tile under it is replaced, and its old chips were kept. A scene
        stored wider than 8 bits is cut again when such values are read another way (``WIDE_READING``):
        the chips of 8-bit data in a uint16 file were stretched before, unlike its predictions since.
        """
        states_path = self.part_dir / INPUTS_FILE
        known = json.loads(states_path.read_text()) if states_path.is_file() else {}
        notes = []
        for path in scenes:
            now = {"scene": _file_state(path), "labels": {str(p): _file_state(p) for p in label_files(path)}}
            sources = {name: _file_state(Path(name)) for name in vrt_sources(path)}
            if sources:  # only for a VRT: the records of other scenes stay as earlier runs wrote them
                now["sources"] = sources
            was = known.get(str(path))
            wide = _stored_wider_than_bytes(path)
            if wide is None and was is not None and "reading" in was:  # not opened now: as recorded
                now["reading"] = was["reading"]
            elif wide:  # only then: the records of uint8 scenes stay as they were
                now["reading"] = WIDE_READING
            record = self.record(path)
            if was is not None and was != now and record.is_file():
                record.unlink()
                changed = [raster_name(path)] if was.get("scene") != now["scene"] else []
                changed += [Path(p).name for p, state in sources.items() if (was.get("sources") or {}).get(p) != state]
                changed += [raster_name(p) for p, state in now["labels"].items()
                            if (was.get("labels") or {}).get(p) != state]
                if changed:
                    notes.append(f"{raster_name(path)}: {', '.join(changed)} changed since it was cut, cut again")
                elif was.get("reading") != now.get("reading"):  # the same files, read another way
                    notes.append(f"{raster_name(path)}: cut by an earlier geoseg, before 8-bit values kept in a "
                                 f"wider type were read as their own bytes (docs/tiling.md), cut again")
                else:
                    notes.append(f"{raster_name(path)}: its files changed since it was cut, cut again")
            known[str(path)] = now
        states_path.write_text(json.dumps(known, indent=0, sort_keys=True))
        return notes

    def recut_incomplete(self, scenes: Iterable[RasterPath]) -> list[str]:
        """Drop the finished records of ``scenes`` whose chip files are not all in ``out``, so that
        the run cuts those scenes again; returns a note per scene.

        Why: a re-run skips a finished scene by its record alone, so a chip deleted since (a
        clean-up, a copy that stopped half-way) stayed missing however often the command was re-run,
        and ``geoseg train`` failed on it.
        """
        notes = []
        for path in scenes:
            record = self.record(path)
            if not record.is_file():
                continue
            files = [f["properties"].get(k) for f in json.loads(record.read_text()) for k in ("image", "label")]
            missing = [name for name in files if name and not (self.out / name).is_file()]
            if missing:
                record.unlink()
                notes.append(f"{raster_name(path)}: {len(missing)} chip file(s) missing ({missing[0]}), cut again")
        return notes

    def features(self, scenes: Iterable[RasterPath]) -> list[dict]:
        """The chip records (GeoJSON features) of the finished ``scenes``, in their order."""
        features: list[dict] = []
        for path in scenes:
            record = self.record(path)
            if record.exists():
                features += json.loads(record.read_text())
        return features
