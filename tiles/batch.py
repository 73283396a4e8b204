"""Run a per-file job over many files: progress bar, resumable, local or Dask cluster.

Why: scenes come by the hundred; a crash at file 97 must not redo files 1-96, and
big jobs should run on an existing Dask cluster without code changes. The job is a
picklable callable ``work(input_path, output_path) -> dict | None``; ``output_for``
maps an input to its output path (file or folder). An input whose output already
exists is skipped, unless ``is_current(input, output)`` says that output was made for
another request (other options, another input of the same name): that input is run
again and its old output replaced only once the new one is complete (an error raised
by ``is_current`` fails the input and leaves its output alone). Each job writes
to a temporary sibling ``.<name>.<run id>.part`` (its own per run of ``run_batch``) that is
renamed to the output only when the job succeeds, so a half-written output never counts as
finished. A job holds its output's lock (``tiles.output_lock``) from before it starts until the
output is in place: a worker of an interrupted run still writing that output (Dask cannot stop a
running task) is waited for, then the output is looked at again (skipped if it is now current),
and scratch left by dead runs is removed, never a live run's. Failures are
collected, not raised, so one bad file does not stop the batch, nor does a Dask worker
that dies on one (out of memory, a crash in native code): that input is a failure. An input of the
same content as an earlier one (``duplicates``: a copy, a link under another name) is not run:
``copy_output`` gives it the earlier one's output once that is in place.

Usage::

    report = run_batch(paths, lambda p: out / f"{p.stem}.tif", my_job,
                       scheduler=None)        # None: local processes; "sync": in-process;
                                              # "tcp://host:8786": existing Dask cluster
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from tiles.errors import PLAIN_KINDS
from tiles.output_lock import lock_path, output_lock
from tiles.progress_console import logs_lines, progress_console
from tiles.rasterpath import RasterPath, has_control_character, raster_name

__all__ = ["BatchReport", "JobOutcome", "parse_scheduler", "part_path", "run_batch", "wait_line"]

_ADDRESS = re.compile(r"^([a-z0-9]+://)?(\[[0-9a-fA-F:]+\]|[^:/\s\[\]]+):\d+/?$")


def parse_scheduler(value: str) -> str | None:
    """A ``--scheduler`` value as ``run_batch`` takes it: 'local' -> None (local processes), 'sync' -> 'sync'
    (in-process), a Dask address such as tcp://host:8786 as it is; anything else a one-line ValueError.

    Why: one vocabulary for ``geoseg tile`` and ``geoseg predict``; tile passed 'local' (README's word for
    predict) to Dask, which ended in a 70-line traceback ('missing port number in address')."""
    if value in ("local", "sync"):
        return None if value == "local" else value
    if not _ADDRESS.match(value):
        raise ValueError(f"--scheduler expects 'local', 'sync' or a Dask scheduler address such as "
                         f"tcp://host:8786, got {value!r}")
    return value


Work = Callable[[RasterPath, Path], Any]


@dataclass
class BatchReport:
    """What happened to each input."""

    done: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: inputs whose earlier output was not current (``is_current``), run again (also in done or failed)
    redone: list[str] = field(default_factory=list)
    #: seconds each job run by this batch took where it ran (absent when its worker died)
    seconds: dict[str, float] = field(default_factory=dict)
    #: inputs given the output of another input of the same content (``run_batch``'s ``duplicates``),
    #: not run: input -> that other input (also in done)
    copied: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def failure_line(name: str, error: str, plain: Collection[str] = PLAIN_KINDS) -> str:
    """A failed input's line for the user, ``name: message``, from its ``BatchReport.failed`` entry
    (``Kind: message`` and a traceback): its first line, the name said once, the kind named only when
    it is not one of ``plain`` (``name: KeyError: 'x'``). Why: a job's own errors often start with the
    input's name too, and ``geoseg tile`` printed ``kampala.tif: FileNotFoundError: kampala.tif: label
    file ...``; a class name in front of a message written for the user told them nothing more."""
    shown = repr(name) if has_control_character(name) else name
    return f"{shown}: {failure_message(error, plain, name)}"


def failure_message(error: str, plain: Collection[str] = PLAIN_KINDS, name: str | None = None) -> str:
    """``failure_line``'s message alone: the error's first line, ``name: `` left off its start, its kind
    only when not one of ``plain``."""
    kind, sep, message = error.split("\n")[0].partition(": ")  # not splitlines: a name may end in \r
    if not sep or not message:
        return kind
    if name is not None and message.startswith(f"{name}: "):
        message = message[len(name) + 2:]
    return message if kind in plain else f"{kind}: {message}"


#: a run id: the hex digits that name one run_batch's scratch paths
_RUN_ID = re.compile(r"[0-9a-f]{12}")


def new_run_id() -> str:
    """A fresh run id (``run_batch`` makes one per call)."""
    return uuid.uuid4().hex[:12]


def part_path(output: Path, run_id: str) -> Path:
    """Temporary sibling run ``run_id`` writes before it is renamed to ``output``."""
    return output.with_name(f".{output.name}.{run_id}.part")


def _old_path(output: Path) -> Path:
    """Where an out-of-date output waits while its replacement is renamed into place."""
    return output.with_name(f".{output.name}.old")


def _scratch_of(output: Path) -> list[Path]:
    """Every scratch path of ``output`` there is: the part of any run (and ``.<name>.part``, of
    versions before run ids), and the out-of-date output of a run stopped between its renames."""
    prefix = f".{output.name}."
    try:
        names = os.listdir(output.parent)
    except FileNotFoundError:
        return []
    return [output.parent / n for n in names if n.startswith(prefix) and (
        n[len(prefix):] in ("part", "old") or (n.endswith(".part") and _RUN_ID.fullmatch(n[len(prefix):-5])))]


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():  # another user's (a colleague's killed run in a group's folder): said, not kept silently
                warnings.warn(f"{path} could not be removed (another user's scratch?): remove it by hand",
                              stacklevel=2)
        elif path.exists():
            path.unlink()
    except OSError as exc:  # a name too long to exist: raised from a failed input's handler, it stopped the batch
        if exc.errno != errno.ENAMETOOLONG:
            raise


#: bytes a file name may hold on Linux's and macOS's file systems (NAME_MAX)
NAME_MAX = 255


def check_name_fits(output: Path, run_id: str) -> None:
    """``OSError`` (ENAMETOOLONG) naming the limit when ``output``'s scratch names (``part_path``, its
    lock) would be longer than a file name may be. Why: a 254-byte scene name failed in the lock's
    ``[Errno 36] File name too long: '.<name>.<run id>.part'``, which named no fix."""
    longest = max(len(os.fsencode(part_path(output, run_id).name)), len(os.fsencode(lock_path(output).name)))
    if longest > NAME_MAX:
        spare = NAME_MAX - (longest - len(os.fsencode(output.name)))
        raise OSError(errno.ENAMETOOLONG, f"{os.strerror(errno.ENAMETOOLONG)}: the output name {output.name[:40]}... "
                                          f"is {len(os.fsencode(output.name))} bytes, and its scratch names take "
                                          f"{longest - len(os.fsencode(output.name))} more of a file name's "
                                          f"{NAME_MAX}: rename the input to a name of at most {spare} bytes "
                                          f"before its extension")


class JobOutcome(NamedTuple):
    """What became of one input run by a batch (``seconds`` None: its worker never reported)."""

    input: str
    result: Any
    error: str | None
    seconds: float | None
    #: its output became current while it waited for another run writing it: nothing was run
    skipped: bool = False


#: the Dask event topic on which a worker tells the batch's client that an input waits for another run
WAIT_TOPIC = "tiles.batch.output-wait"


def wait_line(description: str, input_path: RasterPath | str, output_path: Path | str, lock: Path | str) -> str:
    """The line a batch prints once for an input waiting for another run writing its output."""
    return (f"{description} {raster_name(input_path)}: waiting for another run still writing {output_path} "
            f"(it holds {lock}); this input goes on when that run is done")


def tell_client_of_wait(input_path: RasterPath, output_path: Path, lock: Path) -> None:
    """``run_one``'s ``on_wait`` on a Dask worker: an event the batch's client prints (a worker's
    own output never reaches the user's terminal)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker: nobody to tell
        return
    worker.log_event(WAIT_TOPIC, {"input": str(input_path), "output": str(output_path), "lock": str(lock)})


def run_one(work: Work, input_path: RasterPath, output_path: Path, run_id: str,
            is_current: Callable[[RasterPath, Path], bool] | None = None,
            on_wait: Callable[[RasterPath, Path, Path], None] | None = None,
            keep_old: Callable[[str], bool] | None = None) -> JobOutcome:
    """Run one job into this run's ``.part`` path and rename it, holding the output's lock.

    Once the lock is held no other run writes this output, so any scratch of it is a dead run's
    and is removed; an output there now (another run finished it while this one waited) is
    skipped when ``is_current`` says it is current (None: when it exists), as ``run_batch`` does.
    ``on_wait(input_path, output_path, lock file)`` is called once if another run holds the lock.
    ``keep_old(name)``: whether a file of an out-of-date output folder is taken over by the new one
    (the user's own, a style or notes kept beside the results; the new folder's files win)."""
    started = time.monotonic()
    tmp, old = part_path(output_path, run_id), _old_path(output_path)
    waiting = None if on_wait is None else (lambda lock: on_wait(input_path, output_path, lock))
    try:
        check_name_fits(output_path, run_id)
        with output_lock(output_path, on_wait=waiting):
            for stale in _scratch_of(output_path):
                _remove(stale)
            if output_path.exists() and (is_current is None or is_current(input_path, output_path)):
                return JobOutcome(str(input_path), None, None, None, skipped=True)
            result = work(input_path, tmp)
            if not tmp.exists():
                raise RuntimeError(f"job wrote nothing to {tmp}")
            if output_path.exists():  # an out-of-date output (os.replace cannot replace a non-empty folder)
                os.replace(output_path, old)
            os.replace(tmp, output_path)
            if keep_old is not None and old.is_dir():
                _take_over(old, output_path, keep_old)
            _remove(old)
        return JobOutcome(str(input_path), result, None, time.monotonic() - started)
    except Exception as exc:  # collect every failure; the batch goes on
        with contextlib.suppress(OSError):  # a share gone (ENOTCONN): its failure is the input's, said below
            _remove(tmp)
        return JobOutcome(str(input_path), None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}",
                          time.monotonic() - started)
    except BaseException:  # Ctrl-C: nothing half-written stays behind, and the batch stops
        with contextlib.suppress(OSError):
            _remove(tmp)
        raise


