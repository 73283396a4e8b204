"""The REST contract through TestClient, with a fake pipeline in real worker processes.

Jobs run in spawned worker processes exactly as in production; only the model
is replaced (tests/test_api_fakes.py) so the suite stays fast.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyogrio
import pytest
import rasterio
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from geoseg.paths import data_root
from test_api_fakes import SLEEP_ENV, crashing_runner, failing_runner, footprint_runner, freezing_runner

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
#: the variables `geoseg serve` writes from its options: tests blank them (monkeypatch restores them)
SERVE_VARIABLES = ("GEOSEG_SERVICE_DIR", "GEOSEG_WORKERS", "GEOSEG_MAX_UPLOAD_MB", "GEOSEG_MAX_PIXELS",
                   "GEOSEG_SYNC_MAX_PIXELS", "GEOSEG_RETENTION_HOURS", "GEOSEG_MAX_QUEUED", "GEOSEG_ROOT_PATH")


def check_serve_setting(tmp_path: Path, monkeypatch, variable: str, option: str, bad: str, unset, given: str,
                        parsed) -> None:
    """``geoseg serve`` refuses a bad ``variable`` naming it, takes an empty one as the default
    ``unset``, and ``option given`` reaches the app's settings as ``parsed``."""
    import uvicorn
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: None)
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    serve = ["serve", "--data-dir", str(tmp_path / "d")]
    monkeypatch.setenv(variable, bad)
    result = CliRunner().invoke(cli, serve)
    assert result.exit_code != 0 and variable in result.output
    monkeypatch.setenv(variable, "")
    assert CliRunner().invoke(cli, serve).exit_code == 0
    assert getattr(Settings.from_env(), option.removeprefix("--").replace("-", "_")) == unset
    result = CliRunner().invoke(cli, [*serve, option, given])
    assert result.exit_code == 0, result.output
    assert getattr(Settings.from_env(), option.removeprefix("--").replace("-", "_")) == parsed


@contextmanager
def service(tmp_path: Path, runner=footprint_runner, **overrides) -> Iterator[TestClient]:
    """The app on its own data dir (no standby process unless asked, as in production)."""
    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.05, **overrides)
    with TestClient(create_app(settings, runner=runner)) as client:
        yield client


def submit(client: TestClient, path: Path = SCENE, **form) -> dict:
    with open(path, "rb") as f:
        r = client.post("/v1/jobs", files={"file": (path.name, f, "image/tiff")}, data=form)
    assert r.status_code == 202, r.text
    return r.json()


