"""Batch runner: a real Dask LocalCluster, resumable outputs, collected failures."""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
from dask.distributed import LocalCluster

from tiles.batch import (
    BatchTimeLeft,
    _progress,
    _TimeLeftColumn,
    part_path,
    run_batch,
    time_left,
)
from tiles.chips import ChipOptions
from tiles.chipset import record_path
from tiles.scene_chips import SceneJob


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def test_batch_on_a_dask_cluster_is_resumable(cluster, buildings_dir: Path, rasters_dir: Path, tmp_path: Path):
    scenes = [buildings_dir / "kampala/kampala_z19_1.tif", buildings_dir / "kampala/kampala_z19_2.tif",
              buildings_dir / "nairobi/nairobi_z19_2.tif"]
    bad = rasters_dir / "rasterio/shade.tif"  # single band: must fail, not stop the batch
    job = SceneJob(out=tmp_path, opts=ChipOptions(size=256), target="buildings",
                   labels=(buildings_dir / "kampala/labels.geojson", buildings_dir / "nairobi/labels.geojson"),
                   split=None)
    out_for = partial(record_path, tmp_path / "parts")
    report = run_batch(scenes + [bad], out_for, job, scheduler=cluster.scheduler_address, show_progress=False)
    assert sorted(report.done) == sorted(map(str, scenes))
    assert list(report.failed) == [str(bad)] and "three bands" in report.failed[str(bad)]
    assert not out_for(bad).exists() and not [n for n in os.listdir(out_for(bad).parent) if n.endswith(".part")]
    for s in scenes:
        feats = json.loads(out_for(s).read_text())
        assert len(feats) == report.done[str(s)] > 0
        assert all((tmp_path / f["properties"]["image"]).exists() for f in feats)
    # a second run skips the finished scenes and only retries the failed one
    mtimes = {s: out_for(s).stat().st_mtime_ns for s in scenes}
    again = run_batch(scenes + [bad], out_for, job, scheduler=cluster.scheduler_address, show_progress=False)
    assert sorted(again.skipped) == sorted(map(str, scenes)) and not again.done and list(again.failed) == [str(bad)]
    assert all(out_for(s).stat().st_mtime_ns == mtimes[s] for s in scenes)


def test_sync_scheduler_and_half_written_outputs(buildings_dir: Path, tmp_path: Path):
    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    job = SceneJob(out=tmp_path, opts=ChipOptions(size=128), target="buildings", labels=None, split="train")
    out_for = partial(record_path, tmp_path / "parts")
    crashed = [part_path(out_for(scene), "0123456789ab"), out_for(scene).with_name(f".{out_for(scene).name}.part")]
    crashed[0].parent.mkdir(parents=True)
    for part in crashed:  # crashed earlier runs (one of a version before run ids)
        part.write_text("half written")
    report = run_batch([scene], out_for, job, scheduler="sync", show_progress=False)
    assert report.ok and report.done[str(scene)] == 4
    assert not any(part.exists() for part in crashed)
    feats = json.loads(out_for(scene).read_text())
    assert {f["properties"]["split"] for f in feats} == {"train"}


def test_default_scheduler_starts_local_processes(buildings_dir: Path, tmp_path: Path):
    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    job = SceneJob(out=tmp_path, opts=ChipOptions(size=256), target="buildings", labels=None, split=None)
    out_for = partial(record_path, tmp_path / "parts")
    report = run_batch([scene], out_for, job, scheduler=None, n_workers=1, show_progress=False)
    assert report.ok and report.done[str(scene)] == 1 and out_for(scene).exists()


def _dies_on_boom(input_path, output_path):
    """A job whose worker process dies (as on an out-of-memory kill) for the input named 'boom'."""
    import os

    if str(input_path).endswith("boom"):
        os._exit(1)
    Path(output_path).write_text("ok")
    return "ok"


def test_a_worker_that_dies_fails_its_input_not_the_batch(tmp_path: Path):
    import sys

    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    (tmp_path / "a").write_text("done before")
    # no retries: a job that kills its worker each time is given up at once (Dask's default: after 4 workers)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        report = run_batch(["a", "boom"], lambda p: tmp_path / p, _dies_on_boom,
                           scheduler=c.scheduler_address, show_progress=False)
    assert report.skipped == ["a"] and not report.done
    assert list(report.failed) == ["boom"] and "worker" in report.failed["boom"].splitlines()[0]
    assert not (tmp_path / "boom").exists()


