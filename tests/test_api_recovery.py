"""No job stays 'running' for ever: whatever goes wrong around a job's process (the job table
failing for a moment when the process ends, a process that cannot be started), the supervisor
settles the job: retried, or failed with a reason."""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

from test_api_contract import SCENE, service, submit, wait
from test_api_fakes import crashing_runner, footprint_runner


def test_a_job_whose_end_cannot_be_recorded_at_once_is_settled_on_the_next_tick(tmp_path):
    # e.g. a full disk: the table answered "disk I/O error" while the supervisor reaped the dead
    # worker; the job was dropped from its bookkeeping and stayed 'running' for ever
    with service(tmp_path, runner=crashing_runner, max_attempts=1) as client:
        supervisor, store = client.app.state.supervisor, client.app.state.store
        real_reap, real_get = supervisor._reap, store.get
        reaping, failures = threading.local(), []

        def reap() -> None:
            reaping.on = True
            try:
                real_reap()
            finally:
                reaping.on = False

        def get(job_id, include_deleted=False):
            if getattr(reaping, "on", False) and not failures:
                failures.append(job_id)
                raise sqlite3.OperationalError("disk I/O error")
            return real_get(job_id, include_deleted)

        supervisor._reap, store.get = reap, get
        job = wait(client, submit(client)["id"], timeout=30)
        assert failures == [job["id"]]  # the fault did hit the reap of this job
        assert job["status"] == "failed" and "137" in job["error"], job
        folder = tmp_path / "svc" / "jobs" / job["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["input.tif"]
        assert client.get("/healthz").json()["running"] == 0


def test_a_job_whose_process_cannot_be_started_is_retried_then_failed_saying_why(tmp_path):
    with service(tmp_path, runner=footprint_runner, max_attempts=2) as client:
        supervisor = client.app.state.supervisor
        real_start, starts = supervisor._start_job, []

        def start(args):
            starts.append(args["attempt"])
            if len(starts) <= 1:
                raise BlockingIOError(11, "Resource temporarily unavailable")  # fork: EAGAIN
            return real_start(args)

        supervisor._start_job = start
        job = wait(client, submit(client)["id"], timeout=30)
        assert job["status"] == "succeeded" and job["attempts"] == 2, job

        supervisor._start_job = lambda args: (_ for _ in ()).throw(OSError(12, "Cannot allocate memory"))
        job = wait(client, submit(client)["id"], timeout=30)
        assert job["status"] == "failed" and job["attempts"] == 2, job
        assert "could not start a worker process" in job["error"] and "Cannot allocate memory" in job["error"]


def test_an_upload_on_a_full_disk_is_refused_with_507_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import api.intake

    store_upload = api.intake.store_upload

    def store_until_full(upload, dest, max_bytes):  # e.g. its fsync, the disk filled meanwhile
        store_upload(upload, dest, max_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    with service(tmp_path) as client:
        svc = tmp_path / "svc"
        monkeypatch.setattr(api.intake, "store_upload", store_until_full)
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")})
        assert r.status_code == 507 and "disk space" in r.json()["detail"], r.text
        monkeypatch.undo()

        store = client.app.state.store
        real_create = store.create

        def create_on_full_disk(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        store.create = create_on_full_disk
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")})
        assert r.status_code == 507 and "disk space" in r.json()["detail"], r.text
        assert list((svc / "uploads").iterdir()) == [] and list((svc / "jobs").iterdir()) == []

        store.create = real_create
        assert wait(client, submit(client)["id"])["status"] == "succeeded"  # space came back


def test_a_job_table_that_cannot_be_read_answers_503_with_a_detail(tmp_path):
    with service(tmp_path) as client:
        job_id = submit(client)["id"]
        store = client.app.state.store

        def unreadable(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

        store.get, store.list = unreadable, unreadable
        for url in (f"/v1/jobs/{job_id}", "/v1/jobs"):
            r = client.get(url)
            assert r.status_code == 503 and "disk I/O error" in r.json()["detail"], r.text
            assert r.headers["retry-after"]


def test_a_worker_killed_by_sigbus_is_said_to_have_hit_a_full_disk():
    import signal

    from api.worker import _describe_exit

    # what a job on a full data dir ended with: "worker killed by SIGBUS", nothing more
    assert "disk full" in _describe_exit(-signal.SIGBUS)
    assert "out of memory" in _describe_exit(-signal.SIGKILL)
    assert _describe_exit(3) == "worker exited with code 3"


def test_a_hung_job_whose_heartbeat_beats_on_times_out_and_the_next_job_runs(tmp_path):
    from api.settings import Settings
    from test_api_fakes import hanging_runner

    # a process alive but stuck: its heartbeat thread beats on, so only a time limit ends it
    with service(tmp_path, runner=hanging_runner, job_timeout_s=3, max_attempts=3) as client:
        hung = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        after = submit(client)["id"]  # queued behind it (one worker)
        job = wait(client, hung, timeout=30)
        assert job["status"] == "failed" and job["attempts"] == 1, job  # not retried: as long again
        assert "timed out" in job["error"] and "GEOSEG_JOB_TIMEOUT_S=3" in job["error"]
        assert "inference" in job["error"]
        assert wait(client, after, timeout=30)["status"] == "succeeded"
    assert Settings().job_timeout_s > 0  # on by default: no job is 'running' for ever



def test_a_retried_job_says_why_its_previous_attempt_ended(tmp_path):
    from test_api_fakes import freezing_runner

    # the worker was killed (here: its heartbeat stopped); the job went back to the queue and,
    # while it ran again, nothing said why: 'error' is null until the job fails for good
    with service(tmp_path, runner=freezing_runner, heartbeat_s=0.2, stale_after_s=2,
                 max_attempts=2) as client:
        job_id = submit(client)["id"]
        deadline = time.monotonic() + 30
        job = client.get(f"/v1/jobs/{job_id}").json()
        while job["attempts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running") and job["error"] is None, job
        assert "no heartbeat" in job["previous_error"], job
        assert client.get("/v1/jobs").json()["items"][0]["previous_error"] == job["previous_error"]
        job = wait(client, job_id, timeout=30)
        assert job["status"] == "failed" and "no heartbeat" in job["error"]


def test_a_job_table_from_before_previous_error_is_upgraded(tmp_path):
    from api.jobs import _SCHEMA, JobStore

    db = tmp_path / "jobs.sqlite"
    con = sqlite3.connect(db)
    con.executescript(_SCHEMA.replace("    previous_error TEXT,\n", ""))
    con.execute("INSERT INTO jobs (id, status, options, input, created_at, updated_at)"
                " VALUES ('a', 'queued', '{}', '{}', 1, 1)")
    con.commit()
    con.close()
    store = JobStore(db)
    assert store.get("a").previous_error is None
    store.claim_next()
    store.requeue("a", "worker killed by SIGKILL")
    assert store.get("a").previous_error == "worker killed by SIGKILL"
    JobStore(db)  # opening it again changes nothing


def test_a_tick_that_keeps_failing_is_logged_once_not_five_times_a_second(tmp_path, caplog):
    import logging

    with service(tmp_path) as client:
        store = client.app.state.store
        real = store.deleted_ids
        failures = threading.Semaphore(0)

        def broken():
            failures.release()
            raise sqlite3.OperationalError("disk I/O error")

        with caplog.at_level(logging.WARNING, logger="geoseg.api.worker"):
            store.deleted_ids = broken
            for _ in range(10):  # ten ticks that fail, counted rather than guessed from a sleep
                assert failures.acquire(timeout=30), "the supervisor stopped ticking"
            store.deleted_ids = real
            _until_logged(caplog, "work again")
    failed = [r for r in caplog.records if r.getMessage().startswith("supervisor tick failed")]
    assert len(failed) == 1, len(failed)


def _until_logged(caplog, words: str, timeout: float = 30.0) -> None:
    """Wait for a log record holding ``words`` (written by the supervisor's thread)."""
    deadline = time.monotonic() + timeout
    while not any(words in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"no {words!r} logged within {timeout} s"
        time.sleep(0.02)


def test_the_heartbeat_outlives_a_failed_write(tmp_path):
    import os

    from api.worker import _heartbeat

    # one write that failed (say the table was locked past its timeout) ended the heartbeat
    # thread: a job still running was then killed as silent
    beats = []

    class FlakyStore:
        def heartbeat(self, job_id, attempt):
            beats.append(attempt)
            if len(beats) == 2:
                raise sqlite3.OperationalError("database is locked")
            return True

    stop = threading.Event()
    thread = threading.Thread(target=_heartbeat, args=(FlakyStore(), "j", 1, 0.01, os.getppid(), stop))
    thread.start()
    deadline = time.monotonic() + 5
    while len(beats) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert len(beats) >= 5


def test_a_progress_write_that_fails_does_not_fail_the_job(tmp_path):
    from test_api_fakes import progress_write_fails_once_runner

    with service(tmp_path, runner=progress_write_fails_once_runner, max_attempts=1) as client:
        job = wait(client, submit(client)["id"], timeout=30)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job


def test_an_upload_that_fills_the_disk_while_parsed_gets_507_not_400(tmp_path, monkeypatch):
    import errno

    from api.upload_parts import PartFile

    # multipart parsing writes each file part to the uploads folder (api.upload_parts; before it,
    # Starlette spooled it to the system temp dir): with that disk full the answer was "400 There
    # was an error parsing the body", as if the client had sent garbage
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with service(tmp_path) as client:
        monkeypatch.setattr(PartFile, "write", full)
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")})
        assert r.status_code == 507 and "disk space" in r.json()["detail"], r.text
        assert list((tmp_path / "svc" / "uploads").iterdir()) == []
        monkeypatch.undo()
        r = client.post("/v1/jobs", content=b"--x\r\nnot a form", headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code in (400, 422), r.text  # a malformed body is still the client's


FULL_DISK_READS = r'''
import resource, signal, sys, time
sys.path[:0] = sys.argv[2:]
from pathlib import Path
from test_api_contract import service, submit, wait
with service(Path(sys.argv[1])) as client:
    job = wait(client, submit(client)["id"])
    assert job["status"] == "succeeded", job
    time.sleep(0.3)  # the supervisor's own passes, which read the table, are done with it
    # from here no file may grow (as on a full disk: creating the table's 32 KiB -shm fails)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/buildings.geojson", "/v1/jobs", "/healthz"):
        r = client.get(path)
        print(path, r.status_code, r.text[:200])
'''


def test_polls_and_downloads_keep_working_once_the_disk_is_full(tmp_path):
    # the last connection to close removed jobs.sqlite-wal and -shm, and the next read had to create
    # the -shm again: on a full disk every poll, download, job list and /healthz answered 503 on
    # an idle server. The server holds one idle connection (JobStore.keep_open)
    import subprocess
    import sys

    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", FULL_DISK_READS, str(tmp_path), tests, str(Path(tests).parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = done.stdout.splitlines()
    assert len(answers) == 4 and all(line.split()[1] == "200" for line in answers), done.stdout