def wait(client: TestClient, job_id: str, until=("succeeded", "failed"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_submit_poll_and_fetch_every_result(tmp_path):
    with service(tmp_path) as client:
        accepted = submit(client, refine="false", regularize="true", profile="fast")
        assert uuid.UUID(accepted["id"]).version == 4
        assert accepted["status"] == "queued"
        assert accepted["links"]["self"] == f"/v1/jobs/{accepted['id']}"
        with rasterio.open(SCENE) as src:
            assert (accepted["input"]["width"], accepted["input"]["height"]) == (src.width, src.height)
            assert accepted["input"]["crs"] == f"EPSG:{src.crs.to_epsg()}"
            crs = src.crs
        assert 0.25 < accepted["input"]["gsd_m"] < 0.35  # zoom 19 = about 0.3 m

        job = wait(client, accepted["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
        assert job["options"] == {"refine": "none", "regularize": True, "buildings": True,
                                  "classmap": True, "profile": "fast"}
        assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]

        r = client.get(job["links"]["buildings.geojson"])
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        fc = r.json()
        assert fc["type"] == "FeatureCollection" and "crs" not in fc
        west, south, east, north = accepted["input"]["bounds_wgs84"]
        lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
        assert west - 1e-6 <= lon <= east + 1e-6 and south - 1e-6 <= lat <= north + 1e-6

        gpkg = tmp_path / "b.gpkg"
        gpkg.write_bytes(client.get(job["links"]["buildings.gpkg"]).content)
        assert pyogrio.read_info(gpkg)["crs"] == f"EPSG:{crs.to_epsg()}"

        cog = tmp_path / "c.tif"
        r = client.get(job["links"]["classmap.tif"])
        assert r.headers["content-type"].startswith("image/tiff")
        cog.write_bytes(r.content)
        # what GDAL's /vsicurl/ (QGIS, gdalinfo on the URL) asks first: size and ranges, no body
        head = client.head(job["links"]["classmap.tif"])
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(r.content)) and head.headers["accept-ranges"] == "bytes"
        assert head.headers["content-type"] == r.headers["content-type"]
        assert client.head(f"/v1/jobs/{uuid.uuid4()}/classmap.tif").status_code == 404
        with rasterio.open(cog) as dst:
            assert dst.crs == crs and dst.colormap(1)[1][:3] == (255, 0, 0)

        report = client.get(job["links"]["report.json"]).json()
        assert report["options"]["refine"] == "none"


def test_progress_is_visible_while_running_and_results_wait(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "3")
    with service(tmp_path) as client:
        job_id = submit(client)["id"]
        running = wait(client, job_id, until=("running",))
        deadline = time.monotonic() + 20
        while running["stage"] != "inference" and time.monotonic() < deadline:
            time.sleep(0.05)
            running = client.get(f"/v1/jobs/{job_id}").json()
        assert running["status"] == "running" and 0 < running["progress"] < 1
        assert running["heartbeat_at"] is not None
        r = client.get(f"/v1/jobs/{job_id}/buildings.geojson")
        assert r.status_code == 409 and "poll" in r.json()["detail"]
        health = client.get("/healthz").json()
        assert health["jobs"]["running"] == 1 and health["status"] == "ok"
        assert wait(client, job_id)["status"] == "succeeded"


def test_the_warm_standby_process_takes_the_next_job(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "1")
    with service(tmp_path, standby=True) as client:
        supervisor = client.app.state.supervisor
        standby = supervisor.standby_pid
        assert standby is not None
        job_id = submit(client)["id"]
        deadline = time.monotonic() + 30
        # the hand-over and the spawn of the next standby happen in one supervisor tick, but
        # the test may look in between (standby_pid is None for that moment)
        while (job_id not in supervisor.running_pids() or supervisor.standby_pid in (None, standby)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert supervisor.running_pids()[job_id] == standby
        assert supervisor.standby_pid not in (None, standby)  # a new one is warming up
        assert wait(client, job_id)["status"] == "succeeded"


def test_cancel_running_job_removes_it_and_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "20")
    with service(tmp_path) as client:
        job_id = submit(client)["id"]
        wait(client, job_id, until=("running",))
        folder = tmp_path / "svc" / "jobs" / job_id
        assert folder.is_dir()
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert client.get("/healthz").json()["running"] == 0


def test_outputs_option_limits_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "2")
    with service(tmp_path) as client:
        job_id = submit(client, outputs="buildings")["id"]
        # while it runs, a file it was not asked for is a 404 at once: a 409 with Retry-After told
        # the client to poll for a file that never comes
        for name in ("classmap.tif", "classmap.qml", "tilejson.json", "tiles/0/0/0.png"):
            r = client.get(f"/v1/jobs/{job_id}/{name}")
            assert r.status_code == 404 and "outputs" in r.json()["detail"], (name, r.status_code, r.text)
        assert client.get(f"/v1/jobs/{job_id}/buildings.geojson").status_code == 409  # asked for: not yet
        job = wait(client, job_id)
        assert client.get(f"/v1/jobs/{job['id']}/buildings.geojson").status_code == 200
        r = client.get(f"/v1/jobs/{job['id']}/classmap.tif")
        assert r.status_code == 404 and "outputs" in r.json()["detail"]
        with open(SCENE, "rb") as f:
            bad = client.post("/v1/jobs", files={"file": ("a.tif", f)}, data={"outputs": "roads"})
        assert bad.status_code == 422 and "outputs" in bad.json()["detail"]


def test_links_list_only_the_requested_outputs(tmp_path):
    with service(tmp_path) as client:
        for outputs, expected in [("classmap", {"classmap.tif", "classmap.qml", "tilejson", "tiles"}),
                                  ("buildings", {"buildings.geojson", "buildings.gpkg"})]:
            job = wait(client, submit(client, outputs=outputs)["id"])
            assert job["status"] == "succeeded", job
            assert set(job["links"]) == {"self", "report.json", *expected}
            assert all(client.get(link.format(z=0, x=0, y=0)).status_code == 200 for link in job["links"].values())


def test_input_error_fails_once_and_crashes_are_retried_then_failed(tmp_path, caplog, capfd):
    # the server's log said nothing of a failed job, and its worker's traceback named no job
    with caplog.at_level("WARNING", logger="geoseg.api"), service(tmp_path / "a", runner=failing_runner) as client:
        job = wait(client, submit(client)["id"])
        assert job["status"] == "failed" and job["attempts"] == 1
        assert "no valid pixel" in job["error"]
        assert job["retryable"] is False  # the input is at fault: submitting it again cannot help
        said = [r.getMessage() for r in caplog.records]
        assert any(line.startswith(f"job {job['id']} failed (attempt 1): ") and "no valid pixel" in line
                   for line in said), said
        traceback_lines = [line for line in capfd.readouterr().err.splitlines() if "Traceback" in line]
        assert traceback_lines and all(line.startswith(f"job {job['id']} attempt 1: ") for line in traceback_lines)
    with caplog.at_level("WARNING", logger="geoseg.api"), \
            service(tmp_path / "b", runner=crashing_runner, max_attempts=2) as client:
        job = wait(client, submit(client)["id"])
        assert job["status"] == "failed" and job["attempts"] == 2
        assert "2 attempts" in job["error"] and "137" in job["error"]
        assert job["retryable"] is True  # the server's failure (an out-of-memory kill, say)
        assert any(r.getMessage().startswith(f"job {job['id']} failed, gave up after 2 attempts: ")
                   for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_frozen_worker_is_killed_when_its_heartbeat_stops(tmp_path):
    with service(tmp_path, runner=freezing_runner, heartbeat_s=0.2, stale_after_s=4,
                 max_attempts=1) as client:
        job = wait(client, submit(client)["id"], timeout=30)
        assert job["status"] == "failed" and "no heartbeat" in job["error"]
        assert "inference" in job["error"]  # says where it was stuck


def test_list_is_paginated_newest_first(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "30")  # keep them queued/running: listing must not wait
    with service(tmp_path) as client:
        ids = [submit(client)["id"] for _ in range(3)]
        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert page["total"] == 3 and [j["id"] for j in page["items"]] == ids[::-1][:2]
        rest = client.get(page["next"]).json()
        assert [j["id"] for j in rest["items"]] == [ids[0]] and rest["next"] is None
        queued = client.get("/v1/jobs", params={"status": "queued"}).json()
        assert all(j["status"] == "queued" for j in queued["items"])
        assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_list_with_an_empty_status_lists_every_job(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "30")
    with service(tmp_path) as client:
        ids = [submit(client)["id"] for _ in range(2)]
        r = client.get("/v1/jobs?limit=1&offset=0&status=")  # the form the docs show
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == 2 and page["next"].startswith("/v1/jobs?limit=1&after=")
        assert [j["id"] for j in page["items"] + client.get(page["next"]).json()["items"]] == ids[::-1]
        bad = client.get("/v1/jobs", params={"status": "done"})
        assert bad.status_code == 422 and "succeeded" in str(bad.json()["detail"])


def test_list_refuses_a_misspelt_or_repeated_query_parameter(tmp_path):
    # both answered 200: '?stauts=failed' listed every job (a client deleting the jobs listed
    # would have deleted the succeeded ones too) and a repeated status kept only the last one
    with service(tmp_path) as client:
        job = wait(client, submit(client)["id"])
        assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["total"] == 1
        typo = client.get("/v1/jobs?stauts=failed")
        assert typo.status_code == 422
        assert typo.json()["detail"].startswith("unknown query parameter 'stauts' (did you mean 'status'?)")
        twice = client.get("/v1/jobs?status=queued&status=succeeded")
        assert twice.status_code == 422 and "'status' given 2 times" in twice.json()["detail"]
        assert client.head("/v1/jobs?limit=1&limit=2").status_code == 422
        page = client.get("/v1/jobs?limit=1&offset=0&status=")  # every declared one, once: as before
        assert [j["id"] for j in page.json()["items"]] == [job["id"]]


def test_following_next_neither_repeats_nor_skips_jobs_submitted_or_deleted_meanwhile(tmp_path, monkeypatch):
    # with offset paging a job submitted between two pages pushed the last job of page 1 onto
    # page 2 (seen twice), and a deleted one pulled a job of page 2 onto page 1 (never seen)
    monkeypatch.setenv(SLEEP_ENV, "30")
    with service(tmp_path) as client:
        ids = [submit(client)["id"] for _ in range(5)]  # newest first: ids[::-1]
        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["items"]] == ids[::-1][:2]
        submit(client)  # a newer job: on no later page
        assert client.delete(f"/v1/jobs/{ids[4]}").status_code == 204  # one the client has seen
        page = client.get(page["next"]).json()
        assert [j["id"] for j in page["items"]] == ids[::-1][2:4], page
        assert client.delete(f"/v1/jobs/{ids[2]}").status_code == 204  # the cursor's own job
        last = client.get(page["next"]).json()
        assert [j["id"] for j in last["items"]] == [ids[0]] and last["next"] is None
        assert last["total"] == 4
        queued = client.get("/v1/jobs", params={"limit": 1, "status": "queued"}).json()
        assert "&status=queued" in queued["next"]
        bad = client.get("/v1/jobs", params={"after": "yesterday"})
        assert bad.status_code == 422 and "after" in str(bad.json()["detail"])


def test_segment_answers_geojson_and_keeps_nothing(tmp_path):
    with service(tmp_path) as client:
        with open(SCENE, "rb") as f:
            r = client.post("/v1/segment", files={"file": ("k.tif", f, "image/tiff")})
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        assert r.json()["type"] == "FeatureCollection" and len(r.json()["features"]) == 1
        time.sleep(0.3)
        assert client.get("/v1/jobs").json()["total"] == 0


def test_segment_answers_503_when_the_server_failed_and_422_when_the_input_did(tmp_path):
    # a worker killed (out of memory) on every attempt was answered "422 segmentation failed", which
    # a client reads as "fix your request, do not retry"
    for name, runner, status in [("crash", crashing_runner, 503), ("input", failing_runner, 422)]:
        with service(tmp_path / name, runner=runner, max_attempts=2) as client:
            with open(SCENE, "rb") as f:
                r = client.post("/v1/segment", files={"file": ("k.tif", f, "image/tiff")})
            assert r.status_code == status, r.text
            detail = r.json()["detail"]
            if status == 503:
                assert "on the server, not because of the input" in detail and "137" in detail, detail
                assert int(r.headers["retry-after"]) > 0
            else:
                assert "no valid pixel" in detail and "retry-after" not in r.headers, detail


def test_segment_refuses_scenes_over_its_pixel_limit(tmp_path):
    with service(tmp_path, sync_max_pixels=256 * 255) as client:
        with open(SCENE, "rb") as f:
            r = client.post("/v1/segment", files={"file": ("k.tif", f, "image/tiff")})
        assert r.status_code == 413 and "/v1/jobs" in r.json()["detail"]


def test_api_key_guards_every_v1_route_but_not_health(tmp_path):
    with service(tmp_path, api_key="s3cret") as client:
        job_path = f"/v1/jobs/{uuid.uuid4()}"
        for method, path in [("get", "/v1/jobs"), ("get", job_path), ("delete", job_path),
                             ("get", "/v1/models"), ("get", f"{job_path}/report.json"),
                             ("post", "/v1/jobs"), ("post", "/v1/segment")]:
            assert getattr(client, method)(path).status_code == 401, path
            r = getattr(client, method)(path, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
            assert r.content == JSONResponse({"detail": r.json()["detail"]}).body  # FastAPI's form
        assert client.get("/v1/jobs", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/healthz").json()["open"] is False
        with open(SCENE, "rb") as f:  # refused before the upload is read or stored
            r = client.post("/v1/jobs", files={"file": ("k.tif", f)}, headers={"X-API-Key": "s3cre"})
        assert r.status_code == 401
        assert list((tmp_path / "svc" / "uploads").iterdir()) == []
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": ("k.tif", f)}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 202


def test_unknown_and_malformed_ids(tmp_path):
    with service(tmp_path) as client:
        assert client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404
        assert client.get("/v1/jobs/..%2F..%2Fetc").status_code in (404, 422)
        assert client.get("/v1/jobs/not-a-uuid").status_code == 422
        assert client.get(f"/v1/jobs/{uuid.uuid4()}/input.tif").status_code == 404


def test_model_cards_are_read_and_broken_ones_skipped(tmp_path):
    from api.catalog import shipped_models

    (tmp_path / "a.json").write_text(json.dumps({"name": "a", "task": "buildings", "gsd_m": 0.3}))
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text(json.dumps({"task": "landcover"}))  # no name
    assert [m.card for m in shipped_models(tmp_path)] == [{"name": "a", "task": "buildings", "gsd_m": 0.3}]


def test_models_lists_the_shipped_cards(tmp_path):
    from geoseg.paths import weights_dir

    expected = sorted(json.loads(p.read_text())["name"] for p in weights_dir().glob("*.json"))
    with service(tmp_path) as client:
        cards = client.get("/v1/models").json()
    assert sorted(c["name"] for c in cards) == expected
    assert all({"name", "task"} <= set(c) for c in cards)


def test_openapi_documents_the_contract(tmp_path):
    with service(tmp_path / "open") as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/{name}", "/v1/segment",
            "/v1/models", "/healthz"} <= set(spec["paths"])
    assert "securitySchemes" not in spec.get("components", {})
    with service(tmp_path / "keyed", api_key="k") as client:
        spec = client.get("/openapi.json").json()
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_serve_command_passes_its_options_to_the_app(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.update(target=target, **kw))
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")  # serve() writes them; monkeypatch restores them afterwards
    result = CliRunner().invoke(cli, ["serve", "--port", "8123", "--data-dir", str(tmp_path / "d"),
                                      "--workers", "2", "--max-pixels", "1000"])
    assert result.exit_code == 0, result.output
    assert calls["target"] == "api.app:create_app" and calls["factory"] is True
    assert (calls["host"], calls["port"]) == ("127.0.0.1", 8123)
    settings = Settings.from_env()
    assert settings.data_dir == (tmp_path / "d").resolve()
    assert (settings.workers, settings.max_pixels) == (2, 1000)


def test_serve_on_a_port_in_use_is_one_line_before_the_app_starts(tmp_path, monkeypatch):
    # uvicorn ran the app's start-up (the job table, the supervisor), then printed its own
    # "ERROR: [Errno 98] error while attempting to bind" and exited 3: `make run` typed twice
    import socket

    import uvicorn
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append(target))
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1 and calls == [], result.output
    assert result.output.strip() == (f"geoseg serve: error: cannot listen on 127.0.0.1:{port}: Address already in "
                                     "use; stop what uses it (another geoseg serve?) or give another --port")
    # an address not of this machine: not "stop what uses it"
    result = CliRunner().invoke(cli, ["serve", "--host", "192.0.2.1", "--port", str(port), "--data-dir",
                                      str(tmp_path / "d")])
    assert result.exit_code == 1 and calls == [], result.output
    assert "give a --host that is an address of this machine" in result.output and "stop what" not in result.output


def test_serve_command_keeps_the_environment_unless_an_option_is_given(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: None)
    monkeypatch.setenv("GEOSEG_SERVICE_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("GEOSEG_WORKERS", "3")
    monkeypatch.setenv("GEOSEG_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("GEOSEG_MAX_PIXELS", "")  # empty means unset: the default
    monkeypatch.setenv("GEOSEG_SYNC_MAX_PIXELS", "1234")
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code == 0, result.output
    settings = Settings.from_env()
    assert settings.data_dir == (tmp_path / "from-env").resolve()
    assert settings.workers == 2  # the option given wins over GEOSEG_WORKERS
    assert (settings.max_upload_bytes, settings.sync_max_pixels) == (5 * 1024**2, 1234)
    assert settings.max_pixels == Settings().max_pixels

    monkeypatch.setenv("GEOSEG_WORKERS", "0")  # a bad value from the environment is refused
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code != 0 and "GEOSEG_WORKERS" in result.output


def test_graceful_stop_gives_the_running_job_back_without_spending_an_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "2.5")
    with service(tmp_path) as client:
        job_id = submit(client)["id"]
        wait(client, job_id, until=("running",))
        folder = tmp_path / "svc" / "jobs" / job_id
        deadline = time.monotonic() + 20
        while not list(folder.glob("attempt-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(folder.glob("attempt-*"))  # the attempt writes its partial outputs there
    from api.jobs import JobStore

    stopped = JobStore(tmp_path / "svc" / "jobs.sqlite").get(job_id)
    assert (stopped.status, stopped.attempts) == ("queued", 0)
    # its partial outputs went with its process (they stayed while the job waited in the queue)
    assert sorted(p.name for p in folder.iterdir()) == ["input.tif"]
    with service(tmp_path) as client:  # same data dir, new server
        job = wait(client, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1


def test_a_graceful_stop_settles_a_job_whose_process_had_already_ended(tmp_path):
    # a job failed by its input, its process gone but not yet reaped when the server stopped, was
    # given back to the queue as if interrupted, to run and fail again after the restart
    from api.jobs import JobStore

    settings = Settings(data_dir=tmp_path / "svc", poll_s=30)  # no supervisor pass of its own meanwhile
    with TestClient(create_app(settings, runner=failing_runner)) as client:
        job_id = submit(client)["id"]
        supervisor = client.app.state.supervisor
        deadline = time.monotonic() + 30
        while job_id not in supervisor.running_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor._running[job_id].process.wait(timeout=30)  # ended, unreaped by the supervisor
    stopped = JobStore(settings.db_path).get(job_id)
    assert (stopped.status, stopped.retryable) == ("failed", False), stopped
    assert "no valid pixel" in stopped.error


def test_cors_allows_only_configured_origins(tmp_path):
    with service(tmp_path, cors_origins=("https://map.example",)) as client:
        ok = client.get("/v1/jobs", headers={"Origin": "https://map.example"})
        other = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://map.example"
    assert "access-control-allow-origin" not in other.headers


def test_the_body_caps_refusal_carries_cors_headers(tmp_path):
    """A web page's upload past GEOSEG_MAX_UPLOAD_MB (a browser's FormData always sends its length) got
    the body cap's 413 without CORS headers: the page saw "Failed to fetch", never the detail. The cap
    sat outside the CORS layer, as the shutdown cut-off's 503 did."""
    origin = {"Origin": "https://map.example"}
    with service(tmp_path, cors_origins=("https://map.example",), max_upload_bytes=1024**2) as client:
        r = client.post("/v1/jobs", files={"file": ("big.tif", b"II*\x00" + b"\x00" * 3 * 1024**2, "image/tiff")},
                        headers=origin)
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text
    assert r.headers["access-control-allow-origin"] == "https://map.example"
    assert r.headers["cache-control"] == "no-store"


def test_a_wildcard_origin_allows_the_subdomains_it_names_and_no_other(tmp_path):
    """``https://*.example.org`` (a team's preview deploys) was accepted at start-up and then matched
    no page: Starlette compares origins literally. A wildcard elsewhere in a host is refused."""
    with service(tmp_path, cors_origins=("https://Map.example", "https://*.Example.org")) as client:  # as typed
        allowed = {origin: client.get("/v1/jobs", headers={"Origin": origin}).headers.get(
            "access-control-allow-origin") for origin in ("https://a.example.org", "https://b.c.example.org",
                                                          "https://example.org", "https://evil-example.org",
                                                          "https://a.example.org.evil.test", "http://a.example.org",
                                                          "https://map.example")}
    assert allowed == {"https://a.example.org": "https://a.example.org",
                       "https://b.c.example.org": "https://b.c.example.org", "https://example.org": None,
                       "https://evil-example.org": None, "https://a.example.org.evil.test": None,
                       "http://a.example.org": None, "https://map.example": "https://map.example"}
    for pattern in ("https://app-*.example.org", "https://*example.org", "*.example.org"):
        with pytest.raises(ValueError, match=re.escape("or scheme://*.host[:port] for its subdomains")):
            Settings(cors_origins=(pattern,))


def test_a_refused_cors_preflight_says_in_json_what_was_refused(tmp_path):
    # Starlette answered text/plain 'Disallowed CORS origin' (or 'method', 'headers'): no JSON
    # detail, and neither which origin, method or header nor what to change
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}
    with service(tmp_path, cors_origins=("https://map.example",)) as client:
        other = client.options("/v1/jobs", headers={**preflight, "Origin": "https://evil.example"})
        put = client.options("/v1/jobs", headers={"Origin": "https://map.example",
                                                   "Access-Control-Request-Method": "PUT"})
        header = client.options("/v1/jobs", headers={**preflight, "Origin": "https://map.example",
                                                      "Access-Control-Request-Headers": "x-api-key, X-Token"})
    for r in (other, put, header):
        assert (r.status_code, r.headers["content-type"]) == (400, "application/json"), r.text
    assert other.json()["detail"] == ("cross-origin request refused: origin 'https://evil.example' is not one the "
                                      "server allows (its operator lists the web maps' origins in GEOSEG_CORS_ORIGINS)")
    assert "method 'PUT' is not allowed (allowed: GET, HEAD, POST, DELETE)" in put.json()["detail"]
    assert "header(s) X-Token are not allowed (allowed: X-API-Key, Range," in header.json()["detail"]
    assert header.headers["access-control-allow-origin"] == "https://map.example"


def test_cors_lets_a_keyed_web_map_read_results_by_range(tmp_path):
    # a page on another origin reading a COG or GeoJSON by range (geotiff.js) with the key: its
    # preflight asked for Range and HEAD (400 "Disallowed CORS headers/method"), and the page
    # could not read Content-Range, ETag, nor the Location of a 202 (no Expose-Headers)
    origin = {"Origin": "https://map.example"}
    with service(tmp_path, cors_origins=("https://map.example",), api_key="k") as client:
        url = f"/v1/jobs/{uuid.uuid4()}/classmap.tif"
        for method, headers in (("GET", "x-api-key,range"), ("HEAD", "x-api-key"),
                                ("GET", "x-api-key,if-none-match")):
            pre = client.options(url, headers={**origin, "Access-Control-Request-Method": method,
                                               "Access-Control-Request-Headers": headers})
            assert pre.status_code == 200, (method, headers, pre.text)
            assert pre.headers["access-control-allow-origin"] == "https://map.example"
        r = client.get("/v1/jobs", headers={**origin, "X-API-Key": "k"})
        assert r.status_code == 200
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"content-range", "accept-ranges", "etag", "location", "retry-after"} <= exposed


def test_settings_from_env_and_their_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOSEG_SERVICE_DIR", str(tmp_path))
    monkeypatch.setenv("GEOSEG_WORKERS", "3")
    monkeypatch.setenv("GEOSEG_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("GEOSEG_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GEOSEG_API_KEY", "")
    s = Settings.from_env()
    assert (s.data_dir, s.workers, s.max_upload_bytes) == (tmp_path, 3, 5 * 1024**2)
    assert s.cors_origins == ("https://a.example", "https://b.example") and s.api_key is None
    monkeypatch.setenv("GEOSEG_WORKERS", "many")
    with pytest.raises(ValueError, match="GEOSEG_WORKERS"):
        Settings.from_env()
    with pytest.raises(ValueError, match="workers"):
        Settings(workers=0)
    # values no client could ever match: every request 401, every preflight 400, and nothing said
    with pytest.raises(ValueError, match=r"GEOSEG_API_KEY\) begins or ends with a space or line break"):
        Settings(api_key="secret\n")  # a secret file written with echo
    with pytest.raises(ValueError, match="'https://a.example/' is not an origin, scheme://host"):
        Settings(cors_origins=("https://a.example/",))
    assert Settings(api_key="a b", cors_origins=("http://localhost:3000", "null")).api_key == "a b"


def test_startup_says_when_the_service_is_open_and_cleans_orphans(tmp_path, caplog):
    orphan = tmp_path / "svc" / "jobs" / str(uuid.uuid4())
    orphan.mkdir(parents=True)
    (orphan / "input.tif").write_bytes(b"II*\x00")
    # results without a row: a job table restored from an older backup; they were removed without a word
    restored = tmp_path / "svc" / "jobs" / str(uuid.uuid4())
    (restored / "result").mkdir(parents=True)
    (restored / "result" / "buildings.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with caplog.at_level("INFO", logger="geoseg.api"), service(tmp_path) as client:
        assert client.get("/healthz").json()["open"] is True
    said = [r.getMessage() for r in caplog.records]
    assert any("OPEN" in line for line in said)
    assert not orphan.exists() and any(f"removing job folder {orphan.name}" in line for line in said), said
    assert (restored / "result" / "buildings.geojson").is_file()
    assert any(f"job folder {restored.name} has results but no row in jobs.sqlite" in line for line in said), said


def test_segment_that_outlasts_its_timeout_becomes_a_job_to_poll(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "2")
    with service(tmp_path, sync_timeout_s=0.5) as client:
        with open(SCENE, "rb") as f:
            r = client.post("/v1/segment", files={"file": ("k.tif", f, "image/tiff")})
        assert r.status_code == 202 and r.headers["location"] == r.json()["links"]["self"]
        assert 1 <= int(r.headers["retry-after"]) <= 30  # when to poll it (docs/service.md, Polling)
        job = wait(client, r.json()["id"])
        assert job["status"] == "succeeded" and job["kind"] == "segment"
        assert client.get(f"{r.headers['location']}/buildings.geojson").json()["features"]


def test_segment_whose_job_is_deleted_meanwhile_answers_its_documented_404(tmp_path, monkeypatch):
    # the 404 "the job was deleted while running" was missing from the segment operation's
    # documented responses: a generated client raised "unexpected status" instead of its Problem
    import threading

    monkeypatch.setenv(SLEEP_ENV, "3")
    with service(tmp_path) as client:
        def delete_it() -> None:
            deadline = time.monotonic() + 20
            while not (jobs := client.get("/v1/jobs").json()["items"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            client.delete(jobs[0]["links"]["self"])

        deleter = threading.Thread(target=delete_it)
        deleter.start()
        with open(SCENE, "rb") as f:
            r = client.post("/v1/segment", files={"file": ("k.tif", f, "image/tiff")})
        deleter.join()
        assert r.status_code == 404 and r.json()["detail"] == "the job was deleted while running"
        responses = client.get("/openapi.json").json()["paths"]["/v1/segment"]["post"]["responses"]
        assert "404" in responses


async def _post_then_hang_up(app, path: str, scene: Path) -> list[dict]:
    """One multipart POST straight through ASGI by a client that disconnects once its body is
    sent (TestClient itself never reports a disconnect before the response is complete)."""
    request = httpx.Request("POST", f"http://testserver{path}",
                            files={"file": (scene.name, scene.read_bytes(), "image/tiff")})
    body, delivered, sent = request.read(), False, []

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "client": ("testclient", 50000), "server": ("testserver", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]}
    await app(scope, receive, send)
    return sent


def test_segment_client_that_hangs_up_leaves_its_job_listed_and_its_results(tmp_path, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "1")
    with service(tmp_path) as client:
        client.portal.call(_post_then_hang_up, client.app, "/v1/segment", SCENE)
        listed = client.get("/v1/jobs").json()
        assert listed["total"] == 1 and listed["items"][0]["kind"] == "segment"
        job = wait(client, listed["items"][0]["id"])
        assert job["status"] == "succeeded"
        time.sleep(0.5)  # several supervisor ticks: a job marked deleted would be purged by now
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
        assert client.get(job["links"]["buildings.geojson"]).json()["features"]


def test_serve_command_refuses_a_bad_log_level_or_data_dir_in_one_line(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from checks import assert_one_line_error, assert_usage_error
    from geoseg.cli import app as cli

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: pytest.fail("the server must not start"))
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "d"), "--log-level", "bogus"])
    assert_usage_error(result, "serve", "--log-level", "bogus")  # was logging's ValueError traceback
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for data_dir, words in ((a_file, ("a-file", "not a folder")), (a_file / "sub", ("sub",))):
        result = CliRunner().invoke(cli, ["serve", "--data-dir", str(data_dir)])
        assert_one_line_error(result, "serve", "--data-dir", *words)  # was mkdir's traceback
    # a read-only mount (or a host folder of another owner): the app's start-up said so in a 38-line
    # traceback. As the suite may run as root, whom permissions do not stop, the OS's answer is stood in for
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == read_only and mode & os.W_OK
                        else real_access(path, mode, **kw))
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(read_only)])
    assert_one_line_error(result, "serve", f"--data-dir {read_only} cannot be written by this user (uid ")


