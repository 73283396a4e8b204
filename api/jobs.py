"""Durable job table in SQLite (WAL): the single source of truth for every accepted job.

The server process and its worker processes each open their own connections;
state changes are single UPDATE statements guarded by the attempt number, so a
stale worker (from before a crash) can never overwrite a newer attempt.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed")
#: the statuses of a job that has ended: nothing will run it again (retention may remove it)
ENDED = ("succeeded", "failed")
#: how long the 404 of an expired job still says it expired (a note of a few dozen bytes a job)
EXPIRY_NOTE_KEEP_S = 7 * 86400.0
#: the highest progress a running job shows; 1.0 is reached only with 'succeeded'
RUNNING_MAX_PROGRESS = 0.99

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'job',
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    error TEXT,
    last_error TEXT,
    previous_error TEXT,
    options TEXT NOT NULL,
    input TEXT NOT NULL,
    report TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    pipeline_started_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, deleted, priority, created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS expired_jobs (
    id TEXT PRIMARY KEY,
    expired_at REAL NOT NULL,
    retention_hours REAL NOT NULL
);
"""


@contextmanager
def _write_transaction(con: sqlite3.Connection) -> Iterator[None]:
    """A transaction that takes the write lock at once (``BEGIN IMMEDIATE``: a read in it cannot
    be overtaken by another writer); committed when the block ends, also by a ``return``, rolled
    back when it raises (the exception goes on)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class KeyTaken(Exception):
    """The ``Idempotency-Key`` of a submission already names job ``job_id`` (no row inserted)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already names job {job_id}")
        self.job_id = job_id


class QueueFull(Exception):
    """``waiting`` jobs already wait ahead of a new one of ``priority``: the limit is ``limit``."""

    def __init__(self, waiting: int, limit: int, priority: int) -> None:
        super().__init__(f"{waiting} jobs wait (limit {limit})")
        self.waiting, self.limit, self.priority = waiting, limit, priority


@dataclass(frozen=True)
class Job:
    """One row of the job table, decoded."""

    id: str
    kind: str
    status: str
    progress: float
    stage: str | None
    error: str | None
    last_error: str | None
    #: why the attempt before the current one ended (set when the job was requeued)
    previous_error: str | None
    options: dict[str, Any]
    input: dict[str, Any]
    report: dict[str, Any] | None
    attempts: int
    priority: int
    deleted: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    #: when the attempt's runner first reported progress, its start-up (interpreter, imports,
    #: models) behind it: the rate of ``progress`` is measured from here
    pipeline_started_at: float | None = None
    #: the client whose key submitted it (``GEOSEG_API_KEYS_FILE``); None: the operator's key, or an
    #: open server. A client sees only its own jobs
    client: str | None = None
    #: of a failed job, whether the same submission may succeed later: True when it failed for the
    #: server's reasons (its workers crashed or were killed until the attempts ran out), False when
    #: its input, options or time limit are at fault; None unless failed (or failed before the column)
    retryable: bool | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"], kind=row["kind"], status=row["status"], progress=row["progress"],
            stage=row["stage"], error=row["error"], last_error=row["last_error"],
            previous_error=row["previous_error"],
            options=json.loads(row["options"]), input=json.loads(row["input"]),
            report=json.loads(row["report"]) if row["report"] else None,
            attempts=row["attempts"], priority=row["priority"], deleted=bool(row["deleted"]),
            created_at=row["created_at"], updated_at=row["updated_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            heartbeat_at=row["heartbeat_at"], pipeline_started_at=row["pipeline_started_at"],
            client=row["client"], retryable=None if row["retryable"] is None else bool(row["retryable"]),
        )


