"""Raster locations as the user gives them: local files, GDAL virtual paths, URLs and subdataset names.

Why: GDAL reads ``/vsizip//tmp/a.zip/b.tif``, ``/vsicurl/https://...``, ``https://...`` or
``GPKG:/tmp/a.gpkg:table`` (one raster of a file holding several), but ``pathlib.Path`` collapses
the ``//`` of the first (GDAL then looks for a relative path) and ``is_file()`` is False for all of
them. Such locations stay strings, are checked by opening them, and are named after their last path
component (a subdataset after its file and its own name: ``a_table``). Vector label files are located
the same way (OGR is GDAL): ``/vsizip//tmp/a.zip/labels.geojson``, or the ``labels.geojson`` beside a
scene in its archive (``beside``).
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

__all__ = ["RASTER_SUFFIXES", "RasterPath", "absolute_raster_path", "archive_member", "as_raster_path", "beside",
           "folder_name", "is_subdataset", "is_virtual", "local_file_of", "location_exists", "not_found", "parent_of",
           "raster_exists", "raster_name", "raster_stem", "rasters_in", "sidecar_of", "split_sidecars",
           "subdataset_file", "virtual_folder_files", "vrt_sources", "vrts_over_inputs"]

RasterPath = str | Path

#: what a folder input contributes: raster files, not their sidecars (.aux.xml, .ovr, .msk, world files)
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")
#: files GDAL (or QGIS, ArcGIS) keep beside a raster ``x.tif`` as ``x.tif`` + one of these: its
#: metadata and statistics, external overviews, external mask, ArcGIS metadata
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".xml")
#: files kept beside a raster ``x.tif`` as ``x`` + one of these: world files, ERDAS overviews and .aux
STEM_SIDECAR_SUFFIXES = (".wld", ".tfw", ".tifw", ".tiffw", ".jgw", ".jpgw", ".pgw", ".pngw", ".j2w", ".aux",
                         ".rrd", ".prj")


#: how a GDAL subdataset name starts: its driver's short name and a colon (``GPKG:a.gpkg:table``,
#: ``NETCDF:"a.nc":var``, ``HDF5:"a.h5"://path``, ``GTIFF_DIR:2:a.tif``), as ``gdalinfo`` lists them;
#: in any case, as GDAL takes it (rasterio lists ``netcdf:a.nc:var``)
_SUBDATASET = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):(.+)$")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (a line end's ``\r`` above all), which a terminal does
    not show as written."""
    return any(c < " " or c == "\x7f" for c in text)


def line_end_hint(text: str, source: str) -> str:
    """What a carriage return in ``text`` most likely means (``source``, e.g. "a list", saved with Windows
    line ends), for a message; "" without one."""
    return f"{source} saved with Windows line ends? dos2unix it" if "\r" in text else ""


def absolute_path(path: str | os.PathLike) -> str:
    """``path`` made absolute as the kernel reads it: the part up to its last ``..`` resolved, links
    included, the rest as written (a link's own name kept: sidecars are found beside it).

    Why: ``os.path.abspath`` drops ``x/..`` as text. With ``latest`` a link to ``nas/2026/latest``,
    ``latest/../scene.tif`` (the shell's ``nas/2026/scene.tif``) read another ``scene.tif`` beside
    the link, and ``--out latest/../results`` wrote the results beside it too, exit 0."""
    text = os.fspath(path)
    parts = Path(text).parts
    if ".." not in parts:
        return os.path.abspath(text)
    last = len(parts) - 1 - parts[::-1].index("..")
    return os.path.abspath(os.path.join(os.path.realpath(os.path.join(*parts[:last + 1])), *parts[last + 1:]))


