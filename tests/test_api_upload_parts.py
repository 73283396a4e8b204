"""An upload's file parts are received straight into the service's uploads folder (``api.upload_parts``).

Before, Starlette spooled each file part past 1 MiB to the system temp folder, then ``api.intake``
copied it into the data dir: a scene needed as much room in /tmp as its size, was written twice, and
one bigger than /tmp was refused (400 "There was an error parsing the body") though the data dir had room.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import rasterio
from fastapi.responses import JSONResponse
from rasterio.windows import Window
from test_api_contract import service, wait
from test_api_fakes import SLEEP_ENV

from api.upload_parts import PART_PREFIX, PartFile
from geoseg.paths import data_root

BIG = data_root() / "buildings" / "kampala" / "kampala_z21_1.tif"  # 2.4 MB: past Starlette's 1 MiB spool
SMALLER = data_root() / "buildings" / "zanzibar" / "zanzibar_z20_2.tif"  # 1.35 MB, 3.7 Mpx: /v1/segment takes it


def _no_temp_folder(tmp_path: Path, monkeypatch) -> Path:
    """Point Python's temp folder at a folder that does not exist: anything spooled there fails."""
    gone = tmp_path / "no-system-temp"
    monkeypatch.setattr(tempfile, "tempdir", str(gone))
    return gone


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _uncompressed_crop_and_mask(folder: Path, size: int = 1200) -> tuple[Path, Path]:
    """An uncompressed crop of a real scene (4.3 MB, no mask of its own) and a 0/255 mask part for
    it (1.4 MB, left half 0): both past 1 MiB."""
    with rasterio.open(BIG) as src:
        window = Window(600, 400, size, size)
        pixels = np.maximum(src.read([1, 2, 3], window=window), 1)
        profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
                   "crs": src.crs, "transform": src.window_transform(window), "tiled": True,
                   "blockxsize": 256, "blockysize": 256}
    with rasterio.open(folder / "crop.tif", "w", **profile) as dst:
        dst.write(pixels)
    valid = np.full((size, size), 255, np.uint8)
    valid[:, : size // 2] = 0
    with rasterio.open(folder / "crop-mask.tif", "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8") as dst:
        dst.write(valid, 1)
    return folder / "crop.tif", folder / "crop-mask.tif"


def test_uploads_past_1_mib_are_accepted_with_no_system_temp_folder(tmp_path, monkeypatch):
    gone = _no_temp_folder(tmp_path, monkeypatch)
    crop, mask = _uncompressed_crop_and_mask(tmp_path)
    with service(tmp_path) as client:
        svc = tmp_path / "svc"
        with open(BIG, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (BIG.name, f, "image/tiff")},
                            data={"profile": "fast", "outputs": "buildings"},
                            headers={"Idempotency-Key": "big-1"})
        assert r.status_code == 202, r.text  # was 400: the spool could not roll over to the temp folder
        job = r.json()
        assert job["input"]["filename"] == BIG.name and job["input"]["bytes"] == BIG.stat().st_size
        stored = svc / "jobs" / job["id"] / "input.tif"
        assert _digest(stored) == _digest(BIG)  # moved in whole, byte for byte
        done = wait(client, job["id"])
        assert done["status"] == "succeeded" and done["options"]["profile"] == "fast", done
        assert done["options"]["buildings"] and not done["options"]["classmap"]
        with open(BIG, "rb") as f:  # a retry with its key: the first job's 202, this upload dropped
            r = client.post("/v1/jobs", files={"file": (BIG.name, f, "image/tiff")},
                            data={"profile": "fast", "outputs": "buildings"},
                            headers={"Idempotency-Key": "big-1"})
        assert r.status_code == 202 and r.json()["id"] == job["id"], r.text

        with open(crop, "rb") as f, open(mask, "rb") as m:
            r = client.post("/v1/jobs", files={"file": ("crop.tif", f, "image/tiff"),
                                               "mask": ("crop.tif.msk", m, "image/tiff")})
        assert r.status_code == 202, r.text
        masked = r.json()
        assert masked["input"]["mask"] == "crop.tif.msk"
        with rasterio.open(svc / "jobs" / masked["id"] / "input.tif") as src:
            assert not src.read_masks(1)[:, :600].any() and src.read_masks(1)[:, 600:].all()
        assert _digest(svc / "jobs" / masked["id"] / "input.tif") == _digest(crop)

        with open(SMALLER, "rb") as f:
            r = client.post("/v1/segment", files={"file": (SMALLER.name, f, "image/tiff")})
        assert r.status_code == 200 and r.json()["type"] == "FeatureCollection", r.text
        assert list((svc / "uploads").iterdir()) == []  # nothing left behind by any of them
    assert not gone.exists()