def _take_over(old: Path, new: Path, keep: Callable[[str], bool]) -> None:
    """Move the files of ``old`` that ``keep`` names, and ``new`` lacks, into ``new``. Why: a batch that
    re-predicted a scene removed its old folder whole, with a QGIS style and notes the user kept there
    (a single input's re-run keeps them)."""
    for entry in old.iterdir():
        if keep(entry.name) and not (new / entry.name).exists():
            try:
                os.replace(entry, new / entry.name)
            except OSError:  # a folder the user made read-only cannot lose an entry: a copy is taken
                with contextlib.suppress(OSError):
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, new / entry.name)


def time_left(elapsed_s: float, finished: float, remaining: float) -> float:
    """Seconds the ``remaining`` work should take at the rate of the ``finished`` work (``finished`` > 0;
    inputs, or fractions of one)."""
    return elapsed_s / finished * remaining


class BatchTimeLeft:
    """The time a batch has left, from the work its inputs run so far did: the rate since the batch
    began over the inputs that succeeded, each weighing its ``weights`` entry (e.g. its pixels; 1
    each without), applied to the inputs still to run. ``clock``: seconds (``time.monotonic``).

    ``one_process``: the inputs run one after the other in one process, whose first input carries the
    process's start-up (models loaded, caches warmed). Where an input says how long its start-up took
    (``finished``'s ``startup_s``, e.g. predict's model loading) that time is left out from the first
    estimate on; else, once a second input succeeded, the rate is taken from the time since the first
    succeeded. (Workers of a cluster start up side by side: the time since the batch began is kept.)

    Why: the bar's estimate was rich's, one bar step per finished input, so inputs that failed in
    a second (unreadable, all nodata) or were copied counted as scenes done at that pace: after two
    broken files the bar said 0:00:00 left before scenes of minutes each. Failed, skipped and copied
    inputs now do no work; until an input succeeds the time left is unknown."""

    def __init__(self, weights: dict[str, float], clock: Callable[[], float] = time.monotonic,
                 one_process: bool = False) -> None:
        self.clock = clock
        self.started = clock()
        self.pending = dict(weights)
        self.done = 0.0
        self.one_process = one_process
        self._first: tuple[float, float] | None = None  # (when the first input succeeded, its weight)
        self._startup: float | None = None  # seconds of start-up the inputs said they spent (one_process)
        self._estimate: tuple[float, float] | None = None  # (when, seconds left then)

    def finished(self, name: str, succeeded: bool, startup_s: float | None = None) -> None:
        """``name`` ended (``succeeded``: it ran and its output is in place); the estimate is taken again.
        ``startup_s``: of its seconds, those it spent starting up (models loaded), not on its work."""
        weight = self.pending.pop(name, 0.0)
        now = self.clock()
        if succeeded and weight > 0:
            self.done += weight
            if self._first is None:
                self._first = (now, weight)
        if self.one_process and succeeded and startup_s is not None:
            self._startup = (self._startup or 0.0) + max(startup_s, 0.0)
        if self.done <= 0:
            return
        elapsed, work = now - self.started, self.done
        if self.one_process and self._startup is not None:
            elapsed = max(elapsed - self._startup, 0.0)  # the start-up measured: left out from the first on
        elif self.one_process and self._first is not None and self.done > self._first[1]:
            elapsed, work = now - self._first[0], self.done - self._first[1]  # the start-up left out
        self._estimate = (now, time_left(elapsed, work, sum(self.pending.values())))

    def seconds_left(self) -> float | None:
        """Seconds left now (the last estimate, less the time since), None before an input succeeded."""
        if self._estimate is None:
            return None
        at, left = self._estimate
        return max(left - (self.clock() - at), 0.0) if self.pending else 0.0