def _subdataset_parts(text: str) -> tuple[int, int, str] | None:
    """Where the file lies in a subdataset name (start and end in ``text``) and the subdataset's own
    name (``table`` of ``GPKG:a.gpkg:table``, ``path/var`` of ``HDF5:"a.h5"://path/var``); None for
    anything else, a local file that exists under such a name included."""
    match = _SUBDATASET.match(text)
    if match is None or match.group(2).startswith("//") or os.path.exists(text):
        return None  # not a name; or a URL with an upper-case scheme
    start, rest = match.start(2), match.group(2)
    if rest.startswith('"'):  # NETCDF:"a.nc":var, HDF5:"a.h5"://path
        end = rest.find('"', 1)
        if end < 0:
            return None
        member = rest[end + 1:].lstrip(":/")
        return (start + 1, start + end, member) if member else None
    head, _, tail = rest.partition(":")
    if head.isdigit() and tail:  # GTIFF_DIR:2:a.tif, the index first
        return start + len(head) + 1, len(text), head
    file, _, member = rest.rpartition(":")
    return (start, start + len(file), member) if file and member else None


def is_subdataset(location: RasterPath) -> bool:
    """True for a GDAL subdataset name (``GPKG:a.gpkg:table``, ``NETCDF:"a.nc":var``): one raster of
    a file that holds several, which GDAL opens by that name."""
    return _subdataset_parts(str(location)) is not None


def is_virtual(location: RasterPath) -> bool:
    """True for a GDAL virtual file system path (``/vsi...``), a URL (``scheme://...``) or a GDAL
    subdataset name (``GPKG:a.gpkg:table``): a location GDAL opens that is no file name."""
    text = str(location)
    return text.startswith("/vsi") or "://" in text or is_subdataset(text)


def as_raster_path(location: RasterPath) -> RasterPath:
    """A ``Path`` for a local file; a virtual path or URL unchanged, as a string."""
    return str(location) if is_virtual(location) else Path(location)


def absolute_raster_path(location: RasterPath) -> RasterPath:
    """A local file as an absolute ``Path`` (it means the same file from any folder: a Dask worker's,
    ``geoseg eval``'s); a subdataset name, or a file in a local archive (``/vsizip/in/a.zip/b.tif``),
    with its local file made absolute; another virtual path or URL unchanged, as a string."""
    text = str(location)
    parts = _subdataset_parts(text)
    if parts is not None:
        start, end, _ = parts
        file = text[start:end]
        return text if is_virtual(file) else text[:start] + absolute_path(file) + text[end:]
    match = _ARCHIVE_VSI.match(text)
    if match is not None:
        return _absolute_archive_path(text, match)
    return text if is_virtual(location) else Path(absolute_path(location))


def _absolute_archive_path(text: str, match: re.Match) -> str:
    """``/vsizip/`` (a tar, gzip, 7z or rar alike) of a relative local archive with the archive made
    absolute: ``/vsizip/in/a.zip/b.tif`` run in ``/tmp`` -> ``/vsizip//tmp/in/a.zip/b.tif``; an
    absolute, chained or missing one unchanged. Why: report.json names the input by it, and
    ``geoseg eval`` run from another folder found it gone."""
    prefix, rest = text[:match.start(2)], match.group(2)
    if rest.startswith("{"):  # /vsizip/{in/a.zip}/b.tif
        end = rest.find("}")
        file = rest[1:end] if end > 0 else ""
        if file and not file.startswith("/") and os.path.isfile(file):
            return prefix + "{" + absolute_path(file) + rest[end:]
        return text
    if rest.startswith("/"):  # absolute, or chained (/vsizip//vsicurl/...)
        return text
    split = _split_archive(rest)
    if split is None:
        return text
    archive, member = split
    return prefix + absolute_path(archive) + (f"/{member}" if member else "")


def raster_name(location: RasterPath) -> str:
    """The file name: ``b.tif`` for ``/vsizip//tmp/a.zip/b.tif`` and ``https://h/b.tif?sig=x``; the
    file's and the subdataset's for a subdataset name: ``a.gpkg:table`` for ``GPKG:/tmp/a.gpkg:table``."""
    if not is_virtual(location):
        return Path(location).name
    text = str(location)
    parts = _subdataset_parts(text)
    if parts is not None:
        start, end, member = parts
        return f"{raster_name(text[start:end])}:{member}"
    if "://" in text:  # the URL, from its scheme on, without query or fragment
        text = urlsplit(text[text.rfind("/", 0, text.index("://")) + 1:]).path
    return PurePosixPath(text).name


