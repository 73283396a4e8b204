"""The ``mask`` part of an upload: a GeoTIFF's external mask (``scene.tif.msk``) sent with it.

Before it, the valid area of a scene described by ``scene.tif.msk`` could not travel with the
upload (one file part per job, anything else a 422): the job predicted its nodata area as imagery.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from fastapi.testclient import TestClient
from rasterio.windows import Window
from test_api_contract import wait
from test_api_fakes import footprint_runner
from test_api_retention import _age

from api.app import create_app
from api.pipeline_runner import run_pipeline
from api.settings import Settings
from geoseg.paths import data_root
from tiles.source import Scene

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
SIZE = 256


def _crop(folder: Path, name: str = "scene.tif", nodata_rows: int = 0) -> Path:
    """A 256 px crop of a real Kampala scene; its first ``nodata_rows`` rows 0 with nodata 0."""
    with rasterio.open(SCENE) as src:
        window = Window(256, 128, SIZE, SIZE)
        pixels = np.maximum(src.read([1, 2, 3], window=window), 1)
        profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 3, "dtype": "uint8",
                   "crs": src.crs, "transform": src.window_transform(window), "tiled": True,
                   "blockxsize": 128, "blockysize": 128, "compress": "deflate"}
    if nodata_rows:
        pixels[:, :nodata_rows] = 0
        profile["nodata"] = 0
    with rasterio.open(folder / name, "w", **profile) as dst:
        dst.write(pixels)
    return folder / name


def _gdal_msk(image: Path, valid: np.ndarray) -> Path:
    """``image``'s external mask as GDAL writes it (GDAL_TIFF_INTERNAL_MASK=NO, rasterio's write_mask)."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(image, "r+") as dst:
        dst.write_mask(valid.astype(np.uint8) * 255)
    return image.with_name(image.name + ".msk")


def _left_masked() -> np.ndarray:
    valid = np.ones((SIZE, SIZE), bool)
    valid[:, : SIZE // 2] = False
    return valid


def _post(client: TestClient, image: Path, mask: Path | bytes | None, endpoint: str = "/v1/jobs", **form: str):
    files = {"file": (image.name, image.read_bytes(), "image/tiff")}
    if mask is not None:
        files["mask"] = ("scene.tif.msk", mask if isinstance(mask, bytes) else mask.read_bytes(), "image/tiff")
    return client.post(endpoint, files=files, data=form)


def _stored(settings: Settings) -> set[str]:
    """Every file the service keeps: uploads in progress and jobs' folders."""
    return {str(p.relative_to(settings.data_dir)) for p in settings.data_dir.rglob("*")
            if p.is_file() and ("jobs" in p.parts or "uploads" in p.parts)}


def test_a_mask_part_is_stored_as_the_uploads_msk_and_removed_with_the_job(tmp_path):
    settings = Settings(data_dir=tmp_path / "svc", standby=False)
    image = _crop(tmp_path, nodata_rows=10)
    msk = _gdal_msk(image, _left_masked())
    image_alone = image.read_bytes()
    with TestClient(create_app(settings, runner=footprint_runner)) as client:
        r = _post(client, image, msk)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["input"]["mask"] == "scene.tif.msk"
        assert client.get(f"/v1/jobs/{job_id}").json()["input"]["mask"] == "scene.tif.msk"
        folder = settings.data_dir / "jobs" / job_id
        with rasterio.open(folder / "input.tif") as src:  # GDAL finds the .msk beside the input
            assert (folder / "input.tif").read_bytes() == image_alone
            valid = src.dataset_mask() > 0
        expected = _left_masked()
        expected[:10] = False  # the image's own nodata rows stay invalid: a mask only takes area away
        np.testing.assert_array_equal(valid, expected)
        keyed = {"Idempotency-Key": "scene-1"}
        first = client.post("/v1/jobs", files={"file": ("scene.tif", image_alone, "image/tiff"),
                                               "mask": ("scene.tif.msk", msk.read_bytes(), "image/tiff")}, headers=keyed)
        again = client.post("/v1/jobs", files={"file": ("scene.tif", image_alone, "image/tiff"),
                                               "mask": ("scene.tif.msk", msk.read_bytes(), "image/tiff")}, headers=keyed)
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        unmasked = client.post("/v1/jobs", files={"file": ("scene.tif", image_alone, "image/tiff")}, headers=keyed)
        assert unmasked.status_code == 422 and "mask" in unmasked.json()["detail"], unmasked.text  # not that job
        for done in (job_id, first.json()["id"]):
            assert client.delete(f"/v1/jobs/{done}").status_code == 204
        _until(lambda: not folder.exists())
        r = _post(client, image, None)  # without a mask part: as before, the image's own mask only
        assert r.status_code == 202 and r.json()["input"]["mask"] is None, r.text
        assert not (settings.data_dir / "jobs" / r.json()["id"] / "input.tif.msk").exists()
        assert client.delete(r.json()["links"]["self"]).status_code == 204
        _until(lambda: _stored(settings) == set())


def test_retention_removes_the_mask_with_its_job(tmp_path):
    settings = Settings(data_dir=tmp_path / "svc", standby=False, retention_hours=1)
    image = _crop(tmp_path)
    with TestClient(create_app(settings, runner=footprint_runner)) as client:
        job = wait(client, _post(client, image, _gdal_msk(image, _left_masked())).json()["id"])
        assert (settings.data_dir / "jobs" / job["id"] / "input.tif.msk").exists()
        _age(client.app.state.store.db_path, job["id"], hours=2)
        _until(lambda: _stored(settings) == set())


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)