def test_serve_command_refuses_a_bad_service_variable_in_one_line(tmp_path, monkeypatch):
    import importlib

    import uvicorn
    from typer.testing import CliRunner

    from checks import assert_one_line_error
    from geoseg.cli import app as cli

    def run(target, factory, **kwargs):  # what uvicorn does first: call the app factory
        module, _, name = target.partition(":")
        getattr(importlib.import_module(module), name)()
        pytest.fail("the server must not start")

    monkeypatch.setattr(uvicorn, "run", run)
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    for name, value in (("GEOSEG_STALE_AFTER_S", "abc"), ("GEOSEG_JOB_TIMEOUT_S", "-1"),
                        ("GEOSEG_MAX_ATTEMPTS", "0"), ("GEOSEG_STALE_AFTER_S", "1"),
                        # accepted before: a NaN timeout never fired, a negative one made every
                        # /v1/segment a 202 job (service.md: out of range stops the server)
                        ("GEOSEG_JOB_TIMEOUT_S", "nan"), ("GEOSEG_SYNC_TIMEOUT_S", "-5"),
                        ("GEOSEG_HEARTBEAT_S", "nan"), ("GEOSEG_STALE_AFTER_S", "inf"),
                        # not on the import path: every job failed, three attempts each, while
                        # /healthz said ok
                        ("GEOSEG_RUNNER", "no_such_module:run"), ("GEOSEG_RUNNER", "api.worker")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "d")])
        assert_one_line_error(result, "serve", "configuration", name)  # was a 70-line traceback


