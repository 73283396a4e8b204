"""The SQLite job store: claim order, exclusive claims, attempt guards, crash recovery."""
from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid

import pytest

from api.jobs import JobStore

SUMMARY = {"filename": "a.tif", "bytes": 1, "width": 1, "height": 1, "bands": 3, "dtype": "uint8",
           "crs": "EPSG:3857", "gsd_m": 0.3}


def new(store: JobStore, priority: int = 0) -> str:
    job_id = str(uuid.uuid4())
    store.create(job_id, {"refine": "none"}, SUMMARY, priority=priority)
    time.sleep(0.002)  # distinct creation times
    return job_id


def _run_at_once(target, n: int) -> None:
    """``target`` on ``n`` threads started together; returns when all have ended."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_claims_follow_priority_then_age(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    first, second, urgent = new(store), new(store), new(store, priority=10)
    claimed = [store.claim_next().id for _ in range(3)]
    assert claimed == [urgent, first, second]
    assert store.claim_next() is None
    assert store.counts() == {"queued": 0, "running": 3, "succeeded": 0, "failed": 0}


def test_concurrent_claims_never_share_a_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    ids = {new(store) for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker():
        own = JobStore(store.db_path)
        while (job := own.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    _run_at_once(worker, 4)
    assert sorted(claimed) == sorted(ids)


def test_a_stale_attempt_cannot_touch_a_newer_one(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    assert store.claim_next().attempts == 1
    store.requeue(job_id, "crashed")
    assert store.claim_next().attempts == 2
    assert not store.set_progress(job_id, 1, 0.9, "old attempt")
    assert not store.mark_succeeded(job_id, 1, {})
    assert store.set_progress(job_id, 2, 0.5, "inference")
    job = store.get(job_id)
    assert (job.status, job.progress, job.stage, job.last_error) == ("running", 0.5, "inference", None)


def test_recovery_requeues_interrupted_jobs_until_the_attempts_run_out(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    store.claim_next()
    requeued, failed = store.recover_interrupted(max_attempts=2)
    assert (requeued, failed) == ([job_id], [])
    assert store.get(job_id).status == "queued"
    store.claim_next()
    requeued, failed = store.recover_interrupted(max_attempts=2)
    assert (requeued, failed) == ([], [job_id])
    job = store.get(job_id)
    assert job.status == "failed" and "interrupted 2 times" in job.error


def test_deleted_jobs_are_hidden_and_never_claimed(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    assert store.mark_deleted(job_id).status == "queued"
    assert store.get(job_id) is None and store.list(10, 0) == ([], 0)
    assert store.claim_next() is None
    assert store.deleted_ids() == [job_id]
    store.purge(job_id)
    assert store.get(job_id, include_deleted=True) is None


def test_of_concurrent_deletes_one_alone_removes_the_job(tmp_path):
    # each DELETE read the job, then tombstoned it: DELETEs at once all answered 204 and each logged
    # "deleted by" (a DELETE racing retention answered 204, not the expired 404)
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    both_read_first = threading.Barrier(4)
    real_get = store.get

    def get(job_id, include_deleted=False):
        job = real_get(job_id, include_deleted)
        both_read_first.wait(timeout=10)  # every DELETE has read the job before any tombstones it
        return job

    store.get = get
    results = []
    _run_at_once(lambda: results.append(store.mark_deleted(job_id)), 4)
    assert sum(r is not None for r in results) == 1, results


def test_progress_reaches_one_only_when_the_job_succeeds(tmp_path):
    # the pipeline reports 1.0 at its 'write' stage, before the worker publishes the results:
    # a client that took progress == 1 for done fetched them and got 409
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    store.claim_next()
    assert store.set_progress(job_id, 1, 1.0, "write")
    job = store.get(job_id)
    assert job.status == "running" and 0.98 < job.progress < 1.0
    store.mark_succeeded(job_id, 1, {})
    assert store.get(job_id).progress == 1.0


def test_a_new_job_is_in_stage_queued_like_a_requeued_one(tmp_path):
    # a fresh job showed stage null, a requeued one 'queued (retry)', a released one 'queued'
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    assert store.get(job_id).stage == "queued"
    assert store.list(10, 0)[0][0].stage == "queued"


def test_the_row_of_an_accepted_job_is_synced_before_the_202(tmp_path):
    from contextlib import contextmanager

    # the input is fsync'd before the row goes in; the row itself was committed with
    # synchronous=NORMAL (WAL), which a power cut can roll back: a 202 for a job that is gone
    store = JobStore(tmp_path / "jobs.sqlite")
    real, levels = store._connect, []

    @contextmanager
    def spy():
        with real() as con:
            yield con
            levels.append(con.execute("PRAGMA synchronous").fetchone()[0])

    store._connect = spy
    new(store)
    assert levels == [2]  # FULL


def test_a_running_job_estimates_its_time_left_from_its_rate_so_far(tmp_path):
    """A client polling a long job saw progress and stage but had to work out the time left itself."""
    from api.schemas import eta_s, job_status

    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    store.claim_next()
    started = store.get(job_id).started_at
    assert eta_s(store.get(job_id), started + 10) is None  # nothing done yet: no rate
    store.set_progress(job_id, 1, 0.02, "landcover")
    began = store.get(job_id).pipeline_started_at  # the rate is the pipeline's, from its first report
    assert eta_s(store.get(job_id), began + 10) is None  # too early to mean much
    store.set_progress(job_id, 1, 0.25, "buildings")
    reported = dataclasses.replace(store.get(job_id), updated_at=began + 60)  # a quarter done in 60 s
    assert eta_s(reported, began + 60) == 180.0
    # no report since: counted down, where the rate measured at each poll climbed (210 s, then 240 s)
    assert eta_s(reported, began + 70) == 170.0 and eta_s(reported, began + 80) == 160.0
    assert eta_s(reported, began + 500) == 1500.0  # overdue: the rate so far, not 0 (a poll every second)
    assert job_status(store.get(job_id), 0).eta_s is not None
    store.mark_succeeded(job_id, 1, {})
    assert job_status(store.get(job_id), 0).eta_s is None


def test_the_time_left_is_measured_from_the_pipeline_start_not_the_process_start(tmp_path):
    # the attempt's start-up (interpreter, imports, model load) moves no progress: counted in, a
    # 1024 px scene at 22 % after 1 s of pipeline and 9.4 s of start-up said 40 s left (3 s in fact),
    # and its Retry-After sent the client back 30 s later
    from api.schemas import eta_s

    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = new(store)
    store.claim_next()
    with sqlite3.connect(store.db_path) as con:  # the process started 9 s ago, still 'starting'
        con.execute("UPDATE jobs SET started_at = started_at - 9 WHERE id = ?", (job_id,))
    began = time.time()
    store.set_progress(job_id, 1, 0.0, "landcover")  # the pipeline begins now
    store.set_progress(job_id, 1, 0.25, "buildings")
    reported = dataclasses.replace(store.get(job_id), updated_at=began + 1)
    assert eta_s(reported, began + 1) == pytest.approx(3.0, abs=0.3)  # 1 s for a quarter (not 30)
    store.requeue(job_id, "crash")  # a new attempt measures its own pipeline
    store.claim_next()
    assert store.get(job_id).pipeline_started_at is None


def test_an_idempotency_key_makes_one_job_even_from_concurrent_submissions(tmp_path):
    from api.jobs import KeyTaken

    store = JobStore(tmp_path / "jobs.sqlite")
    made, taken = [], []

    def submit() -> None:
        try:
            made.append(store.create(str(uuid.uuid4()), {"refine": "none"}, SUMMARY, idempotency_key="k-1").id)
        except KeyTaken as exc:
            taken.append(exc.job_id)

    _run_at_once(submit, 6)
    assert len(made) == 1 and taken == made * 5
    assert store.by_idempotency_key("k-1").id == made[0] and store.counts()["queued"] == 1
    store.mark_deleted(made[0])  # a deleted job gives its key back
    assert store.by_idempotency_key("k-1") is None
    assert store.create(str(uuid.uuid4()), {}, SUMMARY, idempotency_key="k-1").id != made[0]


def test_a_job_table_from_before_idempotency_keys_gets_the_column(tmp_path):
    db = tmp_path / "jobs.sqlite"
    with sqlite3.connect(db) as con:  # the table as it was, with one job in it
        con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL DEFAULT 'job', status TEXT NOT NULL,"
                    " progress REAL NOT NULL DEFAULT 0, stage TEXT, error TEXT, last_error TEXT, options TEXT NOT NULL,"
                    " input TEXT NOT NULL, report TEXT, attempts INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL"
                    " DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
                    " started_at REAL, finished_at REAL, heartbeat_at REAL)")
        con.execute("INSERT INTO jobs (id, status, options, input, created_at, updated_at) VALUES"
                    " ('old', 'queued', '{}', '{}', 1, 1)")
    store = JobStore(db)
    assert store.get("old").status == "queued"
    assert store.create("new", {}, SUMMARY, idempotency_key="k").id == store.by_idempotency_key("k").id == "new"