def _write_ok(input_path, output_path):
    if str(input_path) == "bad":
        raise ValueError("no good")
    Path(output_path).write_text("ok")


def test_without_a_terminal_each_input_gets_a_log_line(tmp_path: Path, capsys):
    """In a log file (nohup, a cluster job) the bar is drawn only once, at the end: a batch of hours
    said nothing until it was over."""
    (tmp_path / "a").write_text("done before")
    run_batch(["a", "b", "bad"], lambda p: tmp_path / p, _write_ok, scheduler="sync", description="predict")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "predict 1/3 a: already done (0 s)"
    assert lines[1].startswith("predict 2/3 b: done (") and lines[2].startswith("predict 3/3 bad: failed (")
    # the time left, at the rate of the inputs run so far (the skipped one took none), until the last
    assert lines[1].endswith(" s left)") and lines[2].endswith(" s): no good")  # why, at once (a stopped
    # batch never reached the reasons printed at its end)


def _refuse_c(input_path, output_path) -> bool:
    if str(input_path) == "c":
        raise ValueError("not an output of this command")
    return True


def test_without_a_terminal_a_batch_with_nothing_to_run_names_each_input(tmp_path: Path, capsys):
    """A batch whose every input was settled before any ran (already done, or its output path refused)
    printed no line for them in a log: only the command's counts, so a log reader could not tell
    which inputs were skipped. Each gets the line an input run gets, in the inputs' order."""
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).write_text("done before")
    report = run_batch(["a", "b", "c", "d"], lambda p: tmp_path / p, _write_ok, scheduler="sync",
                       description="predict", is_current=_refuse_c)
    assert report.skipped == ["a", "b", "d"] and list(report.failed) == ["c"] and not report.done
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["predict 1/4 a: already done (0 s)", "predict 2/4 b: already done (0 s)",
                         "predict 3/4 c: failed (0 s): not an output of this command", "predict 4/4 d: already done (0 s)"], lines


def test_the_time_left_is_the_rate_so_far_times_what_remains():
    assert time_left(60.0, 2, 3) == 90.0 and time_left(10.0, 1, 0) == 0.0


def test_the_batch_bar_estimates_the_time_left_over_the_whole_batch():
    """Rich keeps 30 s of samples by default: with inputs taking longer than that, the batch bar never
    had two and showed no time left at all. The bar's estimate is the batch's own (BatchTimeLeft)."""
    clock = iter([0.0, 3600.0, 3600.0])
    estimate = BatchTimeLeft({"a": 1.0, "b": 1.0}, lambda: next(clock))
    progress = _progress(True)
    task = progress.add_task("predict", total=2, time_left=estimate)
    estimate.finished("a", succeeded=True)  # an hour each
    progress.advance(task)
    (column,) = [c for c in progress.columns if isinstance(c, _TimeLeftColumn)]
    assert column.render(progress.tasks[0]).plain == "1:00:00"


def _slow_to_exit(input_path, output_path):
    """A job after which its worker process takes 4.5 s to exit, as one with torch, ONNX Runtime and
    GDAL loaded can on a busy machine (the interpreter's exit runs atexit handlers)."""
    import atexit
    import time

    atexit.register(time.sleep, 4.5)
    Path(output_path).write_text("ok")


def test_a_local_cluster_ends_without_killing_a_worker_slow_to_exit(tmp_path: Path):
    """LocalCluster.close gave each worker process 4 s to exit, then killed it and logged 'Worker
    process still alive after 4.0 seconds, killing' on the terminal: `geoseg predict --scheduler
    local` sometimes ended a finished batch with that line."""
    import logging
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append  # what distributed's own handler writes to the terminal (it does not propagate)
    logging.getLogger("distributed").addHandler(handler)
    try:
        report = run_batch(["a"], lambda p: tmp_path / p, _slow_to_exit, scheduler=None, n_workers=1,
                           show_progress=False)
    finally:
        logging.getLogger("distributed").removeHandler(handler)
    assert report.ok and (tmp_path / "a").read_text() == "ok"
    assert [f"{r.name}: {r.getMessage()}" for r in logged] == []