def test_serve_command_refuses_a_data_dir_another_server_holds_in_one_line(tmp_path, monkeypatch):
    import fcntl

    import uvicorn
    from typer.testing import CliRunner

    from checks import assert_one_line_error
    from geoseg.cli import app as cli

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: pytest.fail("the server must not start"))
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    held = tmp_path / "svc"
    with service(tmp_path):  # a running app holds its data dir's lock (tmp_path / "svc")
        # was: uvicorn's start-up traceback of the app's RuntimeError, 40 lines, exit 3
        result = CliRunner().invoke(cli, ["serve", "--data-dir", str(held)])
    assert_one_line_error(result, "serve", "another geoseg server", str(held))
    with open(held / "server.lock", "a") as handle:  # the app is gone and the probe left no lock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_bands_option_reaches_the_job_and_bad_bands_are_refused_keeping_nothing(tmp_path):
    """``bands`` (as --bands: 1-based R,G,B) is a job option; a malformed list is 422 before the upload is
    read, and a band beyond the upload's count is 422 at submission, nothing kept (the job would fail)."""
    with service(tmp_path) as client:
        job = wait(client, submit(client, bands="3, 2, 1")["id"])
        assert job["status"] == "succeeded", job
        assert job["options"]["bands"] == [3, 2, 1]
        svc = client.app.state.settings
        kept = sorted(svc.jobs_dir.iterdir())
        for endpoint in ("/v1/jobs", "/v1/segment"):
            for bands, words in [("3,2", "bands expects three 1-based band numbers"), ("0,1,2", "'0,1,2'"),
                                 ("b,g,r", "e.g. 3,2,1"),
                                 ("4,3,2", "the raster has 3 band(s): band(s) 4 do not exist")]:
                with open(SCENE, "rb") as f:
                    r = client.post(endpoint, files={"file": (SCENE.name, f, "image/tiff")}, data={"bands": bands})
                assert r.status_code == 422 and words in r.json()["detail"], (endpoint, bands, r.text)
        assert sorted(svc.jobs_dir.iterdir()) == kept and list(svc.uploads_dir.iterdir()) == []
        assert client.get("/v1/jobs").json()["total"] == 1


