"""A batch's time left counts only the work of the inputs that succeeded (failed, skipped and copied
inputs did none), each weighing its share of the work; tested on a clock moved by hand."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from tiles.batch import BatchTimeLeft, _progress, _TimeLeftColumn, run_batch


class _Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fast_failures_do_not_count_as_finished_scenes_in_the_time_left():
    clock = _Clock()
    left = BatchTimeLeft({"bad1": 1.0, "bad2": 1.0, "a": 1.0, "b": 1.0}, clock)
    clock.now += 0.1
    left.finished("bad1", succeeded=False)
    clock.now += 0.1
    left.finished("bad2", succeeded=False)
    assert left.seconds_left() is None  # nothing succeeded: unknown, not '0:00:00'
    clock.now += 60
    left.finished("a", succeeded=True)
    assert left.seconds_left() == pytest.approx(60.2)  # b, at a's pace (the failures' 0.2 s included)
    clock.now += 20
    assert left.seconds_left() == pytest.approx(40.2)  # counts down between inputs


def test_the_time_left_weighs_inputs_by_their_work():
    """A batch of mixed sizes: a small first scene's seconds are not every later scene's."""
    clock = _Clock()
    left = BatchTimeLeft({"small": 1e6, "big": 16e6}, clock)
    clock.now += 10
    left.finished("small", succeeded=True)
    assert left.seconds_left() == pytest.approx(160)


def _slow_unless_bad(clock: _Clock, input_path, output_path):
    if str(input_path).startswith("bad"):
        raise ValueError("unreadable")
    clock.now += 60
    Path(output_path).write_text("ok")


def test_the_batch_log_estimates_from_the_scenes_that_succeeded(tmp_path: Path, capsys):
    """Two unreadable files first, then scenes of a minute each: the log said 'about 0 s left'."""
    clock = _Clock()
    run_batch(["bad1", "bad2", "a", "b", "c"], lambda p: tmp_path / p, partial(_slow_unless_bad, clock),
              scheduler="sync", description="predict", clock=clock)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "predict 1/5 bad1: failed (0 s): unreadable" and lines[1].startswith("predict 2/5 bad2: failed (0 s)")
    assert lines[2] == "predict 3/5 a: done (60 s, about 120 s left)"
    assert lines[3] == "predict 4/5 b: done (120 s, about 60 s left)"


def test_in_one_process_the_first_inputs_start_up_is_left_out_once_a_second_succeeded():
    """The first input of a batch run in this process loads the models: its 10 s more stood for every
    later input's pace."""
    clock = _Clock()
    left = BatchTimeLeft({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, clock, one_process=True)
    clock.now += 12  # 10 s of start-up, 2 s of work
    left.finished("a", succeeded=True)
    assert left.seconds_left() == pytest.approx(36)  # nothing tells the start-up apart yet
    clock.now += 2
    left.finished("b", succeeded=True)
    assert left.seconds_left() == pytest.approx(4)  # c and d at b's pace (all inputs' since the start: 14)
    cluster = BatchTimeLeft({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, _Clock())  # workers start side by side
    cluster.clock.now += 12
    cluster.finished("a", succeeded=True)
    cluster.finished("b", succeeded=True)
    assert cluster.seconds_left() == pytest.approx(12)


def test_the_batch_bar_shows_the_estimate_and_no_time_left_when_unknown():
    clock = _Clock()
    estimate = BatchTimeLeft({"bad": 1.0, "a": 1.0, "b": 1.0}, clock)
    progress = _progress(True)
    task = progress.add_task("predict", total=3, time_left=estimate)
    (column,) = [c for c in progress.columns if isinstance(c, _TimeLeftColumn)]
    estimate.finished("bad", succeeded=False)
    progress.advance(task)
    assert column.render(progress.tasks[0]).plain == "-:--:--"
    clock.now += 90
    estimate.finished("a", succeeded=True)
    progress.advance(task)
    assert column.render(progress.tasks[0]).plain == "0:01:30"


def test_an_input_that_cannot_be_weighed_weighs_the_median_of_the_others():
    from tiles.batch import _weights

    sizes = {"a": 1e6, "b": None, "c": 4e6, "d": 9e6}
    assert _weights(list(sizes), sizes.get) == {"a": 1e6, "b": 4e6, "c": 4e6, "d": 9e6}
    assert _weights(["a", "b"], None) == {"a": 1.0, "b": 1.0}


def test_the_first_estimate_leaves_out_the_start_up_the_first_input_says_it_spent():
    """The first input of a batch in one process loads the models: its 10 s of loading stood for every
    later input's pace until a second input finished, and the first estimate was 36 s, not 6."""
    clock = _Clock()
    left = BatchTimeLeft({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, clock, one_process=True)
    clock.now += 12  # 10 s of loading, 2 s of work
    left.finished("a", succeeded=True, startup_s=10.0)
    assert left.seconds_left() == pytest.approx(6)
    clock.now += 3
    left.finished("b", succeeded=True, startup_s=0.0)  # the models were loaded already
    assert left.seconds_left() == pytest.approx(5)  # c and d at the pace of a's and b's work (5 s for 2)
    cluster = BatchTimeLeft({"a": 1.0, "b": 1.0}, _Clock())  # workers load side by side: kept
    cluster.clock.now += 12
    cluster.finished("a", succeeded=True, startup_s=10.0)
    assert cluster.seconds_left() == pytest.approx(12)


def _loads_once_then_works(clock: _Clock, input_path, output_path):
    """A job whose first run in this process loads its models for 10 s; each run works 2 s and writes
    the seconds it spent loading into its output, as predict's report.json does."""
    loading = 10.0 if clock.now == 1000.0 else 0.0
    clock.now += loading + 2
    Path(output_path).write_text(str(loading))


def test_the_batch_log_leaves_the_model_loading_out_of_its_first_estimate(tmp_path: Path, capsys):
    clock = _Clock()
    run_batch(["a", "b", "c", "d"], lambda p: tmp_path / p, partial(_loads_once_then_works, clock),
              scheduler="sync", description="predict", clock=clock,
              startup=lambda output: float(output.read_text()))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "predict 1/4 a: done (12 s, about 6 s left)"  # 36 s with the loading counted
    assert lines[1] == "predict 2/4 b: done (14 s, about 4 s left)"