def test_a_local_cluster_beside_another_one_gives_no_port_warning(tmp_path: Path):
    """The local cluster's scheduler put its HTTP server on Dask's dashboard port, 8787; with another
    cluster on it, distributed warned 'Port 8787 is already in use' (and of an unclosed socket), and
    `geoseg predict --scheduler local` showed both as warnings of the batch."""
    import socket
    import sys
    import warnings

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    other = socket.socket()
    try:
        try:
            other.bind(("", 8787))
            other.listen()
        except OSError:
            pass  # another cluster has it: the same case
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # as geoseg predict records a batch's warnings
            report = run_batch(["a"], lambda p: tmp_path / p, _write_ok, scheduler=None, n_workers=1,
                               show_progress=False)
    finally:
        other.close()
    assert report.ok and (tmp_path / "a").read_text() == "ok"
    assert [f"{w.category.__name__}: {w.message}" for w in caught if "distributed" in w.filename] == []


def _slow_on_c(input_path, output_path):
    """A job that runs for 60 s on the input named 'c' (a big scene still running when the user hits Ctrl-C)."""
    import time

    if str(input_path).endswith("c"):
        time.sleep(60)
    Path(output_path).write_text("ok")


def test_ctrl_c_on_a_local_cluster_is_not_kept_waiting_for_busy_workers(tmp_path: Path):
    """After an input had finished, a Ctrl-C gave the local workers the end-of-batch grace to exit
    (20 s each, then killed): the flag saying the batch ran to its end shared its name with the
    count of inputs finished, so one finished input read as the whole batch."""
    import sys
    import time

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    recorded: list[str] = []

    def ctrl_c_after_two(report) -> None:
        recorded.append(sorted(report.done))
        if len(report.done) == 2:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_batch(["a", "b", "c"], lambda p: tmp_path / p, _slow_on_c, scheduler=None, n_workers=2,
                  show_progress=False, on_update=ctrl_c_after_two)
    assert recorded[-1] == ["a", "b"]
    assert time.monotonic() - started < 15, "Ctrl-C waited for the busy worker"


def test_ctrl_c_on_a_local_cluster_prints_no_dask_log_lines(tmp_path: Path, capfd):
    """Ctrl-C in `geoseg predict --scheduler local` while an input ran printed Dask's own log above the
    one-line 'interrupted' message: 'Async instruction for <Task cancelled ...> ended with
    CancelledError' from the worker, 'Worker process still alive after 4.0 seconds, killing' from
    its nanny. The local cluster logs errors only (a worker's death is the input's failure)."""
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

    def ctrl_c_after_one(report) -> None:
        if report.done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(["a", "c"], lambda p: tmp_path / p, _slow_on_c, scheduler=None, n_workers=2,
                  show_progress=False, on_update=ctrl_c_after_one)
    err = capfd.readouterr().err
    assert "distributed." not in err, err


def _two_steps(tag: str, started: Path, input_path, output_path):
    """Writes a folder in two steps, 2 s apart for the input 'slow' (which says when it began)."""
    import time

    out = Path(output_path)
    out.mkdir()
    (out / "first").write_text(tag)
    if str(input_path) == "slow":
        started.write_text(tag)
        time.sleep(2.0)
    (out / "second").write_text(tag)
    return tag


def _interrupt_once_slow_runs(started: Path):
    """An ``on_update`` that is Ctrl-C once an input is done and 'slow' has begun on a worker."""
    import time

    def on_update(report) -> None:
        if report.done:
            deadline = time.monotonic() + 20
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt
    return on_update


