"""A batch's inputs of the same content (copies, links under other names) run once: the others get
copies of the first's output."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from dask.distributed import LocalCluster

import tiles.same_content
from tiles.batch import run_batch
from tiles.same_content import same_content


def _reads_through(monkeypatch) -> list[str]:
    """The names of the files ``tiles.same_content`` reads through (SHA-256), as it reads them."""
    hashed: list[str] = []
    sidecar_hash, whole_hash = tiles.same_content.file_sha256, tiles.same_content._read_through
    monkeypatch.setattr(tiles.same_content, "file_sha256", lambda p: hashed.append(p.name) or sidecar_hash(p))
    monkeypatch.setattr(tiles.same_content, "_read_through",
                        lambda real, advance: hashed.append(Path(real).name) or whole_hash(real, advance))
    return hashed


def test_copies_and_links_under_other_names_are_found_by_size_then_hash(tmp_path: Path, monkeypatch):
    s = tmp_path / "s"
    s.mkdir()
    (s / "a.tif").write_bytes(b"A" * 1000)
    (s / "copy_of_a.tif").write_bytes(b"A" * 1000)
    os.symlink("a.tif", s / "link.tif")
    (s / "same_size.tif").write_bytes(b"B" * 1000)  # hashed, and not a copy
    (s / "b.tif").write_bytes(b"A" * 999)
    (s / "other").mkdir()
    (s / "other" / "a2.tif").write_bytes(b"A" * 1000)  # a copy elsewhere, with a world file a.tif lacks
    (s / "other" / "a2.tfw").write_text("0.3\n0\n0\n-0.3\n0\n0\n")
    (s / "other" / "a3.tif").write_bytes(b"A" * 1000)
    (s / "other" / "a3.tfw").write_text("0.3\n0\n0\n-0.3\n0\n0\n")
    (s / "zip.vrt").write_bytes(b"A" * 1000)  # a VRT's bytes say nothing of the files it reads
    paths = [s / "a.tif", s / "b.tif", s / "copy_of_a.tif", s / "link.tif", s / "same_size.tif",
             s / "other" / "a2.tif", s / "other" / "a3.tif", s / "zip.vrt", "/vsizip//x.zip/a.tif"]
    hashed = _reads_through(monkeypatch)
    assert same_content(paths) == {s / "copy_of_a.tif": s / "a.tif", s / "link.tif": s / "a.tif",
                                   s / "other" / "a3.tif": s / "other" / "a2.tif"}
    assert "b.tif" not in hashed and hashed.count("a.tif") == 1  # the link's file is hashed once
    assert "same_size.tif" not in hashed  # told apart by its first bytes: not read through
    hashed.clear()
    assert same_content([s / "a.tif", s / "b.tif", s / "other"]) == {} and hashed == []  # distinct sizes: no reads


def _write_ok(input_path, output_path):
    """A batch job: fails for inputs named bad*, else writes its input's name."""
    if Path(str(input_path)).name.startswith("bad"):
        raise ValueError("no good")
    Path(output_path).write_text(f"made from {Path(str(input_path)).name}")
    return "ran"


def _copy(first_output: Path, input_path, output_path: Path) -> str:
    output_path.write_text(first_output.read_text() + f", copied for {Path(str(input_path)).name}")
    return "copied"


def test_an_input_of_the_same_content_gets_a_copy_of_the_first_output_not_a_run(tmp_path: Path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "done").write_text("made from done")  # already current: its copy is made from it
    inputs = ["a", "copy_a", "bad", "copy_bad", "done", "copy_done"]
    report = run_batch(inputs, lambda p: out / p, _write_ok, scheduler="sync", description="predict",
                       duplicates={"copy_a": "a", "copy_bad": "bad", "copy_done": "done"}, copy_output=_copy)
    assert report.done == {"a": "ran", "copy_a": "copied", "copy_done": "copied"}
    assert report.copied == {"copy_a": "a", "copy_done": "done"} and report.skipped == ["done"]
    assert (out / "copy_a").read_text() == "made from a, copied for copy_a"
    assert (out / "copy_done").read_text() == "made from done, copied for copy_done"
    assert sorted(report.failed) == ["bad", "copy_bad"] and not (out / "copy_bad").exists()
    assert report.failed["copy_bad"].startswith("ValueError: no good (the same content as bad, which failed")
    lines = capsys.readouterr().out.splitlines()  # no terminal: one line per input
    assert any(line.startswith("predict ") and "copy_a: the same content as a, outputs copied" in line
               for line in lines), lines
    again = run_batch(inputs, lambda p: out / p, _write_ok, scheduler="sync", show_progress=False,
                      duplicates={"copy_a": "a", "copy_bad": "bad", "copy_done": "done"}, copy_output=_copy)
    assert sorted(again.skipped) == ["a", "copy_a", "copy_done", "done"] and not again.done


