"""Web-map tiles of a job's class map: ``/v1/jobs/{id}/tiles/{z}/{x}/{y}.png`` and its TileJSON.
One server (fake runner writing a geoseg-like class map COG on the real Kampala scene) for the module."""
from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.warp import transform
from rasterio.windows import from_bounds
from test_api_contract import SCENE, service, submit, wait
from test_api_fakes import CLASS_COLOURS, classes_runner

from api.tile_urls import tile_version
from tiles.xyz import lonlat_to_tile, tile_bounds_mercator

#: the 256 px (76 m) scene spans 4 x 4 tiles at this zoom
ZOOM = 21


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    with service(tmp_path_factory.mktemp("tiles"), runner=classes_runner) as client:
        job = wait(client, submit(client)["id"])
        assert job["status"] == "succeeded", job
        yield client, job


def one_line_detail(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and all(w in detail for w in words), detail
    return detail


def rgba(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.size == (256, 256)
    return np.asarray(image.convert("RGBA"))


def centre_tile(job: dict, z: int) -> tuple[int, int]:
    west, south, east, north = job["input"]["bounds_wgs84"]
    return lonlat_to_tile((west + east) / 2, (south + north) / 2, z)


def test_the_centre_tile_shows_the_class_map_in_its_colours(served):
    client, job = served
    x, y = centre_tile(job, ZOOM)
    r = client.get(f"{job['links']['self']}/tiles/{ZOOM}/{x}/{y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    pixels = rgba(r.content)
    opaque = pixels[pixels[..., 3] > 0]
    colours = {tuple(c) for c in CLASS_COLOURS.values() if c[3]}
    assert opaque.size and {tuple(c) for c in np.unique(opaque, axis=0)} <= colours  # no invented class
    # the share of each class in the tile is the class map's over the same ground
    cog = client.get(job["links"]["classmap.tif"]).content
    with rasterio.MemoryFile(cog) as mem, mem.open() as src:
        truth = src.read(1, window=from_bounds(*tile_bounds_mercator(ZOOM, x, y), src.transform))
    for index, colour in CLASS_COLOURS.items():
        tile_share = (pixels == colour).all(axis=-1).mean() if colour[3] else (pixels[..., 3] == 0).mean()
        assert abs(tile_share - (truth == index).mean()) < 0.02, (index, tile_share, (truth == index).mean())
    assert len(np.unique(opaque, axis=0)) >= 2  # the tile crosses a class boundary


def test_tiles_are_immutable_results_with_an_etag(served):
    client, job = served
    x, y = centre_tile(job, ZOOM)
    url = job["links"]["tiles"].format(z=ZOOM, x=x, y=y)
    full = client.get(url)
    current = client.get(url, headers={"If-None-Match": full.headers["etag"]})
    assert full.headers["cache-control"] == current.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert current.status_code == 304 and not current.content
    assert client.head(url).status_code == 200
    # a URL not naming the renderer (hand-made) gets the same tile, revalidated at each use
    bare = client.get(url.split("?")[0])
    assert (bare.content, bare.headers["etag"]) == (full.content, full.headers["etag"])
    assert bare.headers["cache-control"] == "private, no-cache"


def test_an_upgrade_that_draws_tiles_otherwise_gives_them_new_urls_and_etags(served, monkeypatch):
    # the tile URL and ETag named only the class map and z/x/y: after an upgrade that changed
    # colours or resampling, a client kept its 'immutable' old tiles, and revalidating got a 304
    import api.routes.jobs
    import api.tile_urls
    import tiles.xyz

    client, job = served
    x, y = centre_tile(job, ZOOM)
    old_url = job["links"]["tiles"].format(z=ZOOM, x=x, y=y)
    old = client.get(old_url)
    monkeypatch.setattr(api.routes.jobs, "render_xyz_tile", lambda *a, **k: tiles.xyz.empty_tile_png(256))
    monkeypatch.setattr(api.tile_urls, "renderer_fingerprint", lambda: "a-new-renderer")
    api.tile_urls.tile_version.cache_clear()
    try:
        new_template = client.get(job["links"]["self"]).json()["links"]["tiles"]
        assert new_template != job["links"]["tiles"]
        assert client.get(job["links"]["tilejson"]).json()["tiles"][0].endswith(new_template)
        new = client.get(new_template.format(z=ZOOM, x=x, y=y))
        assert new.headers["etag"] != old.headers["etag"] and new.content != old.content
        assert "immutable" in new.headers["cache-control"]
        revalidated = client.get(old_url, headers={"If-None-Match": old.headers["etag"]})
        assert revalidated.status_code == 200 and revalidated.content == new.content
        assert revalidated.headers["cache-control"] == "private, no-cache"  # the old URL is no longer immutable
    finally:
        monkeypatch.undo()
        api.tile_urls.tile_version.cache_clear()


def test_the_renderer_fingerprint_follows_gdal_and_pillow(monkeypatch):
    import PIL

    import tiles.xyz

    before = tiles.xyz.renderer_fingerprint()
    for module, name in ((rasterio, "__gdal_version__"), (PIL, "__version__")):
        monkeypatch.setattr(module, name, "0.0.0-other")
        tiles.xyz.renderer_fingerprint.cache_clear()
        try:
            assert tiles.xyz.renderer_fingerprint() != before, name
        finally:
            monkeypatch.undo()
            tiles.xyz.renderer_fingerprint.cache_clear()
    assert tiles.xyz.renderer_fingerprint() == before


def test_a_tile_the_scene_does_not_cover_is_a_transparent_png(served):
    client, job = served
    x, y = centre_tile(job, ZOOM)
    r = client.get(f"{job['links']['self']}/tiles/{ZOOM}/{x + 100}/{y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert not rgba(r.content)[..., 3].any()


def test_tiles_outside_the_grid_are_refused_in_one_line(served):
    client, job = served
    base = f"{job['links']['self']}/tiles"
    one_line_detail(client.get(f"{base}/25/0/0.png"), 422)
    one_line_detail(client.get(f"{base}/-1/0/0.png"), 422)
    one_line_detail(client.get(f"{base}/3/8/0.png"), 422, "3/8/0", "0 to 7")
    one_line_detail(client.get(f"{base}/3/0/8.png"), 422, "0 to 7")
    one_line_detail(client.get(f"{base}/3/0/a.png"), 422)


def test_the_tilejson_describes_the_scene_and_the_links_name_it(served):
    client, job = served
    assert job["links"]["tiles"] == f"{job['links']['self']}/tiles/{{z}}/{{x}}/{{y}}.png?v={tile_version()}"
    r = client.get(job["links"]["tilejson"])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["tilejson"] == "3.0.0" and doc["scheme"] == "xyz" and doc["attribution"]
    assert doc["tiles"] == [f"http://testserver{job['links']['tiles']}"]
    west, south, east, north = job["input"]["bounds_wgs84"]
    w, s, e, n = doc["bounds"]
    eps = 1e-7  # the input summary rounds to 7 decimals (1 cm)
    assert west - eps <= w < e <= east + eps and south - eps <= s < n <= north + eps
    # 0.3 m pixels at 0.3 N: native at z19 (0.30 m), and the 76 m scene fits one tile at z19 too, where the
    # map opens; every zoom is drawn (MapLibre requests no tile below minzoom: the layer vanished there)
    assert (doc["minzoom"], doc["center"][2], doc["maxzoom"]) == (0, 19, 19)
    template = doc["tiles"][0].removeprefix("http://testserver")
    x, y = centre_tile(job, 12)
    assert client.get(template.format(z=12, x=x, y=y)).status_code == 200
    x, y = centre_tile(job, doc["maxzoom"])
    assert client.get(template.format(z=doc["maxzoom"], x=x, y=y)).status_code == 200


def test_a_job_without_a_class_map_has_no_tiles(served):
    client, _ = served
    job = wait(client, submit(client, outputs="buildings")["id"])
    assert job["status"] == "succeeded" and "tiles" not in job["links"] and "tilejson" not in job["links"]
    one_line_detail(client.get(f"{job['links']['self']}/tiles/{ZOOM}/0/0.png"), 404, "classmap", "outputs")
    one_line_detail(client.get(f"{job['links']['self']}/tilejson.json"), 404, "classmap", "outputs")


def test_tiles_before_success_answer_409_with_retry_after(served, tmp_path):
    client, _ = served
    running = submit(client, shutil.copy(SCENE, tmp_path / "hang.tif"))["id"]
    try:
        for url in (f"/v1/jobs/{running}/tiles/{ZOOM}/0/0.png", f"/v1/jobs/{running}/tilejson.json"):
            r = client.get(url)
            one_line_detail(r, 409, "poll")
            assert 1 <= int(r.headers["retry-after"]) <= 30
    finally:
        client.delete(f"/v1/jobs/{running}")


def test_openapi_declares_the_tile_as_a_png(served):
    client, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    tile = paths["/v1/jobs/{job_id}/tiles/{z}/{x}/{y}.png"]["get"]
    assert tile["responses"]["200"]["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert {"404", "409", "422"} <= set(tile["responses"])
    assert "/v1/jobs/{job_id}/tilejson.json" in paths


def test_a_keyed_servers_tiles_need_the_key_and_vary_on_it(tmp_path):
    with service(tmp_path, runner=classes_runner, api_key="tile-key") as client:
        client.headers["X-API-Key"] = "tile-key"
        job = wait(client, submit(client, outputs="classmap")["id"])
        url = job["links"]["tiles"].split("?")[0].format(z=ZOOM, x=0, y=0)  # unsigned: the key decides
        assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        r = client.get(url)
    assert r.status_code == 200 and "x-api-key" in r.headers["vary"].lower()


def test_a_keyed_servers_tile_urls_are_signed_for_maps_that_cannot_send_the_key(tmp_path):
    """Leaflet and OpenLayers load tiles as <img>: the TileJSON's template (and the job's `tiles` link)
    carry a signature that opens that job's tiles, and nothing else, without the header."""
    with service(tmp_path, runner=classes_runner, api_key="tile-key") as client:
        client.headers["X-API-Key"] = "tile-key"
        job = wait(client, submit(client, outputs="classmap")["id"])
        template = client.get(job["links"]["tilejson"]).json()["tiles"][0]
        assert "&sig=" in template and "tile-key" not in template
        assert template.endswith(job["links"]["tiles"])  # the job's link is the same signed template
        x, y = centre_tile(job, ZOOM)
        keyed = client.get(template.format(z=ZOOM, x=x, y=y))
        del client.headers["X-API-Key"]
        anonymous = client.get(template.format(z=ZOOM, x=x, y=y))
        assert anonymous.status_code == 200 and anonymous.content == keyed.content
        assert len(np.unique(rgba(anonymous.content).reshape(-1, 4), axis=0)) >= 2
        assert client.head(template.format(z=ZOOM, x=x, y=y)).status_code == 200
        path, sig = template.format(z=ZOOM, x=x, y=y).split("&sig=")
        path = path.split("?")[0]
        other_job = path.replace(job["id"], "00000000-0000-4000-8000-000000000000")
        for url in (path, f"{path}?sig={sig[:-2]}xx", f"{other_job}?sig={sig}",
                    f"{job['links']['classmap.tif']}?sig={sig}", f"{job['links']['tilejson']}?sig={sig}",
                    f"{job['links']['self']}?sig={sig}"):
            assert client.get(url).status_code == 401, url
        assert client.delete(f"{job['links']['self']}?sig={sig}").status_code == 401
        # a template mistake (TMS's {-y}, a fractional zoom) hears what is wrong, not "wrong API key"
        prefix = path.rsplit("/", 3)[0]
        for tile in (f"{ZOOM}/{x}/-{y}", f"{ZOOM}.5/{x}/{y}", f"{ZOOM}/x/{y}"):
            bad = client.get(f"{prefix}/{tile}.png?sig={sig}")
            assert bad.status_code == 422 and "API key" not in bad.json()["detail"], (tile, bad.text)
        assert client.get(f"{prefix}/{ZOOM}/{x}/-{y}.png?sig={sig[:-2]}xx").status_code == 401
        assert client.get(f"{path}%0A?sig={sig}").status_code == 401  # a path ending in a line break


def test_an_open_servers_tile_urls_carry_no_signature(served):
    client, job = served
    assert "sig" not in client.get(job["links"]["tilejson"]).json()["tiles"][0]
    assert "sig" not in job["links"]["tiles"]


def test_signed_tile_urls_work_behind_a_proxy_prefix(tmp_path):
    """uvicorn --root-path /geoseg: the scope's path holds the prefix, and the signature check must see
    past it (the TileJSON's template then names /geoseg/v1/jobs/...)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.05, api_key="tile-key")
    with TestClient(create_app(settings, runner=classes_runner), root_path="/geoseg",
                    headers={"X-API-Key": "tile-key"}) as client:
        job = wait(client, submit(client, outputs="classmap")["id"])
        template = client.get(job["links"]["tilejson"]).json()["tiles"][0]
        assert template.startswith("http://testserver/geoseg/v1/jobs/") and "&sig=" in template
        url = template.format(z=ZOOM, x=centre_tile(job, ZOOM)[0], y=centre_tile(job, ZOOM)[1])
        del client.headers["X-API-Key"]
        assert client.get(url).status_code == 200  # as uvicorn passes it: /geoseg in the path
        assert client.get(url.split("?")[0]).status_code == 401


def placed_copy(path: Path, crs: str, transform: Affine) -> Path:
    """The Kampala scene's pixels at another place: ``crs`` and ``transform`` (its 0.3 m pixels kept)."""
    with rasterio.open(SCENE) as src:
        pixels, profile = src.read(), src.profile
    profile.update(crs=crs, transform=transform, compress="deflate", photometric="rgb")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


def test_the_tilejson_centre_of_a_scene_across_the_antimeridian_lies_on_the_scene(served, tmp_path):
    """A UTM 60S scene over 180 degrees (Fiji): its TileJSON's centre, where a map opens, was the plain
    average of west (~180) and east (~-180), 0 degrees: the Gulf of Guinea, half a world away."""
    client, _ = served
    (x,), (y,) = transform("EPSG:4326", "EPSG:32760", [180.0], [-16.5])
    scene = placed_copy(tmp_path / "fiji.tif", "EPSG:32760", Affine(0.3, 0, x - 38.4, 0, -0.3, y + 38.4))
    job = wait(client, submit(client, scene, outputs="classmap")["id"])
    assert job["status"] == "succeeded", job
    doc = client.get(job["links"]["tilejson"]).json()
    west, south, east, north = job["input"]["bounds_wgs84"]
    assert west > 179.99 and east < -179.99  # RFC 7946's order across the antimeridian
    # TileJSON's bounds MUST NOT wrap (MapLibre requested no tile of west > east): every longitude
    assert doc["bounds"] == pytest.approx([-180, south, 180, north], abs=1e-6), doc["bounds"]
    lon, lat, zoom = doc["center"]
    assert abs(lon) > 179.99 and south < lat < north and zoom >= 17 and doc["minzoom"] == 0, doc["center"]
    assert isinstance(zoom, int), doc["center"]  # TileJSON: "the zoom level as an integer" (it was 17.0)


def test_a_lonlat_scene_past_180_degrees_has_rfc_7946_bounds_and_its_own_zooms(served, tmp_path):
    """An EPSG:4326 scene over the antimeridian stores longitudes past 180 (179.9995 .. 180.0003): the job's
    ``bounds_wgs84`` and the TileJSON's ``bounds`` said 180.0003 (RFC 7946 and TileJSON: -180..180), and its
    Web-Mercator extent wrapped round the world, so minzoom was 0 (a map opened on the whole world)."""
    client, _ = served
    scene = placed_copy(tmp_path / "fiji4326.tif", "EPSG:4326", Affine(3e-6, 0, 179.9995, 0, -3e-6, -16.5))
    job = wait(client, submit(client, scene, outputs="classmap")["id"])
    assert job["status"] == "succeeded", job
    doc = client.get(job["links"]["tilejson"]).json()
    west, south, east, north = job["input"]["bounds_wgs84"]
    assert 179.99 < west <= 180 and -180 <= east < -179.99 and -90 <= south < north <= 90
    assert doc["bounds"] == pytest.approx([-180, south, 180, north], abs=1e-6), doc["bounds"]
    assert doc["center"][2] >= 17 and doc["maxzoom"] == 19, doc  # 77 m of 0.32 m pixels, as away from 180
    assert abs(doc["center"][0]) > 179.99


def test_a_geostationary_full_disk_has_bounds_a_tilejson_and_tiles(served, rasters_dir):
    """A GOES full disk: its corners lie off the globe, so its bounds projected to infinities; the job's
    ``bounds_wgs84`` was null, its TileJSON (linked from the job) a 422 'math domain error' and every tile
    blank. The bounds now come from the pixels that lie on the globe."""
    client, _ = served
    job = wait(client, submit(client, rasters_dir / "rasterio" / "goes.tif", outputs="classmap",
                              allow_coarse="true")["id"])
    assert job["status"] == "succeeded", job
    r = client.get(job["links"]["tilejson"])
    assert r.status_code == 200, r.text
    doc = r.json()
    for west, south, east, north in (job["input"]["bounds_wgs84"], doc["bounds"]):
        assert -180 <= west < -150 and 0 < east <= 20 and -90 < south < -60 and 60 < north < 90  # 75 W +- 81
    x, y = lonlat_to_tile(-75.0, 0.1, doc["center"][2] + 1)  # the sub-satellite point: the disk's middle
    r = client.get(job["links"]["tiles"].format(z=doc["center"][2] + 1, x=x, y=y))
    assert r.status_code == 200 and rgba(r.content)[..., 3].any()


def test_a_scene_beyond_the_tile_grid_has_no_tilejson_and_says_why(served, tmp_path):
    """A scene at the South Pole (polar stereographic) lies beyond Web Mercator's 85.05 degrees: its
    TileJSON was served and every tile was transparent, with no word of why."""
    client, _ = served
    scene = placed_copy(tmp_path / "pole.tif", "EPSG:3031", Affine(0.3, 0, -38.4, 0, -0.3, 38.4))
    job = wait(client, submit(client, scene, outputs="classmap")["id"])
    assert job["status"] == "succeeded", job
    r = client.get(job["links"]["tilejson"])
    assert r.status_code == 422 and "where the Web-Mercator tile grid ends" in r.json()["detail"], r.text
    assert client.get(job["links"]["classmap.tif"]).status_code == 200
