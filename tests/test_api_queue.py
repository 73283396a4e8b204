"""The queue cap (GEOSEG_MAX_QUEUED): a submission meeting a full queue gets 429 + Retry-After,
before its upload is read, and nothing of it is kept."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.responses import JSONResponse

from api.jobs import JobStore, QueueFull
from api.pacing import Workload, queue_full_retry_after
from api.settings import Settings
from test_api_contract import SCENE, check_serve_setting, service, submit, wait
from test_api_fakes import hanging_runner
from test_api_jobs import SUMMARY, new


def post(client, path: str = "/v1/jobs"):
    with open(SCENE, "rb") as f:
        return client.post(path, files={"file": (SCENE.name, f, "image/tiff")})


def assert_queue_full(r, limit: int) -> int:
    """Checks a 429; its ``Retry-After``, which the detail quotes."""
    assert r.status_code == 429, r.text
    retry_after = int(r.headers["retry-after"])
    assert 2 <= retry_after <= 300
    detail = r.json()["detail"]
    assert "queue is full" in detail and f"GEOSEG_MAX_QUEUED={limit}" in detail, detail
    assert f"submit again after {retry_after} s" in detail, detail
    assert r.content == JSONResponse({"detail": detail}).body  # FastAPI's form, as every error body
    return retry_after


def wait_for_eta(client, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["eta_s"] is None:
        assert time.monotonic() < deadline, "the running job never got an eta_s"
        time.sleep(0.05)


async def _post_counting_reads(app, path: str, scene: Path, root_path: str = "", headers: dict | None = None,
                               ) -> tuple[int, int]:
    """(status, body messages the app asked for) of one multipart POST straight through ASGI; with
    ``root_path``, the scope uvicorn --root-path makes (the prefix in ``path`` too)."""
    request = httpx.Request("POST", f"http://testserver{root_path}{path}", headers=headers,
                            files={"file": (scene.name, scene.read_bytes(), "image/tiff")})
    body, reads, status = request.read(), 0, 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": root_path + path, "raw_path": (root_path + path).encode(),
             "root_path": root_path,
             "query_string": b"", "client": ("testclient", 50000), "server": ("testserver", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]}
    await app(scope, receive, send)
    return status, reads


def test_a_full_queue_answers_429_with_retry_after_before_reading_the_upload(tmp_path):
    # the queue only grew: each waiting job keeps its upload (up to GEOSEG_MAX_UPLOAD_MB) on disk
    with service(tmp_path, runner=hanging_runner, max_queued=2, sync_timeout_s=0.3) as client:
        svc = tmp_path / "svc"
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]  # blocks the worker
        wait(client, running, until=("running",))
        queued = [submit(client)["id"] for _ in range(2)]
        folders = sorted(p.name for p in (svc / "jobs").iterdir())

        assert_queue_full(post(client), limit=2)
        assert client.portal.call(_post_counting_reads, client.app, "/v1/jobs", SCENE) == (429, 0)
        assert sorted(p.name for p in (svc / "jobs").iterdir()) == folders  # nothing kept
        assert list((svc / "uploads").iterdir()) == []
        assert client.get("/v1/jobs").json()["total"] == 3

        assert client.delete(f"/v1/jobs/{queued[0]}").status_code == 204  # a slot frees
        assert post(client).status_code == 202
        assert_queue_full(post(client), limit=2)

        # /v1/segment runs before queued jobs: only segment requests waiting count against it
        for _ in range(2):
            r = post(client, "/v1/segment")
            assert r.status_code == 202, r.text  # not done within sync_timeout_s: a job to poll
        assert_queue_full(post(client, "/v1/segment"), limit=2)
        client.delete(f"/v1/jobs/{running}")


def test_uploads_that_pass_the_gate_together_cannot_overshoot_the_cap(tmp_path):
    # the gate counts before the upload is read; two uploads received at once both passed it
    with service(tmp_path, runner=hanging_runner, max_queued=1) as client:
        svc, store = tmp_path / "svc", client.app.state.store
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait(client, running, until=("running",))
        submit(client)
        store.queued_ahead = lambda priority=0: 0  # as the gate saw it, before the other insert
        r = post(client)
        assert_queue_full(r, limit=1)
        assert len(list((svc / "jobs").iterdir())) == 2 and list((svc / "uploads").iterdir()) == []
        client.delete(f"/v1/jobs/{running}")


def test_the_store_counts_the_jobs_ahead_in_the_inserting_transaction(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    new(store), new(store)
    with pytest.raises(QueueFull) as refused:
        store.create("third", {}, SUMMARY, max_queued=2)
    assert (refused.value.waiting, refused.value.limit) == (2, 2)
    assert store.get("third") is None
    store.create("urgent", {}, SUMMARY, priority=10, max_queued=2)  # nothing ahead of it
    store.create("unlimited", {}, SUMMARY, max_queued=0)
    assert store.queued_ahead() == 4 and store.queued_ahead(10) == 1


def test_queue_cap_setting_is_checked_and_reaches_the_app(tmp_path, monkeypatch):
    assert Settings().max_queued == 100
    with pytest.raises(ValueError, match="GEOSEG_MAX_QUEUED"):
        Settings(max_queued=-1)
    monkeypatch.setenv("GEOSEG_MAX_QUEUED", "lots")
    with pytest.raises(ValueError, match="GEOSEG_MAX_QUEUED"):
        Settings.from_env()
    check_serve_setting(tmp_path, monkeypatch, "GEOSEG_MAX_QUEUED", "--max-queued", bad="-1", unset=100,
                        given="7", parsed=7)
    monkeypatch.setenv("GEOSEG_MAX_QUEUED", "0")
    assert Settings.from_env().max_queued == 0


def test_health_shows_the_queue_depth_its_limit_and_the_retention(tmp_path):
    # an operator watching /healthz saw the job counts but not the limits they are held to
    with service(tmp_path, runner=hanging_runner, max_queued=5, retention_hours=48) as client:
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait(client, running, until=("running",))
        submit(client)
        health = client.get("/healthz").json()
        assert health["jobs"]["queued"] == 1 and health["running"] == 1
        assert (health["max_queued"], health["retention_hours"]) == (5, 48)
        client.delete(f"/v1/jobs/{running}")


def test_a_full_queue_says_to_come_back_when_the_running_job_should_end(tmp_path):
    # Retry-After was a fixed 30 s: long after a small scene's slot had freed, far too soon
    # behind an hour-long job. Now: the running job's eta_s (seconds since its start x (1 -
    # progress) / progress; the hanging fake sits at 0.3), within 2..300 s
    with service(tmp_path, runner=hanging_runner, max_queued=1) as client:
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait_for_eta(client, running)
        submit(client)
        before = client.get(f"/v1/jobs/{running}").json()["eta_s"]
        retry_after = assert_queue_full(post(client), limit=1)
        after = client.get(f"/v1/jobs/{running}").json()["eta_s"]
        assert max(2, int(before)) <= retry_after <= max(2, int(after) + 1), (before, retry_after, after)
        client.delete(f"/v1/jobs/{running}")


def test_retry_after_estimates_when_a_worker_frees_within_bounds(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    new(store)
    job = store.claim_next()
    now = job.started_at + 20

    def workload(*running, typical=None, workers=1):
        return Workload(running=running, typical_run_s=typical, workers=workers, now=now)

    at_half = replace(job, progress=0.5, updated_at=now)  # 20 s for half, just reported: 20 s left
    starting = replace(job, progress=0.0)  # no eta yet
    assert queue_full_retry_after(workload(at_half)) == 20
    assert queue_full_retry_after(workload(starting, typical=65.0)) == 45  # recent jobs ran 65 s
    assert queue_full_retry_after(workload(starting)) == 30  # nothing known: the old figure
    assert queue_full_retry_after(workload(starting, at_half, workers=2)) == 20  # the first to end
    assert queue_full_retry_after(workload(starting, workers=2)) == 2  # a worker is idle
    assert queue_full_retry_after(workload(replace(job, progress=0.01 + 0.05, updated_at=now))) == 300  # capped
    assert queue_full_retry_after(workload(replace(job, deleted=True))) == 2  # being cancelled
    assert store.recent_run_seconds(5) == []
    store.mark_succeeded(job.id, job.attempts, {})
    assert len(store.recent_run_seconds(5)) == 1 and Workload.read(store, 1).typical_run_s is not None


def test_behind_a_proxy_prefix_the_gates_still_act_before_the_upload_is_read(tmp_path):
    """uvicorn --root-path puts the prefix in the scope's path (/geoseg/v1/jobs): the key gate and the
    queue cap compared the bare path, so behind a prefix a keyless or over-cap upload was read in full."""
    with service(tmp_path, runner=hanging_runner, max_queued=1, api_key="k") as client:
        client.headers["X-API-Key"] = "k"
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait(client, running, until=("running",))
        submit(client)
        for root in ("", "/geoseg"):
            assert client.portal.call(_post_counting_reads, client.app, "/v1/jobs", SCENE, root) == (401, 0)
            assert client.portal.call(_post_counting_reads, client.app, "/v1/jobs", SCENE, root,
                                      {"X-API-Key": "k"}) == (429, 0)
        assert client.get("/v1/jobs").json()["total"] == 2
        client.delete(f"/v1/jobs/{running}")


def test_a_submission_waiting_on_a_slow_job_table_does_not_hold_other_requests(tmp_path):
    # the queue gate (and the idempotency lookup, /v1/segment's wait) asked the job table on the
    # event loop: while the table was locked, one submission waited out the 30 s busy timeout there,
    # and every other request with it (a list of the models took 29 s). A table call that takes
    # its time (here 3 s) now holds only its own request
    import threading

    with service(tmp_path) as client:
        store = client.app.state.store
        real_queued_ahead = store.queued_ahead

        def slow_queued_ahead(priority):
            time.sleep(3)
            return real_queued_ahead(priority)

        store.queued_ahead = slow_queued_ahead
        answers = []
        submission = threading.Thread(target=lambda: answers.append(post(client)))
        submission.start()
        time.sleep(0.5)  # it waits on the table now
        started = time.monotonic()
        models = client.get("/v1/models")
        took = time.monotonic() - started
        submission.join(timeout=60)
        assert models.status_code == 200 and took < 1.5, took
        assert answers and answers[0].status_code == 202, answers