class _TimeLeftColumn(ProgressColumn):
    """A batch bar's time left, from the task's ``time_left`` field (a ``BatchTimeLeft``), as rich's
    ``TimeRemainingColumn`` draws it (``-:--:--`` while unknown)."""

    def render(self, task: Task) -> Text:
        estimate = task.fields.get("time_left")
        left = 0.0 if task.finished else estimate.seconds_left() if isinstance(estimate, BatchTimeLeft) else None
        if left is None:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def _progress(show: bool) -> Progress:
    # file names shown as written: not rich markup ('[1]') or emoji codes (':a:' of 'two.gpkg:a:...')
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("elapsed,"), _TimeLeftColumn(), TextColumn("left"), disable=not show,
                    console=progress_console())


def _lost(exc: Exception) -> str:
    """The error recorded for a job whose result never came back from the cluster."""
    if type(exc).__name__ == "KilledWorker":  # its message is a paragraph
        return ("KilledWorker: the Dask worker running it died (out of memory, or a crash in native code); "
                "see the workers' logs")
    return f"{type(exc).__name__}: {exc}"


#: ``copy_output(output of the first input, input, path to write)``: gives an input the output of an
#: earlier input of the same content (``run_batch``'s ``duplicates``); returns the input's result
CopyOutput = Callable[[Path, RasterPath, Path], Any]