def test_links_and_location_carry_the_proxy_prefix(tmp_path):
    # behind a reverse proxy serving the API under /geoseg/ (uvicorn --root-path /geoseg, the proxy
    # stripping the prefix) the Location, links and `next` said /v1/jobs/...: a client resolved them
    # against the proxy to /v1/jobs/..., outside the prefix, where the proxy answers 404
    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.05)
    with TestClient(create_app(settings, runner=footprint_runner), root_path="/geoseg") as client:
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")})
        job_id = r.json()["id"]
        assert r.headers["location"] == r.json()["links"]["self"] == f"/geoseg/v1/jobs/{job_id}"
        submit(client)
        job = wait(client, job_id)
        assert job["status"] == "succeeded", job
        assert all(link.startswith(f"/geoseg/v1/jobs/{job_id}") for link in job["links"].values()), job["links"]
        for name, link in job["links"].items():  # as the proxy forwards them: without its prefix
            if name != "tiles":
                assert client.get(link.removeprefix("/geoseg")).status_code == 200, name
        page = client.get("/v1/jobs", params={"limit": 1}).json()
        assert page["next"].startswith("/geoseg/v1/jobs?limit=1&after=")
        assert page["items"][0]["links"]["self"].startswith("/geoseg/v1/jobs/")
        assert client.get("/v1/jobs").json()["items"][0]["links"]["self"].startswith("/geoseg/")
        assert client.get(job["links"]["tilejson"].removeprefix("/geoseg")).json()["tiles"][0].startswith(
            "http://testserver/geoseg/v1/jobs/")
        assert client.get("/openapi.json").json()["servers"] == [{"url": "/geoseg"}]  # for /docs' requests
        # a proxy that does not strip the prefix (Traefik's default): uvicorn puts its root path before the
        # path it is sent, so the app sees the prefix twice; a 404 that says so
        unstripped = client.get(f"/geoseg/geoseg/v1/jobs/{job_id}")
        assert unstripped.status_code == 404 and "the reverse proxy must strip /geoseg before it forwards" in \
            unstripped.json()["detail"], unstripped.json()
        # the URL as the client sent it, the prefix once (it named the server's view, the prefix twice)
        assert unstripped.json()["detail"].startswith(f"no such URL: /geoseg/v1/jobs/{job_id} is none"), unstripped.json()
        assert "strip" not in client.get("/v2/jobs").json()["detail"]  # another wrong URL: the plain 404