@pytest.mark.parametrize("old_is_current", [False, True])
def test_a_rerun_right_after_ctrl_c_on_a_cluster_never_shares_scratch_with_the_old_worker(tmp_path: Path,
                                                                                          old_is_current: bool):
    """Ctrl-C leaves an input a worker of an external cluster has begun running (Dask cannot stop it);
    run again at once, both runs wrote the same '.slow.part': the new run removed the old one's, the
    old one renamed the new one's half-written folder into place (first step new, second old) and the
    new run failed. Now each run has its own part, and a run waits for the one still writing that
    output: then the output is the new run's, or skipped when the old one made it current."""
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    out, started = tmp_path / "out", tmp_path / "slow-began"
    out.mkdir()
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with pytest.raises(KeyboardInterrupt):
            run_batch(["quick", "slow"], lambda p: out / p, partial(_two_steps, "old", started),
                      scheduler=cluster.scheduler_address, show_progress=False,
                      on_update=_interrupt_once_slow_runs(started))
        assert not (out / "slow").exists()  # still running on its worker

        def is_current(name: str, output: Path) -> bool:  # 'slow' made by the old run: other options, or the same
            return name == "quick" or old_is_current or (output / "first").read_text() == "new"

        report = run_batch(["quick", "slow"], lambda p: out / p, partial(_two_steps, "new", started),
                           scheduler=cluster.scheduler_address, show_progress=False, is_current=is_current)
    assert report.ok, report.failed
    assert report.skipped == (["quick", "slow"] if old_is_current else ["quick"])
    assert list(report.done) == ([] if old_is_current else ["slow"])
    made_by = "old" if old_is_current else "new"
    assert [(out / "slow" / step).read_text() for step in ("first", "second")] == [made_by, made_by]
    assert sorted(os.listdir(out)) == ["quick", "slow"]  # no part, old output or lock left


def test_an_output_named_like_the_out_folders_lock_is_not_kept_waiting_by_it(tmp_path: Path):
    """An input of stem 'geoseg' must not take `geoseg predict`'s own --out lock (.geoseg.lock) for its
    output's: the batch would wait for itself for ever."""
    import threading

    from geoseg.commands.outlock import hold_out_folder

    reports = []
    with hold_out_folder(tmp_path, "geoseg predict"):
        runner = threading.Thread(target=lambda: reports.append(run_batch(
            ["geoseg"], lambda p: tmp_path / p, _write_ok, scheduler="sync", show_progress=False)), daemon=True)
        runner.start()
        runner.join(timeout=20)
    assert reports and reports[0].ok and (tmp_path / "geoseg").read_text() == "ok"


@pytest.mark.parametrize("on_cluster", [False, True], ids=["sync", "dask"])
def test_an_input_waiting_for_another_run_writing_its_output_says_so_once(cluster, tmp_path: Path, capsys,
                                                                            on_cluster: bool):
    """A batch whose input waited on its output's lock (a worker of an interrupted run still writing
    it) showed no word: the bar just stood still. One line names the output and the lock file, once,
    also when the waiting job runs on a Dask worker (its event printed by the batch's client)."""
    import sys
    import threading
    import time

    import cloudpickle

    from tiles.output_lock import lock_path, output_lock

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    line = (f"predict b: waiting for another run still writing {tmp_path / 'b'} (it holds "
            f"{lock_path(tmp_path / 'b')}); this input goes on when that run is done")
    held, printed = threading.Event(), []

    def other_run() -> None:
        """Holds b's lock until the batch has said it waits (at most 10 s: then it never did)."""
        with output_lock(tmp_path / "b"):
            held.set()
            deadline = time.monotonic() + 10
            while line not in "".join(printed) and time.monotonic() < deadline:
                time.sleep(0.1)
                printed.append(capsys.readouterr().out)

    holder = threading.Thread(target=other_run, daemon=True)
    holder.start()
    assert held.wait(10)
    report = run_batch(["a", "b"], lambda p: tmp_path / p, _write_ok, description="predict",
                       scheduler=cluster.scheduler_address if on_cluster else "sync")
    holder.join(10)
    out = "".join(printed) + capsys.readouterr().out
    assert report.ok and sorted(report.done) == ["a", "b"]
    assert out.count(line) == 1 and "predict a: waiting" not in out, out