def check_utf8_name(location: RasterPath) -> None:
    """ValueError for a path whose name is not UTF-8 (bytes a Windows share or an old zip wrote in
    Latin-1, which Python holds as surrogates): GDAL takes names as UTF-8, and rasterio failed with
    "'utf-8' codec can't encode character '\\udce9' ... surrogates not allowed", not naming the file."""
    text = str(location)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        name = raster_name(location)
        shown = str(os.fsencode(name))[2:-1]  # its bytes: caf\xe9.tif
        raise ValueError(f"{name}: its file name is not UTF-8 (the bytes {shown}: Latin-1 from a Windows share or "
                         f"an old zip?), which GDAL cannot open: rename it to UTF-8, e.g. convmv -f latin1 -t utf8 "
                         f"--notest FILE") from None


def raster_stem(location: RasterPath) -> str:
    """The file name without its last suffix (a batch's output folder); for a subdataset name, the
    file's and the subdataset's joined by ``_`` (``a_table`` for ``GPKG:a.gpkg:table``): the
    subdatasets of one file go to folders of their own."""
    text = str(location)
    parts = _subdataset_parts(text)
    if parts is not None:
        start, end, member = parts
        return f"{raster_stem(text[start:end])}_{re.sub(r'[^A-Za-z0-9.-]+', '_', member).strip('_')}"
    return PurePosixPath(raster_name(location)).stem


#: GDAL's virtual file systems that read a local archive or compressed file: ``/vsizip//tmp/a.zip/b.tif``
_ARCHIVE_VSI = re.compile(r"^/vsi(zip|tar|gzip|7z|rar)/(.+)$")


def _split_archive(rest: str) -> tuple[str, str] | None:
    """The archive and the member of a plain archive path after its ``/vsiX/`` (``/tmp/a.zip`` and
    ``sub/b.tif`` of ``/tmp/a.zip/sub/b.tif``; the member empty for a compressed file): the archive is
    the shortest prefix that is a file. None when none is (the archive is gone)."""
    pieces = rest.split("/")
    for n in range(1, len(pieces) + 1):
        candidate = "/".join(pieces[:n])
        if candidate and os.path.isfile(candidate):
            return candidate, "/".join(pieces[n:])
    return None


def local_file_of(location: RasterPath) -> str | None:
    """The local file GDAL reads a virtual location from: the zip of ``/vsizip//tmp/a.zip/b.tif``
    (a tar, gzip, 7z or rar alike), the GeoPackage of ``GPKG:/tmp/a.gpkg:table``, as an absolute
    path; None for a URL, an in-memory or cloud path, a local file itself, or a file that is gone.

    Why: report.json records the bytes and time of this file, so a batch predicts again when the
    archive or container is replaced under the same name."""
    text = str(location)
    parts = _subdataset_parts(text)
    if parts is not None:
        file = text[parts[0]:parts[1]]
        return local_file_of(file) if is_virtual(file) else (absolute_path(file) if os.path.isfile(file) else None)
    match = _ARCHIVE_VSI.match(text)
    if match is None:
        return None
    rest = match.group(2)
    if rest.startswith("{"):  # /vsizip/{/tmp/a.zip}/b.tif
        file = rest[1:rest.find("}")] if "}" in rest else ""
        return local_file_of(file) if is_virtual(file) else (absolute_path(file) if os.path.isfile(file) else None)
    if rest.startswith("/vsi"):  # /vsizip//vsicurl/https://...: chained
        return local_file_of(rest)
    split = _split_archive(rest)
    return None if split is None else absolute_path(split[0])


def subdataset_file(location: RasterPath) -> RasterPath | None:
    """The file a subdataset name reads (``a.gpkg`` of ``GPKG:a.gpkg:table``, a ``Path`` when local);
    None for anything else."""
    text = str(location)
    parts = _subdataset_parts(text)
    return None if parts is None else as_raster_path(text[parts[0]:parts[1]])