def test_serve_root_path_reaches_uvicorn(tmp_path, monkeypatch):
    """``geoseg serve --root-path`` (or ``GEOSEG_ROOT_PATH``) is the server's root path, as
    ``uvicorn --root-path``: there was no way to give it without starting uvicorn by hand."""
    import uvicorn
    from checks import assert_usage_error
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.update(kw))
    for name in SERVE_VARIABLES:
        monkeypatch.setenv(name, "")
    serve = ["serve", "--data-dir", str(tmp_path / "d")]
    for args, env, root in (([], "", ""), (["--root-path", "/geoseg/"], "", "/geoseg"), ([], "/from-env", "/from-env")):
        monkeypatch.setenv("GEOSEG_ROOT_PATH", env)
        result = CliRunner().invoke(cli, [*serve, *args])
        assert result.exit_code == 0 and calls["root_path"] == root, (args, env, result.output)
    monkeypatch.setenv("GEOSEG_ROOT_PATH", "geoseg")
    assert_usage_error(CliRunner().invoke(cli, serve), "serve", "GEOSEG_ROOT_PATH", "starting with '/'")


def test_a_retried_submission_with_an_idempotency_key_is_the_same_job(tmp_path):
    """A client whose POST got no answer (a timeout, a dropped connection) cannot tell whether the job
    was queued: each retry queued the scene once more. With the same Idempotency-Key, file name and
    options a retry answers the job it made; with other options, a 422; without a key, a new job."""
    def post(key: str | None, **form: str):
        with open(SCENE, "rb") as f:
            return client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")}, data=form,
                               headers={"Idempotency-Key": key} if key else {})

    with service(tmp_path) as client:
        first, again = post("scene-42", outputs="buildings"), post("scene-42", outputs="buildings")
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
        assert client.get("/v1/jobs").json()["total"] == 1
        other = post("scene-42", outputs="classmap")
        assert other.status_code == 422 and first.json()["id"] in other.json()["detail"]
        assert post(None, outputs="buildings").json()["id"] != first.json()["id"]
        bad = post("has a space")
        assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
        wait(client, first.json()["id"])
        assert post("scene-42", outputs="buildings").json()["id"] == first.json()["id"]  # also once it ended
        assert client.delete(first.headers["location"]).status_code == 204
        assert post("scene-42", outputs="buildings").json()["id"] != first.json()["id"]  # deleted: its key is free
        assert client.get("/v1/jobs").json()["total"] == 2
    with service(tmp_path / "cors", cors_origins=("https://map.example",)) as client:  # a web page may send it
        preflight = client.options("/v1/jobs", headers={"Origin": "https://map.example",
                                                        "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "idempotency-key"})
        assert preflight.status_code == 200, preflight.text


def test_a_refused_non_ascii_idempotency_key_is_echoed_as_the_client_wrote_it(tmp_path):
    """Header bytes arrive decoded as latin-1: a UTF-8 key ``clé-1`` was echoed ``clÃ©-1`` in the
    422. A key that is UTF-8 reads as such; bytes that are not keep their latin-1 reading."""
    with service(tmp_path) as client:
        for sent, shown in (("clé-1".encode(), "'clé-1'"), ("日本-2".encode(), "'日本-2'"),
                            (b"cl\xe9-3", "'clé-3'")):
            with open(SCENE, "rb") as f:
                r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")},
                                headers={"Idempotency-Key": sent})
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert "Idempotency-Key" in detail and f"(got {shown})" in detail and "Ã" not in detail, detail
        assert client.get("/v1/jobs").json()["total"] == 0


def test_a_stop_signal_meant_for_the_server_does_not_end_its_workers_jobs(tmp_path, monkeypatch):
    """systemd's stop sends SIGTERM to every process of the service, and a terminal's Ctrl-C or
    ``kill -- -PGID`` reached the workers too: each running job died as a crash, and was retried with its
    attempt counted (three restarts failed it). Workers now run in a session of their own and leave
    stopping to the server (which gives the job back and kills them)."""
    import signal

    monkeypatch.setenv(SLEEP_ENV, "6")
    with service(tmp_path) as client:
        job_id = submit(client)["id"]
        wait(client, job_id, until=("running",))
        supervisor = client.app.state.supervisor
        deadline = time.monotonic() + 30
        while job_id not in supervisor.running_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = supervisor.running_pids()[job_id]
        assert os.getpgid(pid) != os.getpgid(0)  # not in the server's process group

        def ignored() -> int:  # the kernel's mask of the signals the worker ignores
            status = Path(f"/proc/{pid}/status").read_text()
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)

        stop_signals = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
        while ignored() & stop_signals != stop_signals and time.monotonic() < deadline:  # the interpreter starts
            time.sleep(0.01)
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        done = wait(client, job_id)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done


