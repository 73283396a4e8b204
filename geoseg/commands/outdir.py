"""The ``--out`` folder of a command: created and proved writable before the long work starts.

Why: ``geoseg predict`` loaded models and ``geoseg train`` trained for the whole budget before
finding that ``--out`` was a file or could not be written, and lost the result.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tiles.batch_summary import SUMMARY_NAME, summary_command
from tiles.rasterpath import has_control_character, line_end_hint, raster_name


def check_printable_path(path: Path | str, option: str = "--out") -> None:
    """``ValueError`` for a path holding a control character: a script saved with Windows line ends
    passes ``results\\r``, which made a folder of that name, ran every model, then failed each input
    writing its GeoPackage (SQLite: 'sqlite3_open(.../results/...) failed', the \\r unseen)."""
    text = str(path)
    if has_control_character(text):
        cr = line_end_hint(text, "a script or list")
        raise ValueError(f"{option} {text!r} holds a control character{f' (a carriage return: {cr})' if cr else ''}")


def make_out_folder(out: Path) -> None:
    """Create ``out`` and check a file can be written in it (ValueError, one line, if not)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_symlink() and not out.exists():  # mkdir said 'File exists', naming nothing of the link
        raise ValueError(f"--out {out} is a link to {os.readlink(out)}, which does not exist: a share not mounted?")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ValueError(f"cannot write into the --out folder {out}: {exc.strerror or exc}") from None


#: what a finished ``geoseg predict`` of one input (or ``--mosaic``) leaves in its ``--out``
ONE_INPUT_REPORT = "report.json"


def check_predict_layout(out: Path, batch: bool, stem: str | None = None, name: str | None = None,
                         input_path: str | None = None) -> None:
    """Refuse a ``geoseg predict`` whose layout differs from the one ``out`` already holds, before
    anything is written: one input (or ``--mosaic``) writes its files into ``out`` itself, a batch a
    folder per input and ``batch.json``. ``stem``: the one input's (for the hint); ``name``: its file
    name, refused where ``out`` holds the results of one input of another name; ``input_path`` (its
    absolute path), refused where they are of a file of that name elsewhere and of another size (another
    scene: ``y2023/ortho.tif`` and ``y2024/ortho.tif``), not of the same file moved.

    Why: ``geoseg predict scenes/broken.tif --out results``, re-running the one input a batch into
    ``results`` had failed, wrote its buildings and ``report.json`` into ``results/`` among the batch's
    folders (not ``results/broken/``), and ``batch.json`` still called it failed; the other way round, a
    batch's folders went in beside one input's files."""
    if not batch and summary_command(out) == "geoseg predict":
        hint = f", or give --out {out / stem} for its own folder" if stem else ", or give another --out"
        raise ValueError(f"{out} holds a batch's results ({SUMMARY_NAME}, a folder per input): one INPUT writes "
                         f"its files into --out itself, among them; run the batch's command again (its finished "
                         f"inputs are skipped, failed ones predicted again){hint}")
    report = out / ONE_INPUT_REPORT
    recorded = _one_inputs_record(report) if name is not None and not batch else None
    other = raster_name(recorded[0]) if recorded is not None else None
    if recorded is not None and other == name and input_path is not None and recorded[0] != input_path:
        size = _size(input_path)
        if recorded[1] is not None and size is not None and recorded[1] != size:
            raise ValueError(f"{out} holds the results of another scene of the same name, {recorded[0]} ({recorded[1]} "
                             f"bytes, this one {size}; {ONE_INPUT_REPORT}): they would be replaced; give each scene an "
                             f"--out of its own, or remove {out} first")
    if other is not None and other != name:
        # scheduler array jobs, `geoseg predict scene_$ID.tif --out results`: each task replaced the
        # last one's results, without a word
        raise ValueError(f"{out} holds the results of another input, {other} ({ONE_INPUT_REPORT}): {name}'s would "
                         f"replace them; give each scene an --out of its own (e.g. --out {out.parent / (stem or 'NAME')}; "
                         f"several INPUTs in one command write a folder each), or remove {out} first")
    if batch and report.is_file():
        raise ValueError(f"{out} holds the results of one input ({ONE_INPUT_REPORT}, buildings and class map "
                         f"files): a batch writes a folder per input among them; give another --out")


def _one_inputs_record(report: Path) -> tuple[str, int | None] | None:
    """The input (as report.json names it) whose results ``report`` (one input's) holds, and its size then;
    None when there is none, or it cannot be read (the run replaces such a folder, as before)."""
    try:
        record = json.loads(report.read_text())
        recorded, size = record.get("input"), (record.get("input_file") or {}).get("bytes")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, str) or not recorded:
        return None
    return recorded, size if isinstance(size, int) else None


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return None


def check_not_another_commands_out(out: Path, command: str) -> None:
    """Refuse an ``out`` whose batch summary another command wrote (``geoseg predict`` into a
    ``geoseg tile`` chip set, or the other way round), before anything is written.

    Why: both were run, each writing its files among the other's and replacing its ``batch.json``, so
    a script reading the chip set's summary read predict's, and the other way round."""
    owner = summary_command(out)
    if owner is not None and owner != command:
        raise ValueError(f"{out} holds the output of {owner} (its {SUMMARY_NAME}): {command} would write among "
                         f"it and replace that summary; use another --out")
    if command == "geoseg tile":  # one input's predict and a model folder leave no summary
        if (out / ONE_INPUT_REPORT).is_file():
            raise ValueError(f"{out} holds the results of a geoseg predict ({ONE_INPUT_REPORT}): chips would be "
                             f"written among them; use another --out")
        from geoseg.card import looks_like_card

        cards = sorted(p.name for p in out.glob("*.json") if looks_like_card(p)) if out.is_dir() else []
        if cards:
            raise ValueError(f"{out} holds models ({', '.join(cards[:3])}): chips would be written among them; use "
                             f"another --out")
