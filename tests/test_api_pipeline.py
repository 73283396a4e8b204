"""End to end through the real pipeline (``geoseg.pipeline.predict_scene``), no fakes.

A small real scene (Kampala, 256 x 256, zoom 19) goes in through HTTP; the job
runs the shipped model cards in a worker process; GeoJSON, GeoPackage, COG and
report come back out, georeferenced where the scene is.
"""
from __future__ import annotations

import json
import time

import pyogrio
import rasterio
from fastapi.testclient import TestClient

from api.app import create_app
from api.pipeline_runner import run_pipeline
from api.settings import Settings
from geoseg.paths import data_root

from checks import unlabelled_bgr

# 768 x 512 px: long enough (a few tenths of a second per stage, fast profile) for polling to see a stage
SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"


def test_real_pipeline_job_end_to_end(tmp_path):
    # default runner: the real pipeline; no standby (it would import torch beside the job)
    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.1, standby=False)
    with TestClient(create_app(settings)) as client:
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")},
                            data={"refine": "false", "profile": "fast"})
        assert r.status_code == 202, r.text
        url = r.json()["links"]["self"]
        stages = set()
        deadline = time.monotonic() + 240
        job = client.get(url).json()
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            stages.add(job["stage"])
            time.sleep(0.05)
            job = client.get(url).json()
        assert job["status"] == "succeeded", job
        assert len(stages - {"starting", "queued", None}) >= 1  # pipeline stages were reported

        fc = client.get(f"{url}/buildings.geojson").json()
        assert fc["type"] == "FeatureCollection"
        # OSM maps ~100 buildings on this scene: the shipped model must find some of them
        assert len(fc["features"]) > 0
        west, south, east, north = job["input"]["bounds_wgs84"]
        for feature in fc["features"]:
            for lon, lat in feature["geometry"]["coordinates"][0]:
                assert west - 1e-4 <= lon <= east + 1e-4 and south - 1e-4 <= lat <= north + 1e-4

        gpkg = tmp_path / "b.gpkg"
        gpkg.write_bytes(client.get(f"{url}/buildings.gpkg").content)
        assert pyogrio.read_info(gpkg)["crs"] == "EPSG:3857"

        cog = tmp_path / "classmap.tif"
        cog.write_bytes(client.get(f"{url}/classmap.tif").content)
        with rasterio.open(cog) as dst, rasterio.open(SCENE) as src:
            assert (dst.width, dst.height, dst.crs) == (src.width, src.height, src.crs)
            assert dst.colormap(1)  # classes are coloured in GIS

        report = json.loads(client.get(f"{url}/report.json").content)
        assert report["options"]["refine"] == "none" and report["options"]["profile"] == "fast"
        # every output report.json lists can be fetched: the QGIS style was listed and answered 404
        assert all(client.get(f"{url}/{name}").status_code == 200 for name in report["outputs"])
        style = client.get(job["links"]["classmap.qml"])
        assert style.headers["content-type"].startswith("application/xml") and "vegetation" in style.text
        # named as the client named its upload (stored as input.tif): no server path, and a
        # FeatureCollection merged from several jobs still says which scene each building is from
        assert report["input"] == SCENE.name
        assert {f["properties"]["source"] for f in fc["features"]} == {SCENE.name}
        assert report["counts"]["buildings"] == len(fc["features"])


def test_a_jobs_bands_reach_the_pipeline(tmp_path):
    """A job's options come back from the job table as JSON: ``bands`` as a list, read as R, G, B."""
    bgr = unlabelled_bgr(SCENE, tmp_path / "bgr.tif", size=96)
    (tmp_path / "out").mkdir()
    report = run_pipeline(bgr, tmp_path / "out", {"bands": [3, 2, 1], "profile": "fast", "classmap": False},
                          lambda fraction, stage: None)
    assert report["bands"] == {"used": [3, 2, 1], "source": "requested", "count": 3}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["options"]["bands"] == [3, 2, 1]