def archive_member(location: RasterPath) -> tuple[str, Path, str | None] | None:
    """(kind, archive, member) of a file GDAL reads from a local archive or compressed file:
    ``("zip", Path("/tmp/a.zip"), "sub/b.tif")`` for ``/vsizip//tmp/a.zip/sub/b.tif`` (a tar alike),
    ``("gzip", Path("/tmp/b.tif.gz"), None)`` for ``/vsigzip//tmp/b.tif.gz``; None for any other
    location, an archive that is not there, or a chained one (``/vsizip//vsicurl/...``)."""
    match = _ARCHIVE_VSI.match(str(location))
    if match is None or match.group(1) not in ("zip", "tar", "gzip") or match.group(2).startswith(("{", "/vsi")):
        return None
    split = _split_archive(match.group(2))
    if split is None:
        return None
    archive, member = split[0], split[1] or None
    if (match.group(1) == "gzip") != (member is None):
        return None
    return match.group(1), Path(absolute_path(archive)), member


def parent_of(location: RasterPath) -> RasterPath:
    """The folder holding a location, as GDAL names it: a local file's folder (a ``Path``); of a file in
    an archive its folder there (``/vsizip//tmp/a.zip/sub`` for ``/vsizip//tmp/a.zip/sub/b.tif``, the
    archive itself at its top); of a compressed file (``/vsigzip/``) or a subdataset, its file's folder.

    Why: ``Path`` collapses the ``//`` of a virtual path, and a subdataset name has no folder of its
    own: ``geoseg tile`` finds the ``labels.geojson`` beside a scene here and names its area after it."""
    text = str(location)
    inner = subdataset_file(text)
    if inner is None and text.startswith("/vsigzip/") and not text.startswith("/vsigzip/{"):
        inner = as_raster_path(text[len("/vsigzip/"):])
    if inner is not None:
        return parent_of(inner)
    if not is_virtual(text):
        return Path(location).parent
    return text.rstrip("/").rpartition("/")[0]


def beside(location: RasterPath, name: str) -> RasterPath:
    """The file ``name`` in the folder holding ``location`` (``parent_of``): ``/vsizip//tmp/a.zip/sub/
    labels.geojson`` beside ``/vsizip//tmp/a.zip/sub/b.tif``."""
    parent = parent_of(location)
    return parent / name if isinstance(parent, Path) else f"{parent}/{name}"


def folder_name(location: RasterPath) -> str:
    """The name of the folder holding a location (``parent_of``): ``sub`` for ``/vsizip//tmp/a.zip/sub/
    b.tif``, ``a.zip`` for ``/vsizip//tmp/a.zip/b.tif``, ``d`` for ``GTIFF_DIR:1:/d/b.tif``."""
    return raster_name(parent_of(location))


def _vsi_listing(location: str) -> list[str] | bool:
    """GDAL's listing of a ``/vsi`` location (through pyogrio): the files under it when it is a
    folder (an archive, or a folder in one), True for a file, False when GDAL finds nothing there."""
    import pyogrio  # here: the CLI imports this module for --help too

    try:
        return list(pyogrio.vsi_listtree(location))
    except NotADirectoryError:
        return True
    except FileNotFoundError:
        return False


def location_exists(location: RasterPath) -> bool:
    """Whether there is a file or folder at a location: on disk for a local path; as GDAL finds it for
    a ``/vsi`` path (a file in an archive); a URL or subdataset name is left to its reader (True)."""
    text = str(location)
    if not is_virtual(text):
        return os.path.exists(text)
    if not text.startswith("/vsi") or is_subdataset(text):
        return True
    return _vsi_listing(text) is not False


def virtual_folder_files(location: RasterPath) -> list[str] | None:
    """The files under a ``/vsi`` folder (``/vsizip//tmp/a.zip``, ``/vsitar//tmp/a.tar/sub``), sub-folders
    included, as GDAL names them, sorted; None for anything else (a file, nothing, a local path)."""
    text = str(location)
    if not text.startswith("/vsi"):
        return None
    listed = _vsi_listing(text.rstrip("/"))
    return None if isinstance(listed, bool) else sorted(name for name in listed if not name.endswith("/"))


