"""One run at a time per --out folder (geoseg.commands.outlock): cron starting tonight's batch while
last night's still runs must not corrupt it, and a run killed with -9 leaves no lock behind."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from checks import assert_one_line_error
from test_cli_predict import FAST, _crops
from test_train_cli import buildings_pack
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.commands.outlock import OutFolderInUse, hold_out_folder, lock_path

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys
from pathlib import Path
from geoseg.commands.outlock import hold_out_folder
with hold_out_folder(Path(sys.argv[1]), sys.argv[2], key=sys.argv[3]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it, or kills this process
"""


class Holder:
    """Another process holding ``out`` as a run of ``command`` does, until ``release`` or ``kill``."""

    def __init__(self, out: Path, command: str, key: str = "") -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), command, key], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"
        self.pid = self.process.pid

    def release(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0
        self.process.stdout.close()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stdin.close()
        self.process.stdout.close()


def test_a_second_predict_into_a_dir_in_use_is_refused_at_once(tmp_path):
    """Two batches into one DIR removed each other's .<stem>.part folders half-way (inputs failed in
    both: 'unable to open database file'), rewrote each other's batch.json and could replace a
    finished folder while it was read. The second is refused in one line naming the first, before it
    writes anything; a single input into that DIR too."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    out = tmp_path / "o"
    first = Holder(out, "geoseg predict")
    try:
        before = sorted(os.listdir(out))
        batch = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST])
        assert_one_line_error(batch, "predict", f"{out} is in use by another run (geoseg predict, pid {first.pid}, "
                                                "started 20", f"Z, on host {socket.gethostname()}): wait",
                              "use another --out")
        one = CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(out), *FAST])
        assert_one_line_error(one, "predict", f"pid {first.pid}")
        mosaic = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), "--mosaic", *FAST])
        assert_one_line_error(mosaic, "predict", f"pid {first.pid}")
        assert sorted(os.listdir(out)) == before == [lock_path(out).name]  # no batch.json, no .a.part, no VRT
    finally:
        first.release()
    assert not lock_path(out).exists()  # the holder removes its file when it lets go


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "o"
    first = Holder(out, "geoseg predict")
    with pytest.raises(OutFolderInUse), hold_out_folder(out, "geoseg predict"):
        pass
    first.kill()  # no clean-up ran: its lock file stays, but the kernel dropped the lock
    assert lock_path(out).exists()
    with hold_out_folder(out, "geoseg predict"):
        record = json.loads(lock_path(out).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "geoseg predict"
        assert record["host"] == socket.gethostname()  # a pid alone names no process on a shared file system
    assert not lock_path(out).exists()


def test_a_refused_or_failed_run_leaves_no_empty_out_folder(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), hold_out_folder(out, "geoseg tile"):
        raise RuntimeError("failed before writing")
    assert not out.exists()


def test_a_second_tile_into_an_out_in_use_is_refused_before_it_reads_or_moves_chips(tmp_path, buildings_dir):
    scene = buildings_dir / "kampala" / "kampala_z19_1.tif"
    out = tmp_path / "chips"
    first = Holder(out, "geoseg tile")
    try:
        result = CliRunner().invoke(app, ["tile", str(scene), "--labels", str(scene.parent / "labels.geojson"),
                                          "--out", str(out), "--size", "256"])
        assert_one_line_error(result, "tile", f"{out} is in use by another run (geoseg tile, pid {first.pid}")
        assert os.listdir(out) == [lock_path(out).name]
    finally:
        first.release()


def test_a_second_training_of_one_task_into_one_out_is_refused(tmp_path):
    """Two trainings of one task into one --out replaced each other's <name>.pt and <name>.json (the
    weights of one run could end up beside the other's card); other tasks may share the folder."""
    out = tmp_path / "models"
    first = Holder(out, "geoseg train buildings", key="train-buildings")
    try:
        result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                          "--out", str(out), "--epochs", "1", "--batch-size", "2", "--crop", "32"])
        assert_one_line_error(result, "train", f"(geoseg train buildings, pid {first.pid}")
        assert os.listdir(out) == [lock_path(out, "train-buildings").name]
        with hold_out_folder(out, "geoseg train landcover", key="train-landcover"):
            pass
    finally:
        first.release()


