"""A 202'd job survives ``kill -9`` of the server: a real uvicorn server process on 127.0.0.1.

(uvicorn runs ``api.app:create_app`` exactly as ``geoseg serve`` does; starting it
through ``geoseg.cli`` would only add the import time of every other command.)

The server is killed while the job runs; its worker must die with it (no orphan
finishing the job behind the new server's back); a new server on the same data
dir requeues the job and finishes it on the second attempt.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from geoseg.paths import data_root
from test_api_fakes import SLEEP_ENV

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, GEOSEG_RUNNER="test_api_fakes:footprint_runner", **{SLEEP_ENV: "3"},
               GEOSEG_SERVICE_DIR=str(data_dir),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.pop("GEOSEG_API_KEY", None)
    cmd = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log.read_text()}")


def worker_pids(server_pid: int) -> list[int]:
    """Children of the server that run a job (``python -m api.worker``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server_pid and b"api.worker" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_kill_9_while_running_then_restart_finishes_the_job(tmp_path):
    data_dir, log, port = tmp_path / "svc", tmp_path / "server.log", free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port, log)
    try:
        with open(SCENE, "rb") as f:
            r = httpx.post(f"{base}/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")}, timeout=30)
        assert r.status_code == 202, r.text
        job_url = f"{base}{r.json()['links']['self']}"
        deadline = time.monotonic() + 30
        job = httpx.get(job_url).json()
        while job["stage"] != "inference" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = httpx.get(job_url).json()
        assert job["status"] == "running" and job["attempts"] == 1, job
        workers = worker_pids(server.pid)
        assert workers, "no worker process found"

        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(gone(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(gone(p) for p in workers), "worker outlived the killed server"

        server = start_server(data_dir, port, log)
        deadline = time.monotonic() + 60
        job = httpx.get(job_url).json()
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = httpx.get(job_url).json()
        assert job["status"] == "succeeded", (job, log.read_text())
        assert job["attempts"] == 2
        fc = httpx.get(f"{job_url}/buildings.geojson").json()
        assert fc["type"] == "FeatureCollection" and fc["features"]
        assert not list((data_dir / "jobs" / job["id"]).glob("attempt-*"))  # temp output renamed
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def test_a_request_cut_off_by_the_server_stopping_gets_a_json_503_to_retry(tmp_path):
    """uvicorn, stopping, cancels the requests still in flight after its graceful timeout: an
    upload still arriving got uvicorn's text/plain ``500 Internal Server Error`` (no ``detail``; the
    documented client failed decoding it and read a bug, not 'retry'). It gets a JSON 503 with
    ``Retry-After``, which clients retry."""
    import asyncio
    import json

    from api.app import create_app
    from api.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "svc", standby=False), runner="test_api_fakes:footprint_runner")
    boundary = "cutoff"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scene.tif\"\r\n"
            "Content-Type: image/tiff\r\n\r\n").encode() + b"II*\x00" + b"\x00" * 65536
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-length", str(10 * len(head)).encode()),
                         (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []

    async def run() -> None:
        chunks = [{"type": "http.request", "body": head, "more_body": True}]
        never = asyncio.Event()

        async def receive() -> dict:
            if chunks:
                return chunks.pop()
            await never.wait()  # the rest of the upload is still on its way
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.5)
        assert not task.done() and not chunks
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")  # as uvicorn does
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert sent and sent[0]["type"] == "http.response.start", sent
    headers = {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]}
    assert sent[0]["status"] == 503, sent
    assert headers["content-type"] == "application/json" and int(headers["retry-after"]) > 0
    detail = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["detail"]
    assert "shutting down" in detail and "Idempotency-Key" in detail
    from api.shutdown import cut_off_detail  # /v1/segment takes no key: its job, if queued, is kept
    assert "kind 'segment'" in cut_off_detail({"method": "POST", "path": "/geoseg/v1/segment", "root_path": "/geoseg"})


def test_geoseg_serve_stops_within_dockers_grace_giving_running_jobs_back(tmp_path):
    """``docker stop`` sends SIGTERM, then SIGKILL 10 s later. With a request in flight (an upload
    still arriving) ``geoseg serve`` waited 10 s for it before its supervisor gave the running jobs
    back to the queue, so the SIGKILL came first: the job counted an interrupted attempt (three
    such stops during one long job failed it). The server must be gone well before 10 s, its
    running job queued again with no attempt counted."""
    from api.jobs import JobStore

    data_dir, log, port = tmp_path / "svc", tmp_path / "server.log", free_port()
    env = dict(os.environ, GEOSEG_RUNNER="test_api_fakes:footprint_runner", **{SLEEP_ENV: "60"},
               PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]))
    env.pop("GEOSEG_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "serve", "--port", str(port), "--data-dir",
                               str(data_dir), "--log-level", "warning"], env=env, cwd=TESTS.parent,
                              stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with open(SCENE, "rb") as f:
            job_id = httpx.post(f"{base}/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")}, timeout=30).json()["id"]
        while httpx.get(f"{base}/v1/jobs/{job_id}").json()["stage"] != "inference":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as upload:  # in flight: 1 KiB of 10 MB sent
            upload.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                           b"Content-Type: multipart/form-data; boundary=b\r\n\r\n" + b"--b\r\n" + b"x" * 1024)
            time.sleep(0.3)
            stopped_at = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pytest.fail("geoseg serve still ran 8 s after SIGTERM: docker stop's SIGKILL (at 10 s) would "
                            "come before the running jobs are given back")
        assert time.monotonic() - stopped_at < 8
        job = JobStore(data_dir / "jobs.sqlite").get(job_id)
        assert job.status == "queued" and job.attempts == 0, job  # given back, the attempt not counted
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
