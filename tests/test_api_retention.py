"""A server run for weeks: downloads survive the removal of their job, finished jobs expire."""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from starlette.responses import FileResponse

from api.downloads import HeldFileResponse
from api.jobs import JobStore
from api.settings import Settings
from test_api_contract import SCENE, check_serve_setting, service, submit, wait
from test_api_fakes import hanging_runner
from test_api_jobs import new


def test_a_download_under_way_survives_the_removal_of_its_job(tmp_path, monkeypatch):
    # the job's files removed (DELETE, or retention, by the supervisor's tick) after the route
    # checked the job but before starlette opened the file: it answered 500 ("File at path ...
    # does not exist"), or, once its headers were out, a body cut short of its Content-Length
    with service(tmp_path) as client:
        job = wait(client, submit(client)["id"])
        url = job["links"]["classmap.tif"]
        whole = client.get(url).content
        folder = tmp_path / "svc" / "jobs" / job["id"]
        shutil.copytree(folder, tmp_path / "kept")
        send_file = FileResponse.__call__

        async def removed_then_sent(self, scope, receive, send):
            shutil.rmtree(folder, ignore_errors=True)
            return await send_file(self, scope, receive, send)

        monkeypatch.setattr(FileResponse, "__call__", removed_then_sent)
        responses, made = [], HeldFileResponse.__init__

        def kept(self, *args, **kwargs):  # kept alive: a file left open is not closed by the GC
            responses.append(self)
            made(self, *args, **kwargs)

        monkeypatch.setattr(HeldFileResponse, "__init__", kept)
        for headers, status, body in (({}, 200, whole), ({"Range": "bytes=4-99"}, 206, whole[4:100])):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(tmp_path / "kept", folder)
            r = client.get(url, headers=headers)
            assert (r.status_code, r.content) == (status, body)
            assert len(responses) == 1 and _held_open(folder) == []  # the response closed the file it held
            responses.clear()
        assert client.head(job["links"]["report.json"]).status_code == 404  # gone before the route: 404


def _held_open(folder: Path) -> list[str]:
    """What this process's descriptors name in ``folder``, removed files too (``... (deleted)``).
    Not a count of all descriptors: the supervisor's tick opens the job table (3 descriptors
    with its WAL files) every poll, so a count sampled mid-tick is up to 3 higher."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing (listdir's own, another thread's)
            continue
        if target.startswith(f"{folder}/"):
            held.append(target)
    return held


def _age(db: Path, job_id: str, hours: float) -> None:
    """Move a job's timestamps ``hours`` into the past (finished_at too, even for a job that has
    not ended: retention must go by its status, not by a stray timestamp)."""
    with sqlite3.connect(db) as con:
        con.execute("UPDATE jobs SET created_at = created_at - ?, started_at = started_at - ?,"
                    " finished_at = COALESCE(finished_at, ?) - ? WHERE id = ?",
                    (hours * 3600, hours * 3600, time.time(), hours * 3600, job_id))


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)


def test_retention_removes_ended_jobs_and_keeps_queued_running_and_recent_ones(tmp_path):
    with service(tmp_path, runner=hanging_runner, retention_hours=1.5) as client:
        store, svc = client.app.state.store, tmp_path / "svc"
        old_ok, recent = (wait(client, submit(client)["id"]) for _ in range(2))
        old_failed = submit(client)["id"]
        wait(client, old_failed)
        store.mark_failed(old_failed, "an input error")  # a failed job, as the supervisor records it
        running = submit(client, Path(shutil.copy(SCENE, tmp_path / "hang.tif")))["id"]  # blocks its worker
        wait(client, running, until=("running",))
        queued = submit(client)["id"]  # one worker, busy: stays queued
        finished = client.get(f"/v1/jobs/{recent['id']}").json()
        assert _utc(finished["expires_at"]) == _utc(finished["finished_at"]) + timedelta(hours=1.5)
        assert client.get(f"/v1/jobs/{queued}").json()["expires_at"] is None

        for job_id in (old_ok["id"], old_failed, running, queued):
            _age(store.db_path, job_id, hours=2)
        _until(lambda: not (svc / "jobs" / old_ok["id"]).exists() and not (svc / "jobs" / old_failed).exists())
        for job_id in (old_ok["id"], old_failed):
            _until(lambda job_id=job_id: store.get(job_id, include_deleted=True) is None)  # the row too
            for r in (client.get(f"/v1/jobs/{job_id}"), client.delete(f"/v1/jobs/{job_id}")):
                assert r.status_code == 404 and "expired" in r.json()["detail"], r.text
                assert "1.5 h" in r.json()["detail"] and "GEOSEG_RETENTION_HOURS" in r.json()["detail"]
        r = client.get(old_ok["links"]["buildings.geojson"])
        assert r.status_code == 404 and "expired" in r.json()["detail"]

        time.sleep(0.3)  # several more ticks
        listed = {j["id"]: j for j in client.get("/v1/jobs").json()["items"]}
        assert set(listed) == {recent["id"], running, queued}
        assert (listed[running]["status"], listed[queued]["status"]) == ("running", "queued")
        assert listed[running]["expires_at"] is None and listed[queued]["expires_at"] is None
        for job_id in listed:
            assert (svc / "jobs" / job_id / "input.tif").is_file()
        assert client.get(recent["links"]["classmap.tif"]).status_code == 200
        assert client.get(f"/v1/jobs/{uuid.uuid4()}").json()["detail"].startswith("no job")
        client.delete(f"/v1/jobs/{running}")


def _utc(stamp: str) -> datetime:
    """An ISO 8601 time of the API, which must be UTC."""
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), stamp
    return parsed


def test_without_retention_an_ended_job_never_expires(tmp_path):
    with service(tmp_path) as client:
        job = wait(client, submit(client)["id"])
        _age(client.app.state.store.db_path, job["id"], hours=24 * 365)
        time.sleep(0.3)
        job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded" and job["expires_at"] is None


def test_a_tick_expires_a_bounded_batch_oldest_first(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    ids = [new(store) for _ in range(3)]
    for job_id in ids:
        store.claim_next()
        store.mark_succeeded(job_id, 1, {})
    for hours, job_id in zip((5, 4, 3), ids):
        _age(store.db_path, job_id, hours)
    cutoff = time.time() - 3600
    assert store.expire_ended(cutoff, 1.0, limit=2) == ids[:2]
    assert store.expire_ended(cutoff, 1.0, limit=2) == ids[2:]
    assert store.expire_ended(cutoff, 1.0, limit=2) == []
    assert store.expiry(ids[0])[1] == 1.0 and store.expiry(str(uuid.uuid4())) is None
    assert store.get(ids[0]) is None and store.deleted_ids() == ids  # purged like a DELETE


def test_retention_setting_is_checked_and_reaches_the_app(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="GEOSEG_RETENTION_HOURS"):
        Settings(retention_hours=-1)
    monkeypatch.setenv("GEOSEG_RETENTION_HOURS", "a week")
    with pytest.raises(ValueError, match="GEOSEG_RETENTION_HOURS"):
        Settings.from_env()
    check_serve_setting(tmp_path, monkeypatch, "GEOSEG_RETENTION_HOURS", "--retention-hours", bad="-2", unset=0,
                        given="0.5", parsed=0.5)