def test_an_out_folder_on_a_full_disk_is_one_line_before_any_work(tmp_path, monkeypatch):
    """The lock's record could not be written on a full disk: the run ended in '[Errno 28] No space
    left on device', naming no folder, and left an empty lock file."""
    import errno

    from geoseg.commands import outlock

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outlock.os, "pwrite", full)
    _crops(tmp_path / "s", "a.tif", "b.tif")
    (tmp_path / "o").mkdir()
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", f"cannot write into the --out folder {tmp_path / 'o'}: "
                                             "No space left on device")
    assert list((tmp_path / "o").iterdir()) == []


def test_a_file_system_without_locks_runs_unlocked(tmp_path, monkeypatch, capfd):
    """Some network file systems refuse flock (ENOLCK): a run there goes on, as before the locks."""
    import errno

    from geoseg.commands import outlock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(outlock.fcntl, "flock", no_locks)
    # said (two array tasks into one DIR there lost batch.json records and each other's scratch, silently),
    # in one `warning:` line as every warning of the commands (not Python's two-line form)
    with hold_out_folder(tmp_path / "o", "geoseg predict"):
        assert list((tmp_path / "o").iterdir()) == []
    said = capfd.readouterr().err.strip().splitlines()
    assert said == [f"warning: the file system of {tmp_path / 'o'} has no locks (flock): another run into it at the "
                    "same time would not be refused; give each run an --out of its own there"], said
    assert (tmp_path / "o").is_dir()


def test_a_groups_shared_out_folder_stays_usable_by_every_member(tmp_path, monkeypatch):
    """A team's shared --out (setgid, umask 002): the lock files were made 0644 whatever the umask, so
    after a member's run was killed (kill -9, a scheduler's time limit) another member's run was
    refused ('cannot write into the --out folder: Permission denied'), its inputs failing on the
    outputs' lock files; buildings.gpkg was 0644 (SQLite's own mode), so colleagues could not edit it."""
    import errno

    from tiles import output_lock

    old = os.umask(0o002)
    try:
        out = tmp_path / "o"
        with hold_out_folder(out, "geoseg predict"):
            assert lock_path(out).stat().st_mode & 0o777 == 0o664
        with output_lock.output_lock(out / "a"):
            assert output_lock.lock_path(out / "a").stat().st_mode & 0o777 == 0o664
        _crops(tmp_path / "s", "a.tif")
        done = CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(tmp_path / "p"),
                                        *FAST])
        assert done.exit_code == 0, done.output
        assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "p").iterdir()
                if p.name.startswith("buildings")} == {"buildings.gpkg": 0o664, "buildings.geojson": 0o664}
    finally:
        os.umask(old)

    # lock files another member's killed runs left, which this user may read but not write: removed, and
    # this run's own made (locked read-only, NFS would refuse the lock, and its record named the dead run)
    first = Holder(out, "geoseg predict")
    first.kill()
    output_lock.lock_path(out / "a").write_text("")
    stale = {lock_path(out).stat().st_ino, output_lock.lock_path(out / "a").stat().st_ino}
    real_open = os.open

    def not_mine(path, flags, *args, **kwargs):
        if flags & (os.O_RDWR | os.O_WRONLY) and os.path.exists(path) and os.stat(path).st_ino in stale:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", not_mine)
    with hold_out_folder(out, "geoseg predict"):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()  # its own file and record
        with pytest.raises(OutFolderInUse, match=f"pid {os.getpid()}, "):  # still a lock: a second run is refused
            with hold_out_folder(out, "geoseg predict"):
                pass
    with output_lock.output_lock(out / "a"):
        pass
    # another member's live run: this one is refused, naming it
    second = Holder(out, "geoseg predict")
    try:
        stale.add(lock_path(out).stat().st_ino)
        with pytest.raises(OutFolderInUse, match=f"pid {second.pid}, "):
            with hold_out_folder(out, "geoseg predict"):
                pass
    finally:
        second.release()


def test_a_batch_says_a_folder_another_run_is_writing_is_in_use(tmp_path):
    """A cluster's collecting batch started while an array task still wrote results/a (one INPUT's
    predict into it) failed that input as 'not an output of geoseg predict ...: move it', advice to move
    a folder in use."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    out = tmp_path / "o"
    task = Holder(out / "a", "geoseg predict")  # as `geoseg predict s/a.tif --out o/a` holds it
    try:
        batch = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST])
    finally:
        task.release()
    assert batch.exit_code == 1, batch.output
    assert (f"a.tif: {out / 'a'} is being written by another run (geoseg predict, pid {task.pid}, started 20"
            in batch.stderr), batch.stderr
    assert "run this batch again once that run has ended" in batch.stderr and (out / "b" / "report.json").is_file()