def copied_line(description: str, input_path: RasterPath | str, first: RasterPath | str) -> str:
    """The line a batch prints for an input given the output of another of the same content."""
    return (f"{description} {raster_name(input_path)}: the same content as {_origin(input_path, first)}: "
            f"its outputs copied, not run again")


def _origin(input_path: RasterPath | str, first: RasterPath | str) -> str:
    """How a copied input's line names the input whose outputs it got: by its file name, or its whole
    path when that is the same name (a scene moved to another folder: 'a.tif ... as a.tif' said nothing)."""
    return str(first) if raster_name(first) == raster_name(input_path) else raster_name(first)


def run_batch(inputs: Sequence[RasterPath], output_for: Callable[[RasterPath], Path], work: Work,
              scheduler: str | None = None, n_workers: int = 2, show_progress: bool = True,
              description: str = "files",
              is_current: Callable[[RasterPath, Path], bool] | None = None,
              on_update: Callable[[BatchReport], None] | None = None,
              duplicates: Mapping[str, RasterPath] | None = None, copy_output: CopyOutput | None = None,
              weigh: Callable[[RasterPath], float | None] | None = None,
              startup: Callable[[Path], float | None] | None = None,
              clock: Callable[[], float] = time.monotonic,
              keep_old: Callable[[str], bool] | None = None,
              plain_kinds: Collection[str] = PLAIN_KINDS) -> BatchReport:
    """Run ``work`` on every input without a current output (see module docstring); ``on_update``
    is called with the report once the skipped inputs are known and after each input finishes
    (``tiles.batch_summary`` writes it down).

    ``duplicates``: str(input) -> an earlier input of the same content (``tiles.same_content``);
    such an input is not run: once that input's output is in place (done or already current; one
    not among ``inputs``, of an earlier batch, is taken as in place at ``output_for``),
    ``copy_output`` makes its own in this process (into its ``.part``, renamed, as a job), and a
    line says so; if that input fails, so does it. ``weigh(input)``: its expected share of the work
    (e.g. its pixels; None: unknown, the median of the others; 1 each without), asked of the inputs
    to run only, for the time left (``BatchTimeLeft``, on ``clock``). ``startup(output)``: of the
    seconds of an input run in this process (``scheduler="sync"``), those its job spent starting up,
    read from its output once in place (predict: its models' loading), left out of the time left.
    ``keep_old``: which files of an out-of-date output the new one takes over (``run_one``).
    ``plain_kinds``: the error kinds a failed input's log line does not name (``failure_line``)."""
    duplicates = {str(k): v for k, v in (duplicates or {}).items()}
    if duplicates and copy_output is None:
        raise ValueError("run_batch: duplicates need copy_output")
    report = BatchReport()
    run_id = new_run_id()  # names this run's scratch paths: a worker of an interrupted run keeps its own
    todo: list[tuple[RasterPath, Path]] = []
    waiting: dict[str, list[tuple[RasterPath, Path]]] = {}  # str(first input) -> its copies to make
    for p in inputs:
        out = Path(output_for(p))
        if out.exists() and is_current is not None:
            try:
                current = is_current(p, out)
            except Exception as exc:  # e.g. an output path taken by something else: not touched
                report.failed[str(p)] = f"{type(exc).__name__}: {exc}"
                continue
        else:
            current = out.exists()
        if current:
            report.skipped.append(str(p))
            continue
        if out.exists():
            report.redone.append(str(p))
        if str(p) in duplicates:
            waiting.setdefault(str(duplicates[str(p)]), []).append((p, out))
        else:
            todo.append((p, out))
    if on_update is not None:
        on_update(report)
    # connected before the bar is drawn: a scheduler that cannot be reached ends in one line (after
    # Dask's connect timeout, which it states), not under a bar left empty at 0/N
    client, cluster = _connect(scheduler, n_workers) if todo and scheduler != "sync" else (None, None)
    ran_to_end = False  # not `finished`, the count of inputs run that record() keeps
    estimate = BatchTimeLeft(_weights([p for p, _ in todo], weigh), clock, one_process=scheduler == "sync")
    outputs = {str(p): out for p, out in todo}  # the inputs run (not copied): their outputs say their start-up
    try:
        with _progress(show_progress) as progress:
            task = progress.add_task(description, total=len(inputs), completed=len(report.skipped) + len(report.failed),
                                     time_left=estimate)

            # in a log file (no terminal) the bar is drawn once, at the end: a line per input instead
            log_lines = show_progress and logs_lines(progress.console)

            def log_line(n: int, name: str, what: str) -> None:
                left = estimate.seconds_left()
                more = n < len(inputs) and left is not None
                # a failed input's reason at once: a run stopped (SIGTERM at a scheduler's time limit)
                # never reached the reasons printed at the batch's end, and its log said only "failed"
                why = (f": {failure_message(report.failed[name], plain_kinds, raster_name(name))}"
                       if what == "failed" and name in report.failed else "")
                progress.console.print(f"{description} {n}/{len(inputs)} {raster_name(name)}: {what} "
                                       f"({clock() - estimate.started:.0f} s{f', about {left:.0f} s left' if more else ''})"
                                       f"{why}", highlight=False, soft_wrap=True, markup=False, emoji=False)

            if log_lines:
                # the inputs settled before any ran (already done, or their output refused by is_current)
                # get their lines too: a log of a batch with nothing to do said only its counts
                skipped = set(report.skipped)  # a set: a list per input was quadratic in a 10,000-input batch
                settled = [str(p) for p in inputs if str(p) in report.failed or str(p) in skipped]
                for n, name in enumerate(settled, 1):
                    log_line(n, name, "failed" if name in report.failed else "already done")

            def record(item: JobOutcome, copied_from: RasterPath | None = None) -> None:
                name, result, error, seconds, skipped = item
                if skipped:
                    report.skipped.append(name)
                    if name in report.redone:
                        report.redone.remove(name)
                elif error is None:
                    report.done[name] = result
                    if copied_from is not None:
                        report.copied[name] = str(copied_from)
                else:
                    report.failed[name] = error
                if seconds is not None:
                    report.seconds[name] = round(seconds, 3)
                if on_update is not None:
                    on_update(report)
                succeeded = not skipped and error is None
                startup_s = (_startup_of(startup, outputs[name]) if succeeded and name in outputs
                             and estimate.one_process and startup is not None else None)
                estimate.finished(name, succeeded=succeeded, startup_s=startup_s)
                progress.advance(task)
                if copied_from is not None and error is None and not skipped and show_progress and not log_lines:
                    progress.console.print(copied_line(description, name, copied_from),  # above the bar
                                           highlight=False, soft_wrap=True, markup=False, emoji=False)
                if log_lines:
                    log_line(int(progress.tasks[0].completed), name,
                             "already done" if skipped else "failed" if error is not None else
                             f"the same content as {_origin(name, copied_from)}, outputs copied"
                             if copied_from is not None else "done")
                make_copies(name, None if skipped else error)

            def make_copies(first: str, error: str | None) -> None:
                """The inputs waiting for ``first``: copied from its output, now in place (``error`` None),
                or failed as it did."""
                for copy, copy_out in waiting.pop(first, []):
                    origin = duplicates[str(copy)]
                    if error is None:
                        job = partial(_copy_from, copy_output, Path(output_for(origin)))
                        record(run_one(job, copy, copy_out, run_id, is_current, say_wait, keep_old), origin)
                    else:
                        record(JobOutcome(str(copy), None, _failed_as(error, origin), None))

            def say_wait(input_path: RasterPath | str, output_path: Path | str, lock: Path | str) -> None:
                if show_progress:  # above the bar, which stays where it is
                    progress.console.print(wait_line(description, input_path, output_path, lock),
                                           highlight=False, soft_wrap=True, markup=False, emoji=False)

            given = {str(p) for p in inputs}
            for name in [*report.skipped, *report.failed, *(f for f in waiting if f not in given)]:
                make_copies(name, report.failed.get(name))  # already current (an earlier batch's), or refused
            if not todo:
                return report
            if scheduler == "sync":
                for p, out in todo:
                    record(run_one(work, p, out, run_id, is_current, say_wait, keep_old))
                return report
            from dask.distributed import as_completed

            # a worker's wait comes back as an event (tell_client_of_wait), printed here
            client.subscribe_topic(WAIT_TOPIC, lambda event: say_wait(event[1]["input"], event[1]["output"],
                                                                      event[1]["lock"]))
            futures = {client.submit(run_one, work, p, out, run_id, is_current, tell_client_of_wait, keep_old,
                                     pure=False): p for p, out in todo}
            for fut in as_completed(futures):
                try:
                    item = fut.result()
                except Exception as exc:  # the job's own errors come back in item: this is the cluster's
                    item = JobOutcome(str(futures[fut]), None, _lost(exc), None)
                record(item)
            ran_to_end = True
    finally:
        if client is not None:
            client.close()
        # idle workers are given time to exit; after Ctrl-C busy ones are stopped at once, before the
        # scheduler goes (a worker outliving it logged its failed heartbeats' tracebacks)
        if cluster is not None and ran_to_end:
            try:
                _close_idle_workers(cluster, WORKER_EXIT_GRACE_S)
            finally:
                cluster.close()
        elif cluster is not None:  # what stopped the batch is the error to see, not the closing's
            with contextlib.suppress(Exception):
                _close_idle_workers(cluster, INTERRUPTED_WORKER_GRACE_S)
            _close_interrupted(cluster)
    return report


