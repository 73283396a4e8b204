"""Polling guidance: ``Retry-After`` on the status (and the 409 of the results) of a job that has
not ended, from its estimated seconds left; none once it has ended."""
from __future__ import annotations

import math
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

from api.jobs import JobStore
from api.pacing import Workload, poll_after, poll_headers
from test_api_contract import SCENE, service, submit, wait
from test_api_fakes import hanging_runner
from test_api_jobs import new
from test_api_queue import wait_for_eta


def test_a_job_not_ended_says_when_to_poll_again(tmp_path):
    # a polling client had to guess an interval (and a 409 for results asked too early said only
    # "poll"): now both carry Retry-After, the job's estimated seconds left within 1..30 s
    with service(tmp_path, runner=hanging_runner) as client:
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait_for_eta(client, running)
        with open(SCENE, "rb") as f:
            accepted = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")})
        assert accepted.status_code == 202 and 1 <= int(accepted.headers["retry-after"]) <= 30  # first poll
        queued = accepted.json()["id"]
        r = client.get(f"/v1/jobs/{running}")
        after, eta = int(r.headers["retry-after"]), r.json()["eta_s"]
        assert 1 <= after <= 30 and abs(after - min(30, max(1, math.ceil(eta)))) <= 1, (after, eta)
        early = client.get(f"/v1/jobs/{running}/buildings.geojson")
        assert early.status_code == 409 and 1 <= int(early.headers["retry-after"]) <= 30
        assert 1 <= int(client.get(f"/v1/jobs/{queued}").headers["retry-after"]) <= 30
        assert int(client.get(f"/v1/jobs/{queued}/report.json").headers["retry-after"]) >= 1

        client.delete(f"/v1/jobs/{running}")
        done = wait(client, queued)
        assert done["status"] == "succeeded"
        assert "retry-after" not in client.get(f"/v1/jobs/{queued}").headers  # nothing will change

        failed = submit(client)["id"]
        client.app.state.store.mark_failed(failed, "no valid pixel")
        refused = client.get(f"/v1/jobs/{failed}/buildings.geojson")
        assert refused.status_code == 409 and "retry-after" not in refused.headers
        assert "failed" in refused.json()["detail"] and "poll" not in refused.json()["detail"]
        assert "retry-after" not in client.get(f"/v1/jobs/{failed}").headers


def test_the_poll_interval_is_the_estimated_time_left_within_bounds(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    new(store), new(store)
    job = store.claim_next()
    queued = store.get(next(j.id for j in store.list(10, 0)[0] if j.status == "queued"))
    now = job.started_at + 10

    def after(of, running, typical=None, workers=1):
        return poll_after(of, Workload(running=running, typical_run_s=typical, workers=workers, now=now))

    half = replace(job, progress=0.5, updated_at=now)  # 10 s for half, just reported: 10 s left
    assert after(half, (half,)) == 10 and after(queued, (half,)) == 10
    assert after(replace(job, progress=0.1, updated_at=now), ()) == 30  # 90 s left: polled at least every 30 s
    assert after(replace(job, progress=0.98, updated_at=now), ()) == 1
    assert after(replace(half, updated_at=now - 4), ()) == 2  # half done in 6 s, 4 s ago: 2 s left
    assert after(replace(job, progress=0.0), ()) == 2  # nothing known yet
    assert after(replace(job, progress=0.0), (), typical=14.0) == 4  # recent jobs ran 14 s
    assert after(queued, (half,), workers=2) == 1  # a worker is idle
    assert after(replace(job, status="succeeded"), ()) is None


def test_a_job_deep_in_the_queue_is_polled_less_often(tmp_path):
    # a queued job was told to poll again when the first worker frees, however many jobs
    # waited before it: 100 clients of a full queue polled every few seconds for hours
    store = JobStore(tmp_path / "jobs.sqlite")
    new(store), new(store)
    done = store.claim_next()
    store.mark_succeeded(done.id, done.attempts, {})
    with sqlite3.connect(store.db_path) as con:  # it ran 6 s: the typical run time
        con.execute("UPDATE jobs SET started_at = finished_at - 6 WHERE id = ?", (done.id,))
    running = store.claim_next()
    waiting = [store.get(new(store)) for _ in range(4)]
    urgent = store.get(new(store, priority=10))  # claimed before them all
    assert [store.queued_before(j) for j in waiting] == [1, 2, 3, 4] and store.queued_before(urgent) == 0
    workload = Workload(running=(replace(running, progress=0.5, updated_at=running.started_at + 4),),
                        typical_run_s=6.0, workers=1,
                        now=running.started_at + 4)
    # 4 s left of the running job, then 6 s for each job ahead
    assert [poll_after(j, workload, store.queued_before(j)) for j in waiting] == [10, 16, 22, 28]
    assert poll_after(urgent, workload, 0) == 4
    assert poll_headers(waiting[3], store, workers=1) == {"Retry-After": "30"}  # 6 + 4 x 6 s at least


def test_head_answers_every_get_with_its_headers_and_no_body(tmp_path):
    # a monitor or proxy checking a job, the list, the models or /healthz with HEAD got 405
    with service(tmp_path, runner=hanging_runner) as client:
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]
        wait_for_eta(client, running)
        for url in (f"/v1/jobs/{running}", "/v1/jobs", "/v1/models", "/healthz"):
            get = client.get(url, headers={"Accept-Encoding": "identity"})
            head = client.head(url, headers={"Accept-Encoding": "identity"})
            assert (head.status_code, head.content) == (200, b""), url
            assert head.headers["content-type"] == get.headers["content-type"] == "application/json", url
            assert head.headers["cache-control"] == "no-store", url
        assert 1 <= int(client.head(f"/v1/jobs/{running}").headers["retry-after"]) <= 30
        gone = "00000000-0000-4000-8000-000000000000"
        assert client.head(f"/v1/jobs/{gone}").status_code == 404
        client.delete(f"/v1/jobs/{running}")
