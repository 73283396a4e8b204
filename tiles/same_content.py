"""Which inputs of one run are the same scene under another name: the same file reached another
way (a link), or a byte-identical copy (``cp a.tif copy_of_a.tif``), with the same sidecars.

Why: a mapping team's folders hold copies (a delivery unpacked twice, a scene linked into two
projects). ``geoseg predict`` ran the models on each copy, the same work again; ``geoseg tile`` cut
each into chips, the same ground listed twice (it already refused two links to one file,
``ChipSet.check_unique_names``, by ``file_key``). Content is compared cheaply: sizes first; only
files whose size another input has are read, their first and last 64 KiB, and only those whose
ends match are hashed through (SHA-256, streamed): a batch of distinct files pays one ``stat``
each, and a grid of same-size uncompressed tiles two small reads each. A raster is its file and
the sidecars GDAL reads beside its *name* (``x.tif.aux.xml``, ``x.tif.msk``, ``x.tif.ovr``, world
files, ``x.prj``, ``x.hdr``): a copy without the original's world file or mask is another scene. Virtual inputs (``/vsizip/``, URLs,
subdatasets) are not compared, nor VRTs (the same XML reads other files from another folder).

``content_record`` is what an output keeps of its input's content (size, SHA-256 of its ends and of the
whole, its sidecars'), so that ``same_as_recorded`` knows the scene again when the file has moved (a
delivery re-sent under another name or folder, the old path gone), by the same cheap-first steps:
only inputs of a recorded size are read, at their ends, and through only where the ends match.
Reading through is told to ``progress`` (``HashProgress``; ``tiles.hashing_progress`` draws it): two
same-size multi-GB scenes take a while before a batch's bar.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from tiles.pam import statistics_only
from tiles.rasterpath import (
    SIDECAR_SUFFIXES,
    STEM_SIDECAR_SUFFIXES,
    RasterPath,
    absolute_path,
    is_virtual,
)
from tiles.splits import file_sha256, stream_sha256

__all__ = ["HashProgress", "content_record", "file_key", "recorded_sidecars", "same_as_recorded", "same_content"]

#: bytes read at each end of a file before the whole of it is hashed
ENDS = 2**16
#: files beside ``x.tif`` named ``x`` + one of these that decide what GDAL reads, besides world files
#: and the others of ``STEM_SIDECAR_SUFFIXES`` (an ENVI raster's header)
_MORE_STEM_SIDECARS = (".hdr",)

#: ``progress(total bytes, files)``: entered before files are read through (SHA-256), giving a function
#: told the bytes of each block read; the caller decides whether that many bytes are worth a word
HashProgress = Callable[[int, int], AbstractContextManager[Callable[[int], None]]]


def file_key(path: RasterPath) -> str:
    """What names one scene file: its real path (a link counts as the file it leads to); a virtual
    location (``/vsizip//a.zip/b.tif``, a subdataset) as it is written (``os.path.realpath`` would
    take it for a relative path)."""
    return str(path) if is_virtual(path) else os.path.realpath(path)


def _sidecars(path: str) -> dict[str, str]:
    """The sidecars beside the raster ``path`` (by its name, as GDAL looks for them, case aside):
    what each is (its name less the raster's stem: ``.tif.aux.xml``, ``.tfw``) -> its path."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    wanted = {(name + s).lower(): name[len(stem):] + s for s in SIDECAR_SUFFIXES}
    wanted |= {(stem + s).lower(): s for s in (*STEM_SIDECAR_SUFFIXES, *_MORE_STEM_SIDECARS)}
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return {}
    found = {wanted[n.lower()].lower(): os.path.join(folder, n) for n in names
             if n.lower() in wanted and os.path.isfile(os.path.join(folder, n))}
    # statistics a GIS wrote while browsing are no part of the scene (tiles.pam)
    return {kind: f for kind, f in found.items() if not (kind.endswith(".aux.xml") and statistics_only(f))}


def recorded_sidecars(path: RasterPath) -> list[str]:
    """The real paths of the sidecars ``content_record`` keeps the content of (those beside
    ``path`` by its name): a file GDAL reads with the raster outside them (a ``.tab``, an RPC text)
    is known to a record by its size and time only."""
    return sorted(os.path.realpath(f) for f in _sidecars(absolute_path(path)).values())


def _ends_digest(real: str, size: int) -> str:
    """The SHA-256 of a file's first and last ``ENDS`` bytes (all of a file up to twice that): two
    files of one size that differ there are told apart without reading them through (tiles of a grid
    saved uncompressed all have one size)."""
    with open(real, "rb") as file:
        digest = hashlib.sha256(file.read(ENDS))
        if size > ENDS:
            file.seek(max(size - ENDS, ENDS))
            digest.update(file.read())
    return digest.hexdigest()


@contextmanager
def _no_progress(total: int, files: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def _read_through(real: str, advance: Callable[[int], None]) -> str:
    """The SHA-256 of the file ``real`` (hex), each block's bytes told to ``advance``."""
    with open(real, "rb") as file:
        return stream_sha256(file, advance)


def _sha256_through(files: Mapping[str, int], progress: HashProgress | None) -> dict[str, str]:
    """The SHA-256 of each of ``files`` (real path -> size) that can be read, all under one
    ``progress`` (a bar over the whole comparison, not one per file)."""
    digests: dict[str, str] = {}
    if not files:
        return digests
    with (progress or _no_progress)(sum(files.values()), len(files)) as advance:
        for real in files:
            try:
                digests[real] = _read_through(real, advance)
            except OSError:
                continue
    return digests


def _content_keys(groups: Mapping[int, list[str]], progress: HashProgress | None) -> dict[str, str]:
    """A key per readable file of ``groups`` (size -> distinct real paths of that size), equal for two
    files of one size exactly when their bytes are: their ends first, the whole file's SHA-256 only
    where the ends of two are the same (all such files read through under one ``progress``)."""
    ends: dict[str, str] = {}
    through: dict[str, int] = {}
    for size, reals in groups.items():
        of_size: dict[str, str] = {}
        for real in reals:
            try:
                of_size[real] = _ends_digest(real, size)
            except OSError:
                continue
        shared = {e for e, n in Counter(of_size.values()).items() if n > 1}
        through.update({real: size for real, end in of_size.items() if end in shared})
        ends.update(of_size)
    whole = _sha256_through(through, progress)
    return {real: whole.get(real, f"ends:{end}") for real, end in ends.items()
            if real not in through or real in whole}


def _sidecar_digests(path: RasterPath) -> tuple[tuple[str, str], ...]:
    """The sidecars beside ``path`` (by its name) as (kind, SHA-256) pairs, sorted (OSError when one
    cannot be read)."""
    return tuple(sorted((kind, file_sha256(Path(os.path.realpath(f))))
                        for kind, f in _sidecars(absolute_path(path)).items()))


def _compared(path: RasterPath) -> bool:
    """Whether ``path``'s content is compared at all: a local file, not a VRT (its XML reads other files)."""
    return not is_virtual(path) and not str(path).lower().endswith(".vrt")


def content_record(path: RasterPath) -> dict[str, Any] | None:
    """What an output keeps of its input's content, for ``same_as_recorded``: ``bytes``, ``ends_sha256``
    (its first and last 64 KiB), ``sha256`` (the whole file) and ``sidecars`` (kind -> SHA-256); None
    for an input that is not compared (virtual, a VRT) or cannot be read.

    Why the whole file's hash: once the file has moved, the old one is not there to be read again;
    the ends let most files of one size be told apart without reading them through."""
    if not _compared(path):
        return None
    real = os.path.realpath(path)
    try:
        size = os.stat(real).st_size
        return {"bytes": size, "ends_sha256": _ends_digest(real, size), "sha256": file_sha256(Path(real)),
                "sidecars": dict(_sidecar_digests(path))}
    except OSError:
        return None


def same_as_recorded(paths: Sequence[RasterPath], records: Mapping[str, Any],
                     progress: HashProgress | None = None) -> dict[RasterPath, str]:
    """Each of ``paths`` whose content is that of one of ``records`` (a name -> its ``content_record``,
    e.g. an earlier output's input, which may be gone) -> the first such name, in ``records``' order.

    Cheap first, as ``same_content``: only inputs of a recorded size are read, at their ends; only
    those whose ends a record of that size has are read through (SHA-256, each real file once, told
    to ``progress``), and their sidecars then compared. A record that is not a dict of those fields
    matches nothing."""
    by_size: dict[int, list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for name, record in records.items():
        if isinstance(record, Mapping) and isinstance(record.get("bytes"), int):
            by_size[record["bytes"]].append((name, record))
    ends: dict[str, str] = {}
    through: dict[str, int] = {}
    candidates: list[tuple[RasterPath, str, list[tuple[str, Mapping[str, Any]]]]] = []
    for p in paths if by_size else ():
        if not _compared(p):
            continue
        try:
            real = os.path.realpath(p)
            size = os.stat(real).st_size
            if size not in by_size:
                continue
            if real not in ends:
                ends[real] = _ends_digest(real, size)
        except OSError:
            continue
        matching = [(name, r) for name, r in by_size[size] if r.get("ends_sha256") == ends[real]]
        if matching:
            candidates.append((p, real, matching))
            through[real] = size
    whole = _sha256_through(through, progress)
    found: dict[RasterPath, str] = {}
    for p, real, matching in candidates:
        matching = [(name, r) for name, r in matching if real in whole and r.get("sha256") == whole[real]]
        if not matching:
            continue
        try:
            sidecars = dict(_sidecar_digests(p))
        except OSError:
            continue
        name = next((name for name, r in matching if r.get("sidecars") == sidecars), None)
        if name is not None:
            found[p] = name
    return found


def same_content(paths: Sequence[RasterPath], progress: HashProgress | None = None) -> dict[RasterPath, RasterPath]:
    """Each of ``paths`` that is the same scene as one before it -> the first such path.

    Local files of equal size are compared by their bytes (each real file read once at most: links
    to one file are not read, files that differ at their ends are read there only, the others
    through, SHA-256, all of them under one ``progress``) and then by their sidecars' (the same
    kinds, of the same bytes); a file that cannot be read is no one's copy (its job says why it fails)."""
    sizes: dict[int, list[tuple[RasterPath, str]]] = defaultdict(list)
    for p in paths:
        if not _compared(p):
            continue
        try:
            sizes[os.stat(p).st_size].append((p, os.path.realpath(p)))
        except OSError:
            continue
    sizes = {size: group for size, group in sizes.items() if len(group) > 1}
    reals_of = {size: list(dict.fromkeys(real for _, real in group)) for size, group in sizes.items()}
    # every size's files read through under one progress: one bar for the whole comparison
    content = _content_keys({size: reals for size, reals in reals_of.items() if len(reals) > 1}, progress)
    content |= {reals[0]: "one file" for reals in reals_of.values() if len(reals) == 1}
    found: dict[RasterPath, RasterPath] = {}
    for size, group in sizes.items():
        same = [(p, (size, content[real])) for p, real in group if real in content]
        holders = Counter(key for _, key in same)
        first_of: dict[tuple, RasterPath] = {}
        for p, key in same:
            if holders[key] < 2:
                continue  # no other input holds these bytes: its sidecars are not read
            try:
                sidecars = _sidecar_digests(p)
            except OSError:
                continue
            first = first_of.setdefault((key, sidecars), p)
            if first != p:
                found[p] = first
    return found
