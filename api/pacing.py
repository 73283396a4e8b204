"""When a client should come back: the ``Retry-After`` of a full queue (429) and of a job not ended yet.

A fixed figure was wrong both ways: 30 s after a 429 made clients wait long after a small
scene's slot had freed, and hammer a server busy with an hour-long one. What the job table
knows is enough for an honest figure: each running job's ``eta_s`` (its attempt's rate so
far), else how long recent jobs ran (the median of the last ``RECENT_RUNS`` successful
attempts) minus how long it has run. A queue slot frees, and a queued job can start, when the
first worker frees; a running job changes state when it ends. Figures are bounded: an
estimate is only that, and a client polling a progress bar wants news at least every 30 s.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from api.jobs import ENDED, Job, JobStore
from api.schemas import eta_s

#: successful attempts whose run times make the typical one
RECENT_RUNS = 20
#: ``Retry-After`` of a 429: its bounds, and the figure when nothing is known (no job ran yet)
QUEUE_FULL_RETRY_AFTER_BOUNDS_S = (2, 300)
QUEUE_FULL_RETRY_AFTER_UNKNOWN_S = 30
#: ``Retry-After`` of a queued or running job's status (and of the 409 of its results): the
#: suggested poll interval
POLL_AFTER_BOUNDS_S = (1, 30)
POLL_AFTER_UNKNOWN_S = 2


@dataclass(frozen=True)
class Workload:
    """What the job table says about the work under way, read once for one answer."""

    running: tuple[Job, ...]
    #: median run time of recent successful attempts; None before any job succeeded
    typical_run_s: float | None
    workers: int
    now: float

    @classmethod
    def read(cls, store: JobStore, workers: int) -> Workload:
        runs = store.recent_run_seconds(RECENT_RUNS)
        return cls(running=tuple(store.running()), typical_run_s=statistics.median(runs) if runs else None,
                   workers=workers, now=time.time())

    def seconds_left(self, job: Job) -> float | None:
        """Estimated seconds until running ``job`` ends; None when nothing is known."""
        if job.deleted:
            return 0.0  # cancelled: its process is killed on the supervisor's next pass
        eta = eta_s(job, self.now)
        if eta is not None:
            return eta
        if self.typical_run_s is not None and job.started_at is not None:
            return max(0.0, self.typical_run_s - (self.now - job.started_at))
        return None

    def seconds_until_a_worker_frees(self) -> float | None:
        """When the next queued job can start: now if a worker is idle, else when the first
        running job is expected to end; None when no running job's end can be estimated."""
        if len(self.running) < self.workers:
            return 0.0
        known = [left for job in self.running if (left := self.seconds_left(job)) is not None]
        return min(known) if known else None


def _bounded(seconds: float, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(min(high, max(low, math.ceil(seconds))))


def queue_full_retry_after(workload: Workload) -> int:
    """Seconds a client refused for a full queue should wait: until a worker frees (then a
    queued job starts and a slot opens)."""
    free = workload.seconds_until_a_worker_frees()
    if free is None:
        return QUEUE_FULL_RETRY_AFTER_UNKNOWN_S
    return _bounded(free, QUEUE_FULL_RETRY_AFTER_BOUNDS_S)


def poll_after(job: Job, workload: Workload, ahead: int = 0) -> int | None:
    """Suggested seconds before polling ``job`` again; None once it has ended (nothing will change).
    ``ahead``: the queued jobs that start before a queued ``job``; each round of ``workers`` of
    them adds a typical run time (a job deep in a queue is polled every 30 s, not every few)."""
    if job.status == "running":
        left = workload.seconds_left(job)
    elif job.status == "queued":
        left = workload.seconds_until_a_worker_frees()
        if left is not None and workload.typical_run_s is not None:
            left += (ahead // workload.workers) * workload.typical_run_s
    else:
        return None
    return POLL_AFTER_UNKNOWN_S if left is None else _bounded(left, POLL_AFTER_BOUNDS_S)


def poll_headers(job: Job, store: JobStore, workers: int) -> dict[str, str]:
    """``Retry-After`` (the suggested poll interval) for an answer about ``job`` while it has not
    ended; nothing once it has (the job table is then not asked)."""
    if job.status in ENDED:
        return {}
    ahead = store.queued_before(job) if job.status == "queued" else 0
    after = poll_after(job, Workload.read(store, workers), ahead)
    return {} if after is None else {"Retry-After": str(after)}