def test_a_failure_line_names_the_kind_only_of_a_fault():
    """The engine's own messages read without a class name in front (the line then has the README's
    ``geoseg COMMAND: error: a.tif: ...`` form); a fault such as a KeyError keeps it, since ``'x'``
    alone says nothing."""
    from tiles.batch import failure_line

    trace = "\nTraceback (most recent call last):\n  ..."
    assert failure_line("a.tif", "FileNotFoundError: a.tif: label file l.geojson not found" + trace) == \
        "a.tif: label file l.geojson not found"
    assert failure_line("a.tif", "UnsupportedRaster: complex data") == "a.tif: complex data"
    assert failure_line("a.tif", "KeyError: 'x'" + trace) == "a.tif: KeyError: 'x'"
    assert failure_line("a.tif", "MemoryError: ") == "a.tif: MemoryError"
    assert failure_line("a.tif", "PredictError: no valid pixels") == "a.tif: PredictError: no valid pixels"
    assert failure_line("a.tif", "PredictError: no valid pixels", {"PredictError"}) == "a.tif: no valid pixels"


def test_the_plain_kinds_name_classes_that_exist():
    """Names, not classes (a batch's failures are recorded as text): a renamed class would drift
    silently back to 'a.tif: NewName: ...' lines."""
    import builtins

    import rasterio.errors

    from geoseg.card import ModelCardError
    from geoseg.commands.predict import _PLAIN_KINDS
    from geoseg.options import PredictError
    from tiles import errors, mosaic, tiff_pages

    known = {cls.__name__: cls for cls in (errors.UnsupportedRaster, mosaic.MosaicError, tiff_pages.LoopedTiff,
                                          rasterio.errors.RasterioIOError, PredictError, ModelCardError)}
    for name in _PLAIN_KINDS:
        cls = known.get(name) or getattr(builtins, name)
        assert issubclass(cls, (ValueError, OSError)), name


def test_a_log_gets_progress_lines_whatever_force_color_or_a_dumb_terminal_say(monkeypatch):
    """rich took FORCE_COLOR (set by many CI systems) for a terminal and drew live frames, ten a second
    joined by carriage returns, into the job's log; on TERM=dumb it drew none and no line came either."""
    import io

    from rich.console import Console

    from tiles.progress_console import logs_lines, progress_console

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr("sys.stdout", io.StringIO())  # a log file, not a terminal
    assert Console().is_terminal  # what rich makes of FORCE_COLOR alone
    console = progress_console()
    assert not console.is_terminal and logs_lines(console)
    monkeypatch.setenv("TERM", "dumb")
    assert logs_lines(Console(force_terminal=True))  # a dumb terminal: rich draws no frame, so lines



def test_ctrl_c_while_a_local_clusters_workers_start_leaves_dask_nothing_to_close_at_exit(monkeypatch):
    """Ctrl-C in the seconds a local cluster's workers take to start left a cluster whose workers never
    ran; Dask's exit hook then failed to close it and printed 25 lines (``AssertionError: Status.init``)
    under the one-line 'interrupted' (seen at 4-6 s into `geoseg predict a.tif b.tif --scheduler local`).
    Here a stand-in cluster, registered as Dask registers one, is interrupted while it starts, and
    closing it fails as that one did."""
    import dask.distributed
    from distributed.deploy.spec import SpecCluster

    from tiles.batch import _connect

    made = []

    class HalfStarted:
        shutdown_on_close = True
        status = None

        def __init__(self, **_):
            SpecCluster._instances.add(self)
            made.append(self)
            raise KeyboardInterrupt  # while the workers start

        def close(self, timeout=None):
            raise AssertionError("Status.init")

    monkeypatch.setattr(dask.distributed, "LocalCluster", HalfStarted)
    with pytest.raises(KeyboardInterrupt):
        _connect(None, 2)
    assert made and made[0] not in SpecCluster._instances  # Dask's exit hook no longer sees it


def test_only_asyncios_record_of_a_worker_kept_from_starting_is_dropped():
    """After Ctrl-C during a local cluster's start-up asyncio logged 'Task exception was never retrieved ...
    RuntimeError: Nanny failed to start' with its traceback under the 'interrupted' line. The filter drops
    that record alone: the level of the asyncio logger stays as it was (a library caller keeps its errors)."""
    import logging

    from tiles.batch import _UnstartedNannyFilter

    def record(message, error):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None,
                                 (type(error), error, None) if error else None)

    drop = _UnstartedNannyFilter()
    assert not drop.filter(record("Task exception was never retrieved\nfuture: <Task>", RuntimeError("Nanny failed "
                                                                                                     "to start.")))
    assert drop.filter(record("Task exception was never retrieved\nfuture: <Task>", ValueError("yours")))
    assert drop.filter(record("Executing <Task> took 0.2 seconds", None))