def test_job_threads_follow_the_cores_the_server_may_use(tmp_path):
    """``os.cpu_count`` counts the host's cores: under ``docker --cpus 2`` on a 64-core host each job took
    64 threads and was throttled to its quota."""
    from api.worker import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    for text, want in (("max 100000\n", affinity), ("100000 100000\n", 1), ("150000 100000", min(affinity, 2)),
                       ("garbled", affinity)):
        quota.write_text(text)
        assert usable_cpus(quota, tmp_path / "absent") == want, text  # not the host's cgroup v1 quota
    assert usable_cpus(tmp_path / "absent", tmp_path / "absent") == affinity
    # cgroup v1 (older nodes): its quota was ignored
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    for text, want in (("-1\n", affinity), ("100000\n", 1), ("150000\n", min(affinity, 2))):
        (v1 / "cpu.cfs_quota_us").write_text(text)
        assert usable_cpus(tmp_path / "absent", v1) == want, text
    # the process's own cgroup, as /proc/self/cgroup names it (a slice on a bare v1 node): its quota, not the root's
    from api.worker import _own_cgroup_v1_cpu

    (v1 / "system.slice" / "job.scope").mkdir(parents=True)
    proc = tmp_path / "cgroup"
    proc.write_text("12:memory:/system.slice/job.scope\n4:cpu,cpuacct:/system.slice/job.scope\n")
    assert _own_cgroup_v1_cpu(v1, proc) == v1 / "system.slice" / "job.scope"
    proc.write_text("4:cpu,cpuacct:/not/here\n")
    assert _own_cgroup_v1_cpu(v1, proc) == v1  # inside a container: its cgroup is mounted at the root


