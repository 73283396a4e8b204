"""A batch's outcome per input as JSON in its output folder (``DIR/batch.json``), rewritten as inputs finish.

Why: batches of scenes run from scripts, CI jobs and cron, which must tell which inputs succeeded,
were skipped as already done, were run again or failed (and why) without parsing the human output
(a bar, counts, warning and error lines on two streams). The file is replaced atomically (written
beside it, then renamed) each time an input finishes, so a reader never sees half a file, and a
batch killed half-way leaves one that says what finished and what did not (``state`` stays
``running``, with the ``pid`` that is no longer alive).

Each input's ``status`` is one of:

- ``pending``: not finished (yet; after an interruption, never);
- ``done``: run by this batch, output written;
- ``redone``: run again by this batch, its earlier output (made for another request) replaced;
- ``skipped``: its output was already current, nothing run;
- ``failed``: ``error`` says why in one line; nothing of this run was kept (an earlier output that
  was not current stays where it was: ``previous_output``).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tiles.batch import BatchReport
from tiles.rasterpath import RasterPath

__all__ = ["STATUSES", "SUMMARY_NAME", "BatchSummary", "summary_command"]

#: the summary's file name in the batch's output folder
SUMMARY_NAME = "batch.json"
#: every input's ``status``, in the order ``totals`` lists them
STATUSES = ("done", "redone", "skipped", "failed", "pending")
#: bumped when a field changes meaning or goes away (new fields may be added without it)
SUMMARY_VERSION = 1

#: what a finished input adds to its entry, from its output and the job's result (None when skipped)
Details = Callable[[Path, Any], dict[str, Any]]


def summary_command(folder: Path) -> str | None:
    """The command that wrote ``folder``'s batch summary (its header's ``command``: ``geoseg predict``,
    ``geoseg tile``), None without a readable one."""
    try:
        data = json.loads((folder / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) else None


def command_line() -> list[str]:
    """The command line this process was started with, as a shell would repeat it: ``geoseg`` first (the
    path of its script, or of ``python -m geoseg``'s ``__main__``, said nothing). Why: a retry by a
    scheduler (cron, Airflow) read the batch's ``command`` and found only ``geoseg predict``."""
    return ["geoseg", *sys.argv[1:]]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class BatchSummary:
    """The summary of one batch run, written to ``path`` by every ``update``, ``finish`` or ``interrupt``.

    ``header``: fields saying what ran (the command, its version); ``details(output, result)``: the
    fields a finished input adds (counts, warnings), each input's entry holding ``no_details`` until
    then (the same keys, so that every entry has them)."""

    def __init__(self, path: Path, inputs: Sequence[RasterPath], output_for: Callable[[RasterPath], Path],
                 header: dict[str, Any] | None = None, details: Details | None = None,
                 no_details: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.inputs = list(inputs)
        self.output_for = output_for
        self.header = dict(header or {})
        self.details = details
        self.no_details = dict(no_details or {})
        self.started = _now()
        self._report = BatchReport()
        self._details: dict[str, dict[str, Any]] = {}  # a finished input's details, read once
        self._unwritable = False

    def update(self, report: BatchReport) -> None:
        """Write the summary of a batch still running (``run_batch``'s ``on_update``)."""
        self._report = report
        self._write("running", None)

    def finish(self, exit_code: int, batch_warnings: Sequence[str] = ()) -> None:
        """Write the summary of a batch that ran to its end."""
        self._write("finished", exit_code, batch_warnings)

    def stop(self, exit_code: int, error: str | None = None) -> None:
        """Write the summary of a batch stopped before its end: what did not finish stays pending.
        ``state`` is ``interrupted`` (Ctrl-C, SIGTERM) without an ``error``, else ``aborted`` with
        the error that stopped it (a Dask scheduler that cannot be reached)."""
        self._write("interrupted" if error is None else "aborted", exit_code, error=error)

    def entry(self, input_path: RasterPath) -> dict[str, Any]:
        """One input's record: ``input``, ``status``, ``output``, ``seconds``, ``error``, then its details."""
        name, report = str(input_path), self._report
        output = Path(self.output_for(input_path))
        redone = name in report.redone
        if name in report.done:
            status = "redone" if redone else "done"
        elif name in report.skipped:
            status = "skipped"
        elif name in report.failed:
            status = "failed"
        else:
            status = "pending"
        entry: dict[str, Any] = {"input": name, "status": status,
                                 "output": str(output) if status in ("done", "redone", "skipped") else None,
                                 "seconds": report.seconds.get(name), "error": None}
        if status == "failed":
            entry["error"] = report.failed[name].splitlines()[0] if report.failed[name] else "failed"
            if redone and output.exists():
                entry["previous_output"] = str(output)
        entry.update(self.no_details)
        if entry["output"] is not None and self.details is not None:
            if name not in self._details:
                try:
                    self._details[name] = self.details(output, report.done.get(name))
                except Exception as exc:  # noqa: BLE001 -- an output whose details cannot be read: said, not fatal
                    self._details[name] = {"details_error": f"{type(exc).__name__}: {exc}"}
            entry.update(self._details[name])
        return entry

    def as_dict(self, state: str, exit_code: int | None, batch_warnings: Sequence[str] = (),
                error: str | None = None) -> dict[str, Any]:
        """The whole summary: the header, ``state`` (running, finished, interrupted, aborted),
        ``exit_code`` (None while running), ``error`` (what aborted it), ``totals`` per status, the
        batch's own ``warnings`` and one entry per input, in the order given."""
        entries = [self.entry(p) for p in self.inputs]
        totals = {"inputs": len(entries)} | {s: sum(e["status"] == s for e in entries) for s in STATUSES}
        return {"summary_version": SUMMARY_VERSION, **self.header, "state": state, "exit_code": exit_code,
                "error": error, "pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
                "updated": _now(),
                "totals": totals, "warnings": list(batch_warnings), "inputs": entries}

    def _write(self, state: str, exit_code: int | None, batch_warnings: Sequence[str] = (),
               error: str | None = None) -> None:
        """Replace the file at once (a temporary file beside it, renamed): never half written. A
        failed write warns once and the batch goes on: its outputs matter more than their summary."""
        text = json.dumps(self.as_dict(state, exit_code, batch_warnings, error), indent=1, allow_nan=False) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # one per process writing here
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if not self._unwritable:
                self._unwritable = True
                warnings.warn(f"cannot write the batch summary {self.path}: {exc.strerror or exc}", stacklevel=2)