def test_a_name_too_long_for_the_scratch_names_fails_its_input_alone(tmp_path):
    """A 250-byte scene name (legal: 255) makes scratch names over 255 bytes. Removing the scratch of
    the failed input raised ENAMETOOLONG out of the input's handler and stopped the default batch,
    the same input first on every re-run; the error named '.<name>.<run id>.part' and no fix."""
    from tiles.batch import run_one

    outcome = run_one(lambda src, dst: dst.mkdir(), "in.tif", tmp_path / ("x" * 250), "0123456789ab")
    assert outcome.error.startswith("OSError: [Errno 36] File name too long: the output name xxxx")
    assert "rename the input to a name of at most 236 bytes before its extension" in outcome.error
    assert list(tmp_path.iterdir()) == []
    done = run_one(lambda src, dst: dst.mkdir(), "in.tif", tmp_path / ("x" * 236), "0123456789ab")
    assert done.error is None and (tmp_path / ("x" * 236)).is_dir()


def test_a_rerun_output_takes_over_the_users_own_files_of_the_old_one(tmp_path):
    """A batch that re-predicted a scene (other options) removed its old folder whole, with the QGIS
    style and notes the user kept there; a single input's re-run kept them."""
    from geoseg.output_files import is_users_own
    from tiles.batch import run_one

    out = tmp_path / "scene"
    out.mkdir()
    for name, text in (("buildings.gpkg", "old"), ("buildings.gpkg-wal", "old edit"), ("buildings.qml", "style"),
                       ("notes.txt", "mine")):
        (out / name).write_text(text)

    def work(src, dst):
        dst.mkdir()
        (dst / "buildings.gpkg").write_text("new")

    done = run_one(work, "scene.tif", out, "0123456789ab", is_current=lambda p, o: False, keep_old=is_users_own)
    assert done.error is None
    assert {p.name: p.read_text() for p in out.iterdir()} == {"buildings.gpkg": "new", "buildings.qml": "style",
                                                              "notes.txt": "mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]  # no old folder left


def test_a_share_gone_while_an_input_failed_is_that_inputs_failure(tmp_path, monkeypatch):
    """Removing a failed input's scratch on a share that went away (ENOTCONN) raised out of the input's
    handler: the batch stopped with a traceback and the failure was never recorded. A file of the user's
    that cannot be moved into the new folder (its old folder read-only) is copied there."""
    import errno

    from tiles import batch

    def share_gone(path):
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def fails(src, dst):
        raise RuntimeError("the share went away")

    monkeypatch.setattr(batch, "_remove", share_gone)
    outcome = batch.run_one(fails, "in.tif", tmp_path / "scene", "0123456789ab")
    assert outcome.error.startswith("RuntimeError: the share went away")
    monkeypatch.undo()
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "notes.txt").write_text("mine")
    real_replace = os.replace
    monkeypatch.setattr(batch.os, "replace", lambda a, b: (_ for _ in ()).throw(PermissionError(13, "read-only"))
                        if Path(a).name == "notes.txt" else real_replace(a, b))
    batch._take_over(old, new, lambda name: True)
    assert (new / "notes.txt").read_text() == "mine"


def test_scratch_another_user_left_is_named_when_it_cannot_be_removed(tmp_path, monkeypatch):
    """A colleague's killed run left its scratch in a group's folder, which this user may not remove: it was
    kept without a word (37 MB for a 0.7 MB scene)."""
    import shutil

    from tiles import batch

    left = tmp_path / ".a.0123456789ab.part"
    left.mkdir()
    monkeypatch.setattr(shutil, "rmtree", lambda path, ignore_errors=False: None)  # as a folder of another user's
    with pytest.warns(UserWarning, match=r"\.a\.0123456789ab\.part could not be removed \(another user's scratch\?\)"):
        batch._remove(left)

