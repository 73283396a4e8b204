"""Keep server paths out of what clients read: upload refusals and job errors.

GDAL and tifffile name the file they failed on, i.e. its place in the data dir
(``/srv/geoseg/uploads/<uuid>.tif: Cannot read TIFF header``): that tells a
client about the server's layout and nothing useful about its own file.
(``api.pipeline_runner.hide_server_paths`` does the same for report.json, but it
lives beside the pipeline, which the server process must not import.)
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

# The directory part of an absolute POSIX path not inside a URL or a relative path.
_DIRECTORIES = re.compile(r"(?<![\w.:/~-])/(?:[^/\s'\"(),;:]+/)+")


def redact_paths(text: str, named: Mapping[str | Path, str] | None = None) -> str:
    """``text`` with each string or path of ``named`` replaced by its label (in order: give a
    full path before its file name), then the directories of any other absolute path dropped
    (its file name is kept: it still says which file)."""
    for found, label in (named or {}).items():
        text = text.replace(str(found), label)
    return _DIRECTORIES.sub("", text)


def name_upload(text: str, stored_as: str, client_name: str) -> str:
    """``text`` with the file name an upload is stored under (``input.tif``) replaced by the
    client's own, where it stands as a whole name (not inside ``my_input.tif``), in one pass (a
    client's name that contains the stored one is not replaced again). Why: GDAL and geoseg's
    readers name the file they read, so a job's error said ``input.tif: no valid pixels`` of
    an upload the client knows as ``nodata.tif`` (report.json already names it so)."""
    whole = re.compile(rf"(?<![\w.-]){re.escape(stored_as)}(?![\w-]|\.\w)")
    return whole.sub(lambda _: client_name, text)