def _copy_from(copy_output: CopyOutput, first_output: Path, input_path: RasterPath, output_path: Path) -> Any:
    """``run_one``'s job for an input of the same content as another: that one's output, copied."""
    return copy_output(first_output, input_path, output_path)


def _startup_of(startup: Callable[[Path], float | None], output: Path) -> float | None:
    """``run_batch``'s ``startup`` of one output; None (unknown) when it cannot say."""
    try:
        seconds = startup(output)
    except Exception:  # noqa: BLE001 -- an estimate only: unknown, never a failed input
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else None


def _failed_as(error: str, first: RasterPath) -> str:
    """The error of an input of the same content as ``first``, which failed with ``error``: the same
    first line, saying whose it is (not run again: it would fail alike)."""
    line = error.splitlines()[0] if error else "failed"
    return f"{line} (the same content as {raster_name(first)}, which failed: not run again)"


def _weights(inputs: list[RasterPath], weigh: Callable[[RasterPath], float | None] | None) -> dict[str, float]:
    """Each input's share of the work, by ``weigh`` (1 each without it); an input it cannot weigh
    (None) weighs the median of the others, and with none weighed all weigh 1."""
    known = {str(p): w for p in inputs if weigh is not None and (w := weigh(p)) is not None and w > 0}
    median = sorted(known.values())[len(known) // 2] if known else 1.0
    return {str(p): float(known.get(str(p), median)) for p in inputs}


def _connect(scheduler: str | None, n_workers: int) -> tuple[Any, Any]:
    """A Dask client of ``scheduler`` (None: a new local cluster of ``n_workers`` processes, also
    returned so that it is closed), or Dask's error when it cannot be reached."""
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        _check_scheduler_answers(scheduler)
        return Client(scheduler), None
    # no dashboard, and the scheduler's HTTP endpoints on a free port: with dashboard_address
    # None alone they still took 8787 and warned "Port 8787 is already in use" whenever
    # another Dask or a second batch ran on the machine
    # critical lines only: Ctrl-C made the workers log each cancelled task and the nannies each worker
    # killed, and a busy worker's next heartbeat to the closed scheduler an ERROR with its traceback
    # (1 run in 6 on a loaded 2-core box), above the one-line 'interrupted'; what fails is an input's
    # failure in the summary and on the terminal, with its error, whatever Dask logs
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        cluster = LocalCluster(processes=True, n_workers=n_workers, threads_per_worker=1,
                               silence_logs=logging.CRITICAL, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": ":0"})
    except BaseException:  # Ctrl-C or SIGTERM while its workers start: the half-made cluster
        for made in set(SpecCluster._instances) - before:
            _close_interrupted(made)
        raise
    try:
        return Client(cluster), cluster
    except BaseException:
        _close_interrupted(cluster)
        raise


class _UnstartedNannyFilter(logging.Filter):
    """Drops asyncio's record of a Dask worker that an interruption kept from starting; every other record
    of the ``asyncio`` logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Task exception was never retrieved")
                    and "Nanny failed to start" in str(error))


def _close_interrupted(cluster: Any) -> None:
    """Close a local cluster that Ctrl-C or SIGTERM interrupted, whatever state its workers reached, and
    drop it from Dask's list of clusters to close at exit.

    Why: Ctrl-C while the cluster's workers started (seconds on 2 cores) left workers that never reached
    "running"; closing them, then Dask's exit hook, failed with a 25-line traceback (``AssertionError:
    Status.init``) under the one-line 'interrupted'. The workers are daemonic processes: they end with
    this one."""
    from distributed.deploy.spec import SpecCluster

    # a worker that failed to start leaves its task's error to asyncio, which logged it, traceback and
    # all, when the task was collected ("Task exception was never retrieved ... Nanny failed to start")
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _UnstartedNannyFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(_UnstartedNannyFilter())
    with contextlib.suppress(Exception):
        cluster.close(timeout=2)
    SpecCluster._instances.discard(cluster)


class _NotAScheduler(Exception):
    """What answered at a --scheduler address is Dask but no scheduler (a worker's address)."""


def _check_scheduler_answers(address: str) -> None:
    """Raise a one-line OSError unless a Dask scheduler answers at ``address`` within Dask's connect
    timeout (``distributed.comm.timeouts.connect``, 30 s by default).

    Why: Dask bounds the TCP connection by that timeout but waits for the handshake's reply without
    any: ``--scheduler tcp://host:8787`` (the dashboard's port, one off the scheduler's 8786) or any
    other service that accepts the connection and never answers in Dask's protocol hung the batch
    forever, a cron job included; one that answered something else ended in a MemoryError
    ('Unable to allocate 3.07 EiB', its bytes read as a frame length)."""
    import asyncio

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import connect

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")

    async def identity() -> None:
        comm = await connect(address, timeout=timeout)  # Dask's own one-line error when unreachable
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await comm.read()
        finally:
            comm.abort()
        if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
            kind = reply.get("type") if isinstance(reply, dict) else None
            raise _NotAScheduler(f"it is a Dask {kind}, not a scheduler" if kind else "it did not say what it is")

    not_dask = f"no Dask scheduler answers at {address}: the connection was accepted, but"
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(identity(), timeout + 5))  # its own connect timeout goes first
    except asyncio.TimeoutError:
        raise OSError(f"{not_dask} nothing answered within {time.monotonic() - started:.0f} s (a Dask scheduler "
                      f"listens on port 8786 by default, its dashboard on 8787)") from None
    except _NotAScheduler as exc:
        raise OSError(f"{not_dask} {exc}") from None
    except OSError:
        raise
    except Exception:  # noqa: BLE001 -- what another protocol's bytes make of Dask's decoder
        raise OSError(f"{not_dask} what answered speaks another protocol") from None


#: seconds a local worker process is given to exit at the end of a batch before it is killed
WORKER_EXIT_GRACE_S = 20.0
#: the same after Ctrl-C or SIGTERM: its input is abandoned, the user is not kept waiting
INTERRUPTED_WORKER_GRACE_S = 1.0


def _close_idle_workers(cluster, grace_s: float = WORKER_EXIT_GRACE_S) -> None:
    """Close the workers of a ``LocalCluster`` whose batch is done, each process given ``grace_s`` to exit.

    Why: ``LocalCluster.close`` closes each Nanny with its default timeout of 5 s, which gives the
    worker process 0.8 x 5 = 4 s to exit before the Nanny kills it and logs "Worker process still
    alive after 4.0 seconds, killing" on the user's terminal. A worker that ran the pipeline has
    torch, ONNX Runtime and GDAL loaded, and its interpreter's exit alone takes 2-4 s on a busy
    2-core machine (the worker itself closes in milliseconds): a finished batch sometimes ended
    with that line, or two. A worker that does not exit within ``grace_s`` is still killed.
    """
    import asyncio

    async def close_workers() -> None:
        await asyncio.gather(*(w.close(timeout=grace_s / 0.8) for w in list(cluster.workers.values())))

    cluster.sync(close_workers)