class JobStore:
    """CRUD and state transitions of jobs; safe to use from several threads and processes."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._keeper: sqlite3.Connection | None = None
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            columns = {row["name"] for row in con.execute("PRAGMA table_info(jobs)")}
            for column, kind in (("previous_error", "TEXT"), ("pipeline_started_at", "REAL"),
                                 ("idempotency_key", "TEXT"), ("client", "TEXT"),
                                 ("retryable", "INTEGER")):
                if column in columns:
                    continue
                try:  # a data dir from before the column
                    con.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
            expired_columns = {row["name"] for row in con.execute("PRAGMA table_info(expired_jobs)")}
            if "client" not in expired_columns:
                try:  # whose job expired: another client's 404 says nothing of it
                    con.execute("ALTER TABLE expired_jobs ADD COLUMN client TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise
            # after the column: a data dir from before it gets the column first
            con.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (idempotency_key)"
                        " WHERE idempotency_key IS NOT NULL")

    def keep_open(self) -> None:
        """Hold one idle connection until ``close``: the server's, for its lifetime.

        Why: each call opens and closes its own connection, and the last one to close checkpoints
        the WAL and removes ``jobs.sqlite-wal`` and ``-shm``; the next read must create the 32 KiB
        ``-shm`` again, which fails on a full disk, so every poll, download and ``/healthz`` answered
        503 on an idle server whose disk had filled. Held open, the files stay and reads work."""
        if self._keeper is None:
            keeper = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
            keeper.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()  # maps the WAL index, ends its read
            self._keeper = keeper

    def close(self) -> None:
        """Release ``keep_open``'s connection (the files go with the last connection, as before)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA synchronous=NORMAL")
        try:
            yield con
        finally:
            con.close()

    # -- creation and reads -------------------------------------------------
    def create(self, job_id: str, options: dict[str, Any], input_summary: dict[str, Any],
               kind: str = "job", priority: int = 0, max_queued: int = 0,
               idempotency_key: str | None = None, client: str | None = None) -> Job:
        """Queue a job; ``QueueFull`` (nothing inserted) while ``max_queued`` (0: no limit) jobs
        wait ahead of it, counted in the inserting transaction so concurrent uploads cannot
        overshoot the limit; ``KeyTaken`` (nothing inserted) when a job not deleted already has
        ``idempotency_key``, checked in the same transaction, so two concurrent retries make one job."""
        with self._connect() as con:
            # the 202 promises this row: synced before the commit returns, as the input file is
            # (WAL + NORMAL, enough for every other write, can lose the last commits on power loss)
            con.execute("PRAGMA synchronous=FULL")
            with _write_transaction(con):
                if idempotency_key is not None:
                    taken = con.execute("SELECT id FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                    if taken is not None:
                        raise KeyTaken(taken[0])
                if max_queued:
                    waiting = self._queued_ahead(con, priority)
                    if waiting >= max_queued:
                        raise QueueFull(waiting, max_queued, priority)
                now = time.time()
                con.execute(
                    "INSERT INTO jobs (id, kind, status, stage, options, input, priority, created_at,"
                    " updated_at, idempotency_key, client) VALUES (?, ?, 'queued', 'queued', ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, kind, json.dumps(options), json.dumps(input_summary), priority, now, now,
                     idempotency_key, client),
                )
        # built here, not read back: once the row is in, nothing may fail and disown it
        return Job(id=job_id, kind=kind, status="queued", progress=0.0, stage="queued", error=None,
                   last_error=None, previous_error=None, options=json.loads(json.dumps(options)),
                   input=json.loads(json.dumps(input_summary)), report=None, attempts=0,
                   priority=priority, deleted=False, created_at=now, updated_at=now,
                   started_at=None, finished_at=None, heartbeat_at=None, client=client)

    def by_idempotency_key(self, key: str) -> Job | None:
        """The job (not deleted) a submission with ``Idempotency-Key: key`` made, if any."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE idempotency_key = ? AND deleted = 0", (key,)).fetchone()
        return None if row is None else Job.from_row(row)

    def get(self, job_id: str, include_deleted: bool = False) -> Job | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (row["deleted"] and not include_deleted):
            return None
        return Job.from_row(row)

    def list(self, limit: int, offset: int, status: str | None = None,
             after: tuple[float, str] | None = None, client: str | None = None) -> tuple[list[Job], int]:
        """Newest first; ``after`` (created_at, id of the last job a client saw) starts the page
        right after that job, wherever jobs created or deleted since have moved it. ``total``
        counts every job of ``status``; both come from one snapshot of the table. ``client``: that
        client's jobs only (None: every job)."""
        where, args = "deleted = 0", []
        if client is not None:
            where += " AND client = ?"
            args.append(client)
        if status is not None:
            where += " AND status = ?"
            args.append(status)
        page_where, page_args = where, list(args)
        if after is not None:
            page_where += " AND (created_at < ? OR (created_at = ? AND id > ?))"
            page_args += [after[0], after[0], after[1]]
        with self._connect() as con:
            con.execute("BEGIN")  # one read snapshot: total and items agree
            try:
                total = con.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", args).fetchone()[0]
                rows = con.execute(
                    f"SELECT * FROM jobs WHERE {page_where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                    [*page_args, limit, offset],
                ).fetchall()
            finally:
                con.execute("COMMIT")
        return [Job.from_row(r) for r in rows], int(total)

    @staticmethod
    def _queued_ahead(con: sqlite3.Connection, priority: int) -> int:
        return int(con.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND deleted = 0"
                               " AND priority >= ?", (priority,)).fetchone()[0])

    def queued_ahead(self, priority: int = 0) -> int:
        """Queued jobs a new job of ``priority`` waits behind (claims go by priority, then age)."""
        with self._connect() as con:
            return self._queued_ahead(con, priority)

    def queued_before(self, job: Job) -> int:
        """Queued jobs that will be claimed before queued ``job`` (``claim_next``'s order:
        priority, then age)."""
        with self._connect() as con:
            return int(con.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND deleted = 0 AND id != ?"
                " AND (priority > ? OR (priority = ? AND created_at < ?))",
                (job.id, job.priority, job.priority, job.created_at)).fetchone()[0])

    def running(self) -> list[Job]:
        """Jobs in status 'running' (deleted ones included)."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs WHERE status = 'running'").fetchall()
        return [Job.from_row(r) for r in rows]

    def recent_run_seconds(self, limit: int) -> list[float]:
        """How long the last ``limit`` successful attempts ran (start to finish, newest first),
        deleted jobs included while their rows last (a finished ``/v1/segment`` is deleted)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT finished_at - started_at FROM jobs WHERE status = 'succeeded'"
                " AND started_at IS NOT NULL AND finished_at IS NOT NULL"
                " ORDER BY finished_at DESC LIMIT ?", (limit,)).fetchall()
        return [max(0.0, float(r[0])) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE deleted = 0 GROUP BY status"
            ).fetchall()
        found = {r[0]: int(r[1]) for r in rows}
        return {s: found.get(s, 0) for s in STATUSES}

    # -- transitions ----------------------------------------------------------
    def claim_next(self) -> Job | None:
        """Atomically move the oldest highest-priority queued job to running (attempts + 1)."""
        with self._connect() as con:
            with _write_transaction(con):
                row = con.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' AND deleted = 0"
                    " ORDER BY priority DESC, created_at LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                # read the clock once the job is ours: read before waiting for the lock, it could
                # predate the job's own created_at (a job submitted meanwhile started "before" it)
                now = time.time()
                con.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0,"
                    " stage = 'starting', last_error = NULL, started_at = ?, heartbeat_at = ?,"
                    " pipeline_started_at = NULL, updated_at = ?"
                    " WHERE id = ?",
                    (now, now, now, row["id"]),
                )
        return self.get(row["id"], include_deleted=True)

    def _update_running(self, job_id: str, attempt: int, sql: str, args: tuple) -> bool:
        with self._connect() as con:
            cur = con.execute(
                f"UPDATE jobs SET {sql} WHERE id = ? AND status = 'running' AND attempts = ?",
                (*args, job_id, attempt),
            )
        return cur.rowcount == 1

    def set_progress(self, job_id: str, attempt: int, progress: float, stage: str) -> bool:
        """Progress of a running job stays below 1: clients read 1.0 as 'succeeded, results
        ready' (the pipeline reports 1.0 before its outputs are published)."""
        now = time.time()
        progress = min(RUNNING_MAX_PROGRESS, max(0.0, float(progress)))
        return self._update_running(job_id, attempt,
                                    "progress = ?, stage = ?, heartbeat_at = ?, updated_at = ?,"
                                    " pipeline_started_at = COALESCE(pipeline_started_at, ?)",
                                    (progress, stage, now, now, now))

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        return self._update_running(job_id, attempt, "heartbeat_at = ?", (time.time(),))

    def mark_succeeded(self, job_id: str, attempt: int, report: dict[str, Any]) -> bool:
        now = time.time()
        return self._update_running(
            job_id, attempt,
            "status = 'succeeded', progress = 1, stage = 'done', error = NULL, report = ?,"
            " finished_at = ?, updated_at = ?",
            (json.dumps(report, default=str), now, now),
        )

    def note_error(self, job_id: str, attempt: int, error: str) -> bool:
        """Record why an attempt failed (the supervisor then decides: retry or fail)."""
        return self._update_running(job_id, attempt, "last_error = ?, updated_at = ?",
                                    (error, time.time()))

    def mark_failed(self, job_id: str, error: str, retryable: bool = False) -> None:
        """``retryable``: the failure is the server's (see ``Job.retryable``), not the submission's."""
        now = time.time()
        with self._connect() as con:
            con.execute(
                "UPDATE jobs SET status = 'failed', stage = 'failed', error = ?, retryable = ?, finished_at = ?,"
                " updated_at = ? WHERE id = ?",
                (error, int(retryable), now, now, job_id),
            )

    def requeue(self, job_id: str, error: str) -> None:
        with self._connect() as con:
            con.execute(
                "UPDATE jobs SET status = 'queued', stage = 'queued (retry)', progress = 0,"
                " last_error = ?, previous_error = ?, updated_at = ? WHERE id = ?",
                (error, error, time.time(), job_id),
            )

    def release(self, job_id: str) -> None:
        """Give a running job back to the queue without counting the attempt (graceful stop)."""
        with self._connect() as con:
            con.execute(
                "UPDATE jobs SET status = 'queued', stage = 'queued', progress = 0,"
                " attempts = MAX(attempts - 1, 0), updated_at = ? WHERE id = ? AND status = 'running'",
                (time.time(), job_id),
            )

    def recover_interrupted(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """At start-up: jobs left 'running' by a dead server go back to the queue (or fail)."""
        requeued: list[str] = []
        failed: list[str] = []
        with self._connect() as con:
            rows = con.execute("SELECT id, attempts, deleted FROM jobs WHERE status = 'running'").fetchall()
        for row in rows:
            if row["attempts"] >= max_attempts:
                self.mark_failed(row["id"], f"interrupted {row['attempts']} times (server stopped"
                                            " while running); giving up", retryable=True)
                failed.append(row["id"])
            else:
                self.requeue(row["id"], "interrupted: the server stopped while this job ran")
                requeued.append(row["id"])
        return requeued, failed

    # -- deletion ---------------------------------------------------------------
    def mark_deleted(self, job_id: str) -> Job | None:
        """Tombstone a job (invisible at once); returns it as it was, or None if unknown or already
        tombstoned: of concurrent DELETEs (or a DELETE and retention) one alone removes it."""
        job = self.get(job_id)
        if job is None:
            return None
        with self._connect() as con:
            # its key is free again: a submission with it after the DELETE makes a new job
            done = con.execute("UPDATE jobs SET deleted = 1, idempotency_key = NULL, updated_at = ?"
                               " WHERE id = ? AND deleted = 0", (time.time(), job_id))
        return job if done.rowcount == 1 else None

    def deleted_ids(self) -> list[str]:
        with self._connect() as con:
            return [r[0] for r in con.execute("SELECT id FROM jobs WHERE deleted = 1").fetchall()]

    def purge(self, job_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # -- retention ----------------------------------------------------------------
    def expire_ended(self, ended_before: float, retention_hours: float, limit: int) -> list[str]:
        """Tombstone (as DELETE does) up to ``limit`` jobs that ended before ``ended_before``,
        oldest first, and note that they expired, so their 404 can say so. Queued and running
        jobs are never touched: only a status in ``ENDED`` with a ``finished_at`` qualifies."""
        ended = ", ".join(f"'{s}'" for s in ENDED)
        candidates = f"finished_at < ? AND deleted = 0 AND status IN ({ended})"
        with self._connect() as con:
            # a read first: most ticks find nothing and take no write lock
            ids = [r[0] for r in con.execute(
                f"SELECT id FROM jobs WHERE {candidates} ORDER BY finished_at LIMIT ?",
                (ended_before, limit)).fetchall()]
            if not ids:
                return []
            expired: list[str] = []
            with _write_transaction(con):
                now = time.time()
                for job_id in ids:  # re-checked under the lock: a DELETE may have come first
                    cur = con.execute(f"UPDATE jobs SET deleted = 1, idempotency_key = NULL, updated_at = ?"
                                      f" WHERE id = ? AND {candidates}", (now, job_id, ended_before))
                    if cur.rowcount == 1:
                        con.execute("INSERT OR REPLACE INTO expired_jobs (id, expired_at, retention_hours, client)"
                                    " SELECT id, ?, ?, client FROM jobs WHERE id = ?", (now, retention_hours, job_id))
                        expired.append(job_id)
                con.execute("DELETE FROM expired_jobs WHERE expired_at < ?", (now - EXPIRY_NOTE_KEEP_S,))
        return expired

    def expiry(self, job_id: str, client: str | None = None) -> tuple[float, float] | None:
        """(expired_at, retention hours then) of a job retention removed, if still noted; for a ``client``
        (None: the operator, who sees every job), only of a job of its own."""
        with self._connect() as con:
            row = con.execute("SELECT expired_at, retention_hours, client FROM expired_jobs WHERE id = ?",
                              (job_id,)).fetchone()
        if row is None or (client is not None and row[2] != client):
            return None
        return float(row[0]), float(row[1])