def raster_exists(location: RasterPath) -> bool:
    """A local path must be a file; a virtual path or URL must open as a raster (GDAL has no
    cheaper test that works for every virtual file system)."""
    if not is_virtual(location):
        return Path(location).is_file()
    import rasterio  # here: the CLI imports this module for --help too
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(str(location)):
            return True
    except RasterioIOError:
        return False


def not_found(location: RasterPath) -> str:
    """The message for an input that does not exist; a pattern the shell left as it was (it matched
    no file: ``scenes/*.tif`` in an empty folder) is named as such, and so is a subdataset name
    whose file or subdataset GDAL did not find (``gdalinfo FILE`` lists those it holds)."""
    hint = " (a shell pattern that matched no file?)" if any(c in raster_name(location) for c in "*?[") else ""
    parts = _subdataset_parts(str(location))
    if not is_virtual(location) and Path(location).is_symlink():
        try:
            Path(location).resolve(strict=True)
            looped = False
        except RuntimeError:  # a loop of links (Python 3.11's resolve)
            looped = True
        except OSError as exc:
            looped = exc.errno == errno.ELOOP
        hint = (f" (a link to {os.readlink(location)}"
                + (" that leads back to itself: a loop of links)" if looped
                   else ", which does not exist: a share not mounted?)"))
    elif parts is not None:
        file = str(location)[parts[0]:parts[1]]
        hint = (f" (no such file: {file})" if not is_virtual(file) and not os.path.exists(file)
                else f" (GDAL found no such subdataset: gdalinfo {file} lists those it holds)")
    if has_control_character(str(location)):  # a list saved with Windows line ends: 'ok.tif\r', the \r unseen
        cr = line_end_hint(str(location), "a list")
        return f"input not found: {str(location)!r} (its name holds a control character{': ' + cr if cr else ''})"
    return f"input not found: {location}{hint}"


#: sidecars GDAL can open as rasters of their own, and what they hold
RASTER_SIDECARS = {".ovr": "external overviews", ".msk": "external mask"}


def sidecar_of(location: RasterPath) -> str | None:
    """Why ``location`` is no scene: 'the external overviews of x.tif' for ``x.tif.ovr`` (or the
    mask of ``x.tif.msk``), ``x.tif`` beside it or not; else None.

    Why: GDAL opens such a file as a raster, so ``geoseg predict x.tif.ovr`` predicted the
    overviews as a scene of their own (half the resolution, no georeferencing: buildings in pixel
    coordinates) and ``x.tif.msk`` failed as '1 band(s)' (whose hint, ``--bands 1,1,1``, then
    predicted buildings from the mask), its raster beside it or not."""
    if is_virtual(location):
        return None
    name = absolute_path(location)
    stem, suffix = os.path.splitext(name)
    kind = RASTER_SIDECARS.get(suffix.lower())
    if kind is None or Path(stem).suffix.lower() not in RASTER_SUFFIXES:
        return None
    if not os.path.exists(stem):
        return f"the {kind} of {Path(stem).name}, which is not beside it"
    return f"the {kind} of {Path(stem).name}, which GDAL reads with it"


def rasters_in(folder: Path) -> list[Path]:
    """The raster files directly inside ``folder``, sorted by name, links to missing files included
    (they fail as not found). Not its sub-folders: results written under the folder must not become
    inputs of the next run. Not hidden files: macOS leaves an AppleDouble ``._scene.tif`` of
    metadata beside each file it copies to a USB disk, a network share or a zip, and each was a
    failed input that made the whole batch exit 1."""
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() or _broken_link(p)) and not p.name.startswith(".")
                  and p.suffix.lower() in RASTER_SUFFIXES)


