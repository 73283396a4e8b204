"""Failed jobs: the error says why (GDAL's reason, not "see previous exception"), input errors
are not retried, and a failure leaves no scratch files behind."""
from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
import tifffile
from rasterio.errors import RasterioIOError

from api.errors import chain_messages, describe
from api.worker import is_permanent
from geoseg.paths import data_root
from test_api_contract import service, submit, wait
from test_api_fakes import reading_runner

JPEG_TILED = data_root() / "buildings" / "kampala" / "kampala_z20_1.tif"  # 3 x 2 tiles of 512


def corrupt_tile(scene: Path, dest: Path, index: int) -> Path:
    """A copy of ``scene`` whose tile ``index`` (full resolution) is overwritten with 0xff bytes."""
    with tifffile.TiffFile(scene) as tif:
        offset = int(tif.pages[0].dataoffsets[index])
        count = int(tif.pages[0].databytecounts[index])
    content = bytearray(scene.read_bytes())
    content[offset:offset + count] = b"\xff" * count
    dest.write_bytes(bytes(content))
    return dest


def _read_error(path: Path) -> RasterioIOError:
    with rasterio.open(path) as src, pytest.raises(RasterioIOError) as err:
        src.read()
    return err.value


def test_the_error_of_a_corrupt_block_names_gdals_reason_and_is_permanent(tmp_path):
    corrupt = corrupt_tile(JPEG_TILED, tmp_path / "input.tif", 3)
    exc = _read_error(corrupt)
    assert str(exc).startswith("Read failed")  # all that str() says
    text = describe(exc)
    assert text.startswith("RasterioIOError: Read failed")
    assert "IReadBlock failed" in text and "Not a JPEG file" in text
    assert text.count("TIFFReadEncodedTile() failed.") == 1  # GDAL repeats it down the chain
    assert chain_messages(exc)[-1].endswith("Not a JPEG file: starts with 0xff 0xff")
    assert is_permanent(exc, corrupt)
    assert not is_permanent(exc, tmp_path / "other.tif")  # not the input: may be transient
    assert not is_permanent(OSError("No space left on device"), corrupt)
    assert is_permanent(ValueError("bad option"))


def test_a_job_whose_input_has_a_corrupt_block_fails_at_once_saying_why(tmp_path):
    corrupt = corrupt_tile(JPEG_TILED, tmp_path / "scene.tif", 3)  # middle: passes the upload check
    with service(tmp_path, runner=reading_runner, max_attempts=3) as client:
        job = wait(client, submit(client, corrupt)["id"])
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert "IReadBlock failed" in job["error"] and "Not a JPEG file" in job["error"]
    assert "gave up" not in job["error"]
    # the upload's own name, not input.tif, the name the server stores it under (as report.json)
    assert str(tmp_path) not in job["error"] and "scene.tif" in job["error"] and "input.tif" not in job["error"]


def test_a_job_that_fails_after_its_worker_was_killed_keeps_no_scratch(tmp_path):
    from test_api_fakes import crashing_runner

    with service(tmp_path, runner=crashing_runner, max_attempts=2) as client:
        job = wait(client, submit(client)["id"])
        assert job["status"] == "failed" and job["attempts"] == 2
        folder = tmp_path / "svc" / "jobs" / job["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["input.tif"]  # kept until DELETE
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_startup_removes_the_scratch_of_interrupted_jobs(tmp_path, monkeypatch):
    from api.jobs import JobStore
    from test_api_fakes import SLEEP_ENV, footprint_runner

    monkeypatch.setenv(SLEEP_ENV, "30")
    with service(tmp_path, runner=footprint_runner) as client:
        job_id = submit(client)["id"]
        wait(client, job_id, until=("running",))
    folder = tmp_path / "svc" / "jobs" / job_id
    store = JobStore(tmp_path / "svc" / "jobs.sqlite")
    store.claim_next()  # as if the server had died with the job running (attempt 1)
    (folder / "attempt-1" / ".partial-x").mkdir(parents=True, exist_ok=True)
    with service(tmp_path, runner=footprint_runner, max_attempts=1):
        pass
    assert store.get(job_id).status == "failed"
    assert sorted(p.name for p in folder.iterdir()) == ["input.tif"]


def test_a_job_error_names_the_upload_as_the_client_named_it():
    from api.redact import name_upload

    message = "PredictError: input.tif: no valid pixels; caused by: job/input.tif: read failed (input.tif.msk)"
    assert name_upload(message, "input.tif", "my input.tif") == (
        "PredictError: my input.tif: no valid pixels; caused by: job/my input.tif: read failed (input.tif.msk)")
    assert name_upload("my_input.tif and input.tiff", "input.tif", "x.tif") == "my_input.tif and input.tiff"