def test_a_mask_that_is_not_the_images_is_a_4xx_and_nothing_accepted_is_lost(tmp_path):
    settings = Settings(data_dir=tmp_path / "svc", standby=False)
    image = _crop(tmp_path)
    with rasterio.open(SCENE) as src:
        other = tmp_path / "other.tif"
        with rasterio.open(other, "w", driver="GTiff", width=100, height=SIZE, count=1, dtype="uint8") as dst:
            dst.write(np.full((1, SIZE, 100), 255, np.uint8))
        three = tmp_path / "three.tif"
        with rasterio.open(three, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8") as dst:
            dst.write(src.read(window=Window(0, 0, SIZE, SIZE)))
    floats = tmp_path / "floats.tif"
    with rasterio.open(floats, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="float32") as dst:
        dst.write(np.ones((1, SIZE, SIZE), np.float32))
    nothing = tmp_path / "nothing.tif"
    with rasterio.open(nothing, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, SIZE, SIZE), np.uint8))
    cases = {
        "wrong size": (other.read_bytes(), 422, "the mask is 100 x 256 pixels, the image 256 x 256"),
        "three bands": (three.read_bytes(), 422, "the mask has 3 band(s) of uint8"),
        "floats": (floats.read_bytes(), 422, "the mask has 1 band(s) of float32"),
        "not a raster": (b"POLYGON ((0 0, 1 0, 1 1, 0 0))", 415, "the mask part is not a TIFF"),
        "empty": (b"", 400, "the mask part is empty"),
        "truncated": (other.read_bytes()[:300], 400, "the mask part: the GeoTIFF is truncated"),
        "masks everything": (nothing.read_bytes(), 422, "no valid pixel"),
        # GDAL quotes the bare file name: it named the upload's stored name, the job id
        "damaged directory": (b"II*\x00" + b"\x01" * 64, 400, "mask.tif"),
    }
    with TestClient(create_app(settings, runner=footprint_runner)) as client:
        r = _post(client, image, _gdal_msk(image, _left_masked()))
        assert r.status_code == 202, r.text
        accepted = r.json()["id"]
        kept = _stored(settings)
        for name, (content, status, words) in cases.items():
            r = _post(client, image, content)
            assert r.status_code == status, (name, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and words in detail, (name, detail)
            assert str(settings.data_dir) not in detail and "/tmp" not in detail, detail
            assert ".mask.tif" not in detail, detail  # the stored name, <job id>.mask.tif
            assert _stored(settings) == kept, name  # the refused upload left nothing; the job is whole
        r = client.post("/v1/jobs", files=[("file", ("scene.tif", image.read_bytes(), "image/tiff")),
                                           ("mask", ("a.msk", b"x", "image/tiff")),
                                           ("mask", ("b.msk", b"y", "image/tiff"))])
        assert r.status_code == 422 and "form field 'mask' sent 2 times" in r.json()["detail"], r.text
        assert client.get(f"/v1/jobs/{accepted}").json()["input"]["mask"] == "scene.tif.msk"


def test_the_mask_part_is_in_the_openapi_document(tmp_path):
    settings = Settings(data_dir=tmp_path / "svc", standby=False)
    with TestClient(create_app(settings, runner=footprint_runner)) as client:
        doc = client.get("/openapi.json").json()
    for path in ("/v1/jobs", "/v1/segment"):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        field = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["mask"]
        text = json.dumps(field)
        assert '"format": "binary"' in text and "scene.tif.msk" in text, field
        assert "mask" not in doc["components"]["schemas"][ref.rsplit("/", 1)[1]].get("required", [])


def test_a_job_with_a_mask_part_predicts_nothing_where_it_is_0(tmp_path):
    """Through the real pipeline: no building and class 0 in the masked-out half of a real scene."""
    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.1, standby=False)
    image = _crop(tmp_path)
    msk = _gdal_msk(image, _left_masked())
    with TestClient(create_app(settings, runner=run_pipeline)) as client:
        r = _post(client, image, msk, refine="false", profile="fast")
        assert r.status_code == 202, r.text
        url = r.json()["links"]["self"]
        deadline = time.monotonic() + 240
        while (job := client.get(url).json())["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        cog = tmp_path / "classmap.tif"
        cog.write_bytes(client.get(f"{url}/classmap.tif").content)
        gpkg = tmp_path / "buildings.gpkg"
        gpkg.write_bytes(client.get(f"{url}/buildings.gpkg").content)
    with rasterio.open(cog) as classes, rasterio.open(image) as src:
        classmap = classes.read(1)
        left = shapely.box(*src.bounds[:2], src.xy(0, SIZE // 2, offset="ul")[0], src.bounds[3])
    assert not classmap[:, : SIZE // 2].any() and classmap[:, SIZE // 2:].all()
    buildings = pyogrio.read_dataframe(gpkg)
    assert len(buildings) > 0  # the valid half of a Kampala block has buildings
    overlap = max((shapely.intersection(g, left).area for g in buildings.geometry), default=0.0)
    assert overlap < 1e-6, overlap


def test_a_mask_part_for_an_image_with_an_internal_mask_is_refused(tmp_path):
    """GDAL reads an internal mask, never a .msk beside it: a mask part would be stored and silently
    ignored, so it is a 422. A paletted image's RGBA expansion reads the .msk: accepted."""
    settings = Settings(data_dir=tmp_path / "svc", standby=False)
    internal = _crop(tmp_path, "internal.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(internal, "r+") as dst:
        dst.write_mask(np.full((SIZE, SIZE), 255, np.uint8))
    paletted = tmp_path / "paletted.tif"
    with rasterio.open(internal) as src:
        profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "photometric": "PALETTE"}
        grey = src.read(1)
    with rasterio.open(paletted, "w", **profile) as dst:
        dst.write(grey // 32 + 1, 1)
        dst.write_colormap(1, {i: (i * 30, i * 20, i * 10, 255) for i in range(9)})
    msk = _gdal_msk(_crop(tmp_path, "plain.tif"), _left_masked())
    with TestClient(create_app(settings, runner=footprint_runner)) as client:
        r = _post(client, internal, msk)
        assert r.status_code == 422 and "internal mask" in r.json()["detail"], r.text
        assert _post(client, internal, None).status_code == 202  # alone, as before
        r = _post(client, paletted, msk)
        assert r.status_code == 202, r.text
        with Scene(settings.data_dir / "jobs" / r.json()["id"] / "input.tif") as scene:
            np.testing.assert_array_equal(scene.read(Window(0, 0, SIZE, SIZE))[1], _left_masked())