def test_copies_behave_the_same_on_a_dask_cluster(tmp_path: Path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        report = run_batch(["a", "copy_a", "bad", "copy_bad"], lambda p: tmp_path / p, _write_ok,
                           scheduler=cluster.scheduler_address, show_progress=False,
                           duplicates={"copy_a": "a", "copy_bad": "bad"}, copy_output=_copy)
    assert report.done == {"a": "ran", "copy_a": "copied"} and report.copied == {"copy_a": "a"}
    assert (tmp_path / "copy_a").read_text() == "made from a, copied for copy_a"
    assert sorted(report.failed) == ["bad", "copy_bad"]


def test_files_of_one_size_that_differ_only_inside_are_not_the_same(tmp_path: Path):
    """The ends of two files say they may be the same; only their whole bytes say they are."""
    middle = 3 * tiles.same_content.ENDS
    data = bytearray(b"x" * (2 * middle))
    (tmp_path / "a.tif").write_bytes(bytes(data))
    data[middle] = ord("y")
    (tmp_path / "b.tif").write_bytes(bytes(data))
    (tmp_path / "c.tif").write_bytes((tmp_path / "a.tif").read_bytes())
    assert same_content([tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"]) == {
        tmp_path / "c.tif": tmp_path / "a.tif"}


def test_a_moved_scene_is_known_by_its_record_reading_only_what_a_recorded_size_needs(tmp_path: Path, monkeypatch):
    """A scene re-delivered under another name or folder, the old file gone: nothing was left to
    compare it with, so a batch predicted it again. What an output records of its input
    (``content_record``) now finds it, reading through only the files whose size and ends match."""
    import hashlib
    import shutil

    from tiles.same_content import content_record, same_as_recorded

    from geoseg.paths import data_root

    scene = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
    old = tmp_path / "delivery1" / "a.tif"
    old.parent.mkdir()
    shutil.copyfile(scene, old)
    record = content_record(old)
    assert record == {"bytes": old.stat().st_size, "ends_sha256": record["ends_sha256"],
                      "sha256": hashlib.sha256(scene.read_bytes()).hexdigest(), "sidecars": {}}
    new = tmp_path / "delivery2" / "a_resent.tif"
    new.parent.mkdir()
    shutil.move(old, new)  # the old path is gone
    data = bytearray(new.read_bytes())
    same_size = tmp_path / "delivery2" / "same_size.tif"  # the scene's size, other last bytes
    same_size.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
    inside = tmp_path / "delivery2" / "inside.tif"  # the scene's size and ends, one byte changed inside
    data[len(data) // 2] ^= 1
    inside.write_bytes(bytes(data))
    placed = tmp_path / "delivery3" / "a.tif"  # the same bytes with a world file the first had not
    placed.parent.mkdir()
    shutil.copyfile(new, placed)
    placed.with_suffix(".tfw").write_text("0.3\n0\n0\n-0.3\n0\n0\n")
    other = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    hashed = _reads_through(monkeypatch)
    records = {str(tmp_path / "elsewhere" / "b.tif"): {"bytes": 1, "sha256": "0"}, str(old): record,
               str(tmp_path / "broken.tif"): "no record"}
    assert same_as_recorded([other, new, same_size, inside, placed], records) == {new: str(old)}
    # through: the moved scene, the one differing inside, the one with a world file (and that file);
    # not same_size, told apart at its end
    assert sorted(hashed) == ["a.tfw", "a.tif", "a_resent.tif", "inside.tif"]
    hashed.clear()
    assert same_as_recorded([other, scene.with_name("kampala_z20_1.tif")], records) == {} and hashed == []


def test_reading_same_size_scenes_through_shows_progress_only_when_it_is_long(tmp_path: Path, monkeypatch):
    """Two same-size multi-GB scenes were read through whole before the batch's bar with no word. A
    comparison reading ``QUIET_BYTES`` or more now says so (a line in a log, a transient bar on a
    terminal); below, nothing. Real scenes here, the threshold lowered to their size."""
    import io
    import shutil
    from contextlib import contextmanager

    from rich.console import Console

    import tiles.hashing_progress
    from geoseg.paths import data_root
    from tiles.hashing_progress import hashing_progress
    from tiles.same_content import content_record, same_as_recorded

    scene = data_root() / "buildings" / "zanzibar" / "zanzibar_z21_1.tif"
    size = scene.stat().st_size
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    shutil.copyfile(scene, a)
    shutil.copyfile(scene, b)
    told: list[tuple[int, int, int]] = []

    @contextmanager
    def recording(total: int, files: int):
        read = [0]
        yield lambda n: read.__setitem__(0, read[0] + n)
        told.append((total, files, read[0]))

    assert same_content([a, b], recording) == {b: a} and told == [(2 * size, 2, 2 * size)]
    log = io.StringIO()
    quiet = hashing_progress("predict", Console(file=log, force_terminal=False))
    assert same_content([a, b], quiet) == {b: a} and log.getvalue() == ""  # 15 MB: below the threshold
    monkeypatch.setattr(tiles.hashing_progress, "QUIET_BYTES", size)
    assert same_content([a, b], quiet) == {b: a}
    assert log.getvalue() == (f"predict: reading 2 inputs through ({2 * size / 1e6:.1f} MB, SHA-256) to find those "
                              f"of the same content\n")
    terminal = io.StringIO()
    bar = hashing_progress("predict", Console(file=terminal, force_terminal=True, width=150))
    assert same_content([a, b], bar) == {b: a}
    assert "reading 2 inputs through" in terminal.getvalue()  # drawn while it reads, then erased
    # a scene moved since an earlier batch, checked against that batch's record: read through too
    told.clear()
    moved = tmp_path / "moved.tif"
    shutil.move(b, moved)
    assert same_as_recorded([moved], {str(b): content_record(a)}, recording) == {moved: str(b)}
    assert told == [(size, 1, size)]


def test_distinct_sizes_read_nothing_through_and_say_nothing(tmp_path: Path, monkeypatch):
    import io

    from rich.console import Console

    import tiles.hashing_progress
    from geoseg.paths import data_root
    from tiles.hashing_progress import hashing_progress

    monkeypatch.setattr(tiles.hashing_progress, "QUIET_BYTES", 0)
    log = io.StringIO()
    scenes = sorted((data_root() / "buildings" / "kampala").glob("*.tif"))
    assert same_content(scenes, hashing_progress("predict", Console(file=log, force_terminal=False))) == {}
    assert log.getvalue() == ""