def test_job_processes_get_a_temp_folder_in_the_data_dir_when_the_system_has_none(tmp_path, monkeypatch):
    """A read-only root file system without a /tmp volume: every job failed ("No usable temporary
    directory found", torch's imports need one), blamed on the client's input."""
    import tempfile

    from api.worker import _child_env, job_tmp_dir

    settings = Settings(data_dir=tmp_path / "svc")
    monkeypatch.delenv("TMPDIR", raising=False)
    assert job_tmp_dir(settings) is None and "TMPDIR" not in _child_env(1, None)  # the system's, as before

    def none_usable(*args, **kwargs):
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp']")

    monkeypatch.setattr(tempfile, "TemporaryFile", none_usable)
    (tmp_path / "svc" / "tmp").mkdir(parents=True)
    (tmp_path / "svc" / "tmp" / "left-by-a-killed-job").write_text("x")
    folder = job_tmp_dir(settings)
    assert folder == tmp_path / "svc" / "tmp" and list(folder.iterdir()) == []
    assert _child_env(1, folder)["TMPDIR"] == str(folder)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the operator's is kept
    assert job_tmp_dir(settings) is None


def test_healthz_says_degraded_when_the_job_runner_does_not_import(tmp_path, monkeypatch):
    """A runner whose import fails in the job processes (torch without its libgomp, a broken install)
    failed every job three times while /healthz said ok: the server never imports it itself."""
    (tmp_path / "broken_runner.py").write_text("raise ImportError('libgomp.so.1: cannot open shared object file')\n"
                                               "def run(*args):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with service(tmp_path / "a", runner="broken_runner:run") as client:
        deadline = time.monotonic() + 60
        while (r := client.get("/healthz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["status"] == "degraded", r.json()
        assert r.json()["problem"] == ("the job runner broken_runner:run does not import, so every job would fail: "
                                       "ImportError: libgomp.so.1: cannot open shared object file")
    with service(tmp_path / "b") as client:  # the fake runner imports: ok, and stays ok
        assert client.app.state.supervisor.runner_checked.wait(60)
        assert client.get("/healthz").json() | {"jobs": None} == {
            "status": "ok", "open": True, "workers": 1, "running": 0, "jobs": None, "max_queued": 100,
            "retention_hours": 0.0, "problem": None}


def test_upload_checks_run_two_at_a_time_beside_the_other_routes(tmp_path, monkeypatch):
    """Each upload's checks ran on the thread pool every route shares: 40 crafted uploads at once (the
    pool's size) took 4 GB and held a job's status 22 s. They now run two at a time on threads of their
    own, and a status request is answered meanwhile."""
    import threading

    import api.intake

    state = {"running": 0, "most": 0}
    lock, release = threading.Lock(), threading.Event()
    real = api.intake.check_has_data

    def slow_check(*args, **kwargs):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        release.wait(30)
        with lock:
            state["running"] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(api.intake, "check_has_data", slow_check)
    with service(tmp_path) as client:
        uploads = [threading.Thread(target=submit, args=(client,)) for _ in range(4)]
        for upload in uploads:
            upload.start()
        deadline = time.monotonic() + 30
        while state["running"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # time for a third check to start, were it allowed to
        started = time.monotonic()
        assert client.get("/v1/jobs").status_code == 200 and time.monotonic() - started < 5
        assert state["running"] == 2
        release.set()
        for upload in uploads:
            upload.join(60)
        assert client.get("/v1/jobs").json()["total"] == 4
    assert state["most"] == 2


def test_every_answer_forbids_content_sniffing(tmp_path):
    """No answer said ``X-Content-Type-Options: nosniff``: a browser could take a result whose bytes look
    like HTML (a GeoJSON holds the client's file name) for a page of the service's origin."""
    preflight = {"Origin": "https://map.example", "Access-Control-Request-Method": "GET"}
    with service(tmp_path, api_key="k", cors_origins=("https://map.example",)) as client:
        client.headers["X-API-Key"] = "k"
        job = wait(client, submit(client)["id"])
        answers = [client.get(f"/v1/jobs/{job['id']}/buildings.geojson"), client.get("/v1/jobs"),
                   client.get("/healthz"), client.get("/nowhere"), client.get("/v1/jobs", headers={"X-API-Key": "no"}),
                   client.options("/v1/jobs", headers=preflight),  # answered by the CORS layer itself
                   client.options("/v1/jobs", headers={**preflight, "Origin": "https://evil.example"})]
    assert [r.status_code for r in answers[-2:]] == [200, 400]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", (r.status_code, r.headers)


def test_the_standby_setting_takes_yes_and_no_words_and_refuses_others(monkeypatch):
    """GEOSEG_STANDBY=on (or a typo) was taken for off, without a word."""
    for word, want in (("on", True), ("TRUE", True), ("1", True), ("off", False), ("no", False), ("", False)):
        monkeypatch.setenv("GEOSEG_STANDBY", word)
        assert Settings.from_env().standby is want, word
    monkeypatch.setenv("GEOSEG_STANDBY", "ture")
    with pytest.raises(ValueError, match="GEOSEG_STANDBY='ture' is not a yes/no value"):
        Settings.from_env()
