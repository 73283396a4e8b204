"""Queue cap (``GEOSEG_MAX_QUEUED``): a submission meeting a full queue gets 429, and nothing is kept.

A job waits behind the queued jobs that run before it: for ``POST /v1/jobs`` every queued
job, for ``POST /v1/segment`` (high priority) only the queued segment requests. When
``max_queued`` of them wait, the submission is refused twice over:

* ``QueueGate``, before the body is read (as ``ApiKeyGate`` does): a client with
  ``Expect: 100-continue`` never sends its upload, others are cut off by ``Connection: close``
  instead of the server spooling gigabytes it will throw away;
* ``JobStore.create``, in the transaction that inserts the row: uploads that passed the gate
  together cannot overshoot the cap (``api.intake`` then removes the input it had moved in).
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Any

import anyio

from api.asgi_paths import route_path
from api.jobs import JobStore, QueueFull
from api.json_answers import send_error
from api.pacing import QUEUE_FULL_RETRY_AFTER_UNKNOWN_S, Workload, queue_full_retry_after

log = logging.getLogger("geoseg.api")


def queue_full_answer(exc: QueueFull, store: JobStore, workers: int) -> tuple[str, dict[str, str]]:
    """The ``detail`` and headers of a 429: ``Retry-After`` is when a worker is expected to free
    (``api.pacing``), the same figure the detail quotes."""
    try:
        retry_after = queue_full_retry_after(Workload.read(store, workers))
    except sqlite3.OperationalError as exc_table:
        log.warning("running jobs unknown (%s); Retry-After %d s", exc_table, QUEUE_FULL_RETRY_AFTER_UNKNOWN_S)
        retry_after = QUEUE_FULL_RETRY_AFTER_UNKNOWN_S
    waiting = "segment requests" if exc.priority > 0 else "jobs"
    detail = (f"the queue is full ({waiting} waiting: {exc.waiting}; limit GEOSEG_MAX_QUEUED={exc.limit}); "
              f"nothing was kept: submit again after {retry_after} s")
    return detail, {"Retry-After": str(retry_after)}


class QueueGate:
    """ASGI gate: answer 429 to a submission (``POST`` to a path of ``priorities``) while
    ``max_queued`` jobs wait ahead of it, before its body is read. ``state.store`` is the
    app's job table (set at start-up). A table that cannot be asked lets the request through:
    the route meets the same fault and answers 503, or the insert applies the cap."""

    def __init__(self, app: Any, state: Any, max_queued: int, priorities: dict[str, int], workers: int) -> None:
        self.app = app
        self.state = state
        self.max_queued = max_queued
        self.priorities = priorities
        self.workers = workers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        priority = self.priorities.get(route_path(scope)) if scope["type"] == "http" else None
        store = getattr(self.state, "store", None)
        if priority is not None and scope["method"] == "POST" and self.max_queued and store is not None:
            # on a thread: a locked table waits up to its 30 s timeout, which on the event loop held
            # every other request (a list of the models took 29 s while one submission waited)
            refusal = await anyio.to_thread.run_sync(self._refusal, store, priority)
            if refusal is not None:
                detail, extra = refusal
                # Connection: close: the unread upload is not drained
                await send_error(send, 429, detail, {**extra, "Connection": "close"})
                return
        await self.app(scope, receive, send)

    def _refusal(self, store: JobStore, priority: int) -> tuple[str, dict[str, str]] | None:
        """The 429's detail and headers while the queue ahead of ``priority`` is full, else None."""
        try:
            waiting = store.queued_ahead(priority)
        except sqlite3.OperationalError as exc:
            log.warning("queue length unknown (%s); the submission goes on", exc)
            return None
        if waiting < self.max_queued:
            return None
        return queue_full_answer(QueueFull(waiting, self.max_queued, priority), store, self.workers)