def test_a_too_large_upload_is_413_and_leaves_nothing(tmp_path, monkeypatch):
    gone = _no_temp_folder(tmp_path, monkeypatch)
    limit = 1024 * 1024
    with service(tmp_path, max_upload_bytes=limit) as client:
        svc = tmp_path / "svc"
        # 1.35 MB: the body is within the limit's 1 MiB of multipart room, so the file part is
        # refused as it is received (was: a 400 once spooled past 1 MiB to the missing temp folder)
        for scene in (SMALLER, BIG):  # BIG: refused by its Content-Length, before any byte is read
            with open(scene, "rb") as f:
                r = client.post("/v1/jobs", files={"file": (scene.name, f, "image/tiff")})
            assert r.status_code == 413, r.text
            assert r.json()["detail"].startswith(f"upload larger than the limit of {limit} bytes"), r.text
            assert list((svc / "uploads").iterdir()) == [] and list((svc / "jobs").iterdir()) == []
        assert client.get("/v1/jobs").json()["total"] == 0
    assert not gone.exists()


def _multipart(scene: Path) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://testserver/v1/jobs", data={"profile": "fast"},
                            files={"file": (scene.name, scene.read_bytes(), "image/tiff")})
    return request.read(), request.headers["content-type"]


def _upload_scope(body: bytes, content_type: str) -> dict:
    """The ASGI scope of a POST /v1/jobs of ``body``, for driving the app by hand (a client that stops
    sending, a request cancelled)."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "",
            "query_string": b"", "client": ("testclient", 50000), "server": ("testserver", 80),
            "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode()),
                        (b"content-length", str(len(body)).encode())]}


def test_a_client_gone_mid_upload_leaves_nothing_and_its_part_was_in_the_uploads_folder(tmp_path):
    body, content_type = _multipart(BIG)
    half = len(body) // 2
    seen: list[list[tuple[str, int]]] = []

    with service(tmp_path) as client:
        uploads = tmp_path / "svc" / "uploads"
        scope = _upload_scope(body, content_type)
        chunks = [body[i:i + 65536] for i in range(0, half, 65536)]
        delivered = sum(map(len, chunks))
        sent: list[dict] = []

        async def receive() -> dict:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
            seen.append([(p.name, p.stat().st_size) for p in uploads.iterdir()])
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        client.portal.call(client.app, scope, receive, send)
        # while half of it had arrived, the file part lay in the uploads folder, that much written
        (name, size), = seen[0]
        assert name.startswith(PART_PREFIX) and delivered - 1024 < size < delivered, (seen, delivered)
        assert list(uploads.iterdir()) == [] and list((tmp_path / "svc" / "jobs").iterdir()) == []
        assert client.get("/v1/jobs").json()["total"] == 0


def test_an_upload_that_fills_the_data_dir_while_received_gets_507_and_leaves_nothing(tmp_path, monkeypatch):
    written = {"bytes": 0}
    real_write = PartFile.write

    def write_until_full(self, data):  # the disk fills once 1 MiB of the part is written
        room = 1024 * 1024 - written["bytes"]
        written["bytes"] += real_write(self, data[:room]) if room > 0 else 0
        if len(data) > room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    with service(tmp_path) as client:
        svc = tmp_path / "svc"
        monkeypatch.setattr(PartFile, "write", write_until_full)
        with open(BIG, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (BIG.name, f, "image/tiff")})
        assert r.status_code == 507 and "disk space" in r.json()["detail"], r.text
        assert written["bytes"] == 1024 * 1024  # it did write into the uploads folder first
        assert list((svc / "uploads").iterdir()) == [] and list((svc / "jobs").iterdir()) == []
        monkeypatch.undo()
        with open(BIG, "rb") as f:  # space came back
            r = client.post("/v1/jobs", files={"file": (BIG.name, f, "image/tiff")})
        assert r.status_code == 202, r.text


def test_the_part_parser_keeps_starlettes_limits_on_fields(tmp_path):
    with service(tmp_path) as client:
        r = client.post("/v1/jobs", files={"file": (BIG.name, BIG.read_bytes(), "image/tiff")},
                        data={"model": "x" * (1024 * 1024 + 1)})
        assert r.status_code == 400 and "exceeded maximum size" in r.json()["detail"], r.text
        assert list((tmp_path / "svc" / "uploads").iterdir()) == []


def test_cancelled_while_receiving_removes_the_part(tmp_path):
    """A server stopping cancels a request still receiving (``api.shutdown``): its part goes."""
    body, content_type = _multipart(BIG)
    with service(tmp_path) as client:
        uploads = tmp_path / "svc" / "uploads"
        scope = _upload_scope(body, content_type)

        async def run() -> list[str]:
            first = [{"type": "http.request", "body": body[:1_500_000], "more_body": True}]
            never = asyncio.Event()

            async def receive() -> dict:
                if first:
                    return first.pop()
                await never.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                pass

            task = asyncio.create_task(client.app(scope, receive, send))
            await asyncio.sleep(0.5)
            during = [p.name for p in uploads.iterdir()]
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return during

        during = client.portal.call(run)
        assert len(during) == 1 and during[0].startswith(PART_PREFIX), during
        assert list(uploads.iterdir()) == []



@contextmanager
def _geoseg_serve(data_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real ``geoseg serve`` (its uvicorn, its 5 s grace at SIGTERM) with the fake runner."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = data_dir.parent / "server.log"
    tests = Path(__file__).resolve().parent
    environ = dict(os.environ, GEOSEG_RUNNER="test_api_fakes:footprint_runner",
                   PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]), **env)
    environ.pop("GEOSEG_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "serve", "--port", str(port), "--data-dir",
                               str(data_dir), "--log-level", "warning"], env=environ, cwd=tests.parent,
                              stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield server, port
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def _answer_at_sigterm(server: subprocess.Popen, request: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """SIGTERM ``server`` and read what ``request`` is answered: status, headers, body."""
    server.send_signal(signal.SIGTERM)
    request.settimeout(30)
    answer = b""
    while chunk := request.recv(65536):
        answer += chunk
    server.wait(timeout=30)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head, "no answer at all: the connection was closed"
    status, *lines = head.decode("latin-1").split("\r\n")
    return int(status.split()[1]), dict(line.lower().split(": ", 1) for line in lines), payload


def test_an_upload_still_arriving_when_geoseg_serve_stops_gets_a_json_503_and_leaves_no_part(tmp_path):
    """SIGTERM cancels an upload still arriving once ``geoseg serve``'s grace is over (``api.shutdown``).
    The part's clean-up awaited a worker thread, and uvicorn does not wait for a cancelled request: the
    process ended first, so the client got no answer (the connection closed; it got the JSON 503 to
    retry before parts were received into uploads/) and the part stayed in the uploads folder."""
    uploads = tmp_path / "svc" / "uploads"
    with _geoseg_serve(tmp_path / "svc") as (server, port):
        body, content_type = _multipart(BIG)
        with socket.create_connection(("127.0.0.1", port)) as upload:  # a third of the scene sent, the rest to come
            upload.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 3])
            deadline = time.monotonic() + 30
            while not [p for p in uploads.iterdir() if p.stat().st_size > 0]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            status, headers, payload = _answer_at_sigterm(server, upload)
    assert status == 503 and headers["content-type"] == "application/json", (status, payload)
    assert int(headers["retry-after"]) > 0 and "shutting down" in json.loads(payload)["detail"]
    assert payload == JSONResponse(json.loads(payload)).body  # FastAPI's form, as every error body
    assert list(uploads.iterdir()) == []  # the part is removed with the request, not left to the next start


def test_a_segment_request_waiting_for_its_job_when_geoseg_serve_stops_gets_a_json_503(tmp_path):
    """``/v1/segment`` waits for its job; SIGTERM cuts it off after the grace. FastAPI then closes the
    form's files, and the file part's close, awaited in a worker thread, outlived the process: the
    client got no answer (curl: 'Empty reply from server') instead of the documented 503."""
    with _geoseg_serve(tmp_path / "svc", **{SLEEP_ENV: "60"}) as (server, port):
        body, content_type = _multipart(SMALLER)
        with socket.create_connection(("127.0.0.1", port)) as request:
            request.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            deadline = time.monotonic() + 30
            while httpx.get(f"http://127.0.0.1:{port}/healthz").json()["running"] == 0:  # its job runs
                assert time.monotonic() < deadline
                time.sleep(0.1)
            status, headers, payload = _answer_at_sigterm(server, request)
    assert status == 503 and int(headers["retry-after"]) > 0, (status, payload)
    assert "kind 'segment'" in json.loads(payload)["detail"]
    assert list((tmp_path / "svc" / "uploads").iterdir()) == []
    # the log says so in one line: uvicorn logged "Exception in ASGI application" and the cancellation's
    # traceback (a stop with two requests in flight: 164 lines, read as a crash)
    log = (tmp_path / "server.log").read_text()
    assert "a request in flight was cut off by the server's stop: answered 503 to retry" in log, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def _read_answer(request: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """What ``request`` is answered, read until the server closes: status, headers, body."""
    request.settimeout(30)
    answer = b""
    while chunk := request.recv(65536):
        answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return int(status.split()[1]), dict(line.lower().split(": ", 1) for line in lines), payload


def test_an_upload_that_stops_arriving_is_answered_408_and_leaves_no_part(tmp_path):
    """A client that sent half an upload and stopped was never answered, its part file held open (60
    such requests held 60 parts). After GEOSEG_UPLOAD_IDLE_S without a byte it gets a JSON 408 and the
    part goes; a slow upload that keeps sending, and the sync route's wait for its job, are not cut."""
    uploads = tmp_path / "svc" / "uploads"
    with _geoseg_serve(tmp_path / "svc", GEOSEG_UPLOAD_IDLE_S="2", **{SLEEP_ENV: "4"}) as (server, port):
        body, content_type = _multipart(BIG)
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port)) as upload:
            upload.sendall(head + body[: len(body) // 3])
            started = time.monotonic()
            status, headers, payload = _read_answer(upload)
        assert status == 408 and headers["content-type"] == "application/json", (status, payload)
        assert "no byte of it arrived for 2 s" in json.loads(payload)["detail"]
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 10
        while list(uploads.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(uploads.iterdir()) == []
        with socket.create_connection(("127.0.0.1", port)) as slow:  # a byte gap under the limit each time
            slow.sendall(head)
            for start in range(0, len(body), len(body) // 3 + 1):
                slow.sendall(body[start:start + len(body) // 3 + 1])
                time.sleep(1.2)
            status, _, payload = _read_answer(slow)
        assert status == 202, payload
        small, small_type = _multipart(SMALLER)  # its job runs 4 s, twice the idle limit: answered 200
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/segment", content=small,
                            headers={"Content-Type": small_type}, timeout=60)
        assert answer.status_code == 200, answer.text


def test_a_part_written_short_by_the_kernel_raises_instead_of_dropping_bytes(tmp_path):
    """A raw write near a full disk writes part of its bytes and says how many: the rest was dropped, and
    the client was told its GeoTIFF was truncated (400) instead of 507. A file size limit makes the
    kernel write short the same way (then EFBIG, where a full disk says ENOSPC)."""
    code = (
        "import resource, signal, sys\n"
        "from api.upload_parts import PartFile\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))\n"
        "f = PartFile(sys.argv[1], 'x+')\n"
        "try:\n"
        "    f.write(b'x' * 8192); f.write(b'y' * 8192)\n"
        "except OSError as exc:\n"
        "    print('error', exc.errno)\n"
        "else:\n"
        "    print('wrote', f.tell())\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "part")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.stdout.split() == ["error", str(errno.EFBIG)], (done.stdout, done.stderr)


def test_a_request_of_many_file_parts_is_refused_at_the_fifth(tmp_path):
    """Each file part is a file held open while its request lasts: Starlette's limit of 1000 let one slow
    request of 1000 parts exhaust a 1024-file limit, and every other upload, the job table and /healthz
    failed until it ended. A fifth part is refused as it begins, and nothing is left behind."""
    from api.upload_parts import MAX_FILE_PARTS

    with service(tmp_path) as client:
        settings = client.app.state.settings
        parts = [("file", ("scene.tif", b"II*\x00", "image/tiff"))] + [
            (f"extra{i}", (f"x{i}.tif", b"x", "image/tiff")) for i in range(MAX_FILE_PARTS)]
        r = client.post("/v1/jobs", files=parts)
        assert r.status_code == 400 and f"Maximum number of files is {MAX_FILE_PARTS}" in r.json()["detail"], r.text
        r = client.post("/v1/jobs", files=parts[:MAX_FILE_PARTS])  # within the limit: the unknown parts named
        assert r.status_code == 422 and "extra0" in r.json()["detail"], r.text
    assert list(settings.uploads_dir.iterdir()) == []