def is_hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` (under ``root``) is a hidden file or lies in a hidden folder: not data, like
    the AppleDouble ``._scene.tif`` macOS writes beside each file it copies (``rasters_in``)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _broken_link(path: Path) -> bool:
    """A symbolic link to nothing (a folder of links into a share that is not mounted): an input
    that fails as not found. Left out, such scenes were never predicted and the batch exited 0."""
    return path.is_symlink() and not path.exists()


def split_sidecars(paths: list[RasterPath]) -> tuple[list[RasterPath], list[RasterPath]]:
    """``paths`` without the sidecars of another of them (``x.tif.aux.xml``, ``x.tif.ovr``,
    ``x.tif.msk``, ``x.tfw``... beside ``x.tif``), and those sidecars; both in order.

    Why: ``geoseg predict scenes/* --out r/`` takes what the shell's pattern matched, sidecars
    included: the .aux.xml and .msk each failed the batch (exit 1, every scene done) and an .ovr,
    a GeoTIFF of the raster's overviews without georeferencing, was predicted as a scene of its
    own. GDAL reads each with its raster. A sidecar given without its raster is left to be
    predicted (and fail) as given."""
    # by the names beside each other, as GDAL finds sidecars (not where links lead)
    local = {absolute_path(p) for p in paths if not is_virtual(p)}
    stems = {os.path.splitext(p)[0] for p in local if Path(p).suffix.lower() in RASTER_SUFFIXES}

    def is_sidecar(path: RasterPath) -> bool:
        if is_virtual(path):
            return False
        name = absolute_path(path)
        others = local - {name}
        if any(name.lower().endswith(suffix) and name[:-len(suffix)] in others for suffix in SIDECAR_SUFFIXES):
            return True
        stem, suffix = os.path.splitext(name)
        return suffix.lower() in STEM_SIDECAR_SUFFIXES and stem in stems

    kept, sidecars = [], []
    for p in paths:
        (sidecars if is_sidecar(p) else kept).append(p)
    return kept, sidecars


def vrt_sources(location: RasterPath) -> list[str]:
    """The local files a GDAL VRT (``.vrt``) reads, those of the VRTs it reads included, as GDAL
    names them (for a tile read through a virtual path, ``/vsizip//a.zip/b.tif``, the zip);
    [] for any other raster, a virtual path or URL, or a VRT that does not open.

    Why: a VRT's own bytes and time do not change when a tile it mosaics is replaced, so a batch
    that compared only those skipped the VRT's new delivery as already done (and a ``--mosaic`` of
    tiles in a zip skipped a new zip)."""
    if is_virtual(location) or Path(location).suffix.lower() != ".vrt":
        return []
    import rasterio  # here: the CLI imports this module for --help too
    from rasterio.errors import RasterioIOError

    found: list[str] = []
    todo, seen = [os.path.realpath(location)], set()
    while todo:
        vrt = todo.pop(0)
        seen.add(vrt)
        try:
            with rasterio.open(vrt) as src:
                files = list(src.files)
        except RasterioIOError:
            continue
        for name in files:
            if is_virtual(name):
                name = local_file_of(name)
                if name is None:
                    continue
            if os.path.realpath(name) in seen or name.lower().endswith(".aux.xml"):
                continue
            if name not in found:
                found.append(name)
            if name.lower().endswith(".vrt"):
                todo.append(os.path.realpath(name))
    return found


def vrts_over_inputs(paths: list[RasterPath]) -> dict[RasterPath, list[RasterPath]]:
    """Each VRT among ``paths`` that reads other entries of ``paths`` (the files it reads, as
    ``vrt_sources`` finds them, compared by their real paths), and those entries, in order.

    Why: a folder of tiles often holds the ``gdalbuildvrt`` index over them; given the folder, a
    command reads the same ground twice, through the VRT and through each tile (``geoseg predict``
    predicts it twice, ``geoseg tile`` cuts it into chips twice)."""
    local = {os.path.realpath(p): p for p in paths if not is_virtual(p)}
    found: dict[RasterPath, list[RasterPath]] = {}
    for p in paths:
        inside = [local[real] for real in dict.fromkeys(os.path.realpath(f) for f in vrt_sources(p)) if real in local]
        if inside:
            found[p] = inside
    return found
