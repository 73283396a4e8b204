"""Upload validation: the bad-input corpus and the odd real rasters of ../shared/data/rasters.

Every refusal must be a 4xx with a JSON ``detail`` that names the problem, and
the server must stay healthy afterwards.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window

from api.app import create_app
from api.settings import Settings
from api.validate import RasterLimits, UploadRejected, inspect_raster, too_large
from geoseg.coarse_input import GSD_SLACK
from geoseg.paths import data_root
from test_api_fakes import footprint_runner
from tiles.gsd import gsd_m
from tiles.palette import is_paletted
from tiles.source import Scene

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
RASTERS = data_root() / "rasters"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("svc"), standby=False,
                        max_upload_bytes=8 * 1024**2, max_side=50_000, max_pixels=200_000_000)
    with TestClient(create_app(settings, runner=footprint_runner)) as c:
        yield c


def post(client: TestClient, name: str, content: bytes, endpoint: str = "/v1/jobs", **form: str):
    return client.post(endpoint, files={"file": (name, content, "image/tiff")}, data=form)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tiff_without_crs() -> bytes:
    with rasterio.open(SCENE) as src:
        data = src.read()
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                      dtype="uint8") as dst:
            dst.write(data)
        return mem.read()


def _sparse_huge(tmp: Path) -> bytes:
    path = tmp / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300_000, height=300_000, count=3,
                       dtype="uint8", crs="EPSG:3857", transform=from_origin(0, 0, 0.3, 0.3),
                       tiled=True, blockxsize=4096, blockysize=4096, SPARSE_OK=True) as dst:
        pass
    return path.read_bytes()


def _gcps_only() -> bytes:
    """Georeferenced by ground control points only (as many scanned maps and raw scenes are)."""
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(row, col, 3628312.0 + col * 0.3, 39135.0 - row * 0.3)
            for row, col in [(0, 0), (0, 64), (64, 0), (64, 64)]]
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 64, 64), np.uint8))
            dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(3857))
        return mem.read()


def _rpcs_only(crs: str | None = None) -> bytes:
    """Placed by RPCs only (a raw satellite scene), with ``crs`` assigned as the service once advised:
    it was then told to set its corners with ``gdal_edit.py -a_ullr``, which misplaces it."""
    from rasterio.rpc import RPC

    rpcs = RPC(height_off=0, height_scale=100, lat_off=-6.2, lat_scale=0.01, line_den_coeff=[1] + [0] * 19,
               line_num_coeff=[0, 0, -1] + [0] * 17, line_off=32, line_scale=32, long_off=39.2, long_scale=0.01,
               samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1] + [0] * 18, samp_off=32, samp_scale=32)
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs=crs) as dst:
            dst.write(np.zeros((3, 64, 64), np.uint8))
            dst.rpcs = rpcs
        return mem.read()


def _local_grid() -> bytes:
    """A site grid in metres (LOCAL_CS, as drone surveys may come): no longitude/latitude."""
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                      crs=rasterio.crs.CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],'
                                                    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'),
                      transform=from_origin(1000, 2000, 0.3, 0.3)) as dst:
            dst.write(np.zeros((3, 64, 64), np.uint8))
        return mem.read()


def _looped_ifds() -> bytes:
    """The Kampala scene with its last image's next-IFD offset pointing back at its first image."""
    data = bytearray(SCENE.read_bytes())
    assert data[:4] == b"II*\x00"  # classic little-endian TIFF: 4-byte offsets
    first = offset = int.from_bytes(data[4:8], "little")
    while offset:
        entries = int.from_bytes(data[offset:offset + 2], "little")
        link = offset + 2 + 12 * entries
        offset = int.from_bytes(data[link:link + 4], "little")
    data[link:link + 4] = first.to_bytes(4, "little")
    return bytes(data)


BAD_UPLOADS = {
    "empty": (lambda tmp: b"", 400, "empty"),
    "text named .tif": (lambda tmp: b"just some text, not an image\n" * 10, 415, "text"),
    "png": (lambda tmp: _png(), 415, "PNG"),
    "truncated (half)": (lambda tmp: SCENE.read_bytes()[: SCENE.stat().st_size // 2], 400, "truncated"),
    "truncated (last block)": (lambda tmp: SCENE.read_bytes()[:-300], 400, "truncated"),
    "tiff header only": (lambda tmp: b"II*\x00" + b"\x00" * 4, 400, "GDAL cannot open"),
    "no crs": (lambda tmp: _tiff_without_crs(), 422, "no CRS"),
    "gcps only": (lambda tmp: _gcps_only(), 422, "only GCPs: warp it first"),
    "rpcs only": (lambda tmp: _rpcs_only(), 422, "only RPCs: warp it first, e.g. `gdalwarp -rpc -t_srs"),
    "rpcs and a crs": (lambda tmp: _rpcs_only("EPSG:4326"), 422, "only RPCs: warp it first, e.g. `gdalwarp -rpc"),
    # accepted before, then every job failed with "Error creating Transformer from CRS."
    "local engineering crs": (lambda tmp: _local_grid(), 422, "no longitude/latitude"),
    "sparse 300000 x 300000": (_sparse_huge, 413, "300000 x 300000"),
    "chain of images looping back": (lambda tmp: _looped_ifds(), 400, "loops back"),
}


def _with_many_images(count: int) -> bytes:
    """The Kampala scene followed by ``count`` 1 x 1 px reduced-resolution images (IFDs), 126 bytes each."""
    data = bytearray(SCENE.read_bytes())
    offset = int.from_bytes(data[4:8], "little")
    while offset:  # to the last image's next-IFD offset
        link = offset + 2 + 12 * int.from_bytes(data[offset:offset + 2], "little")
        offset = int.from_bytes(data[link:link + 4], "little")
    data += b"\x00" * (len(data) % 2)
    pixel = len(data)
    data += b"\x00\x00"
    short, long_ = 3, 4
    tags = [(254, long_, 1), (256, short, 1), (257, short, 1), (258, short, 8), (259, short, 1), (262, short, 1),
            (273, long_, pixel), (277, short, 1), (278, short, 1), (279, long_, 1)]  # 254 = 1: an overview
    size = 2 + 12 * len(tags) + 4
    data[link:link + 4] = len(data).to_bytes(4, "little")
    for i in range(count):
        ifd = len(tags).to_bytes(2, "little")
        for tag, kind, value in tags:
            ifd += tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little")
            ifd += value.to_bytes(4 if kind == long_ else 2, "little").ljust(4, b"\x00")
        ifd += (len(data) + size if i < count - 1 else 0).to_bytes(4, "little")
        data += ifd
    return bytes(data)


def test_a_tiff_of_thousands_of_images_is_refused_before_gdal_reads_it(tmp_path):
    """GDAL's first read of a TIFF scans its chain of images in quadratic time: 10,000 1-pixel overviews (1.3 MB)
    took 86 s, 50,000 (6 MB) half an hour, in the upload check and again in each of the job's opens. In a
    process of its own: native GDAL code cannot be interrupted by a test timeout."""
    import subprocess
    import sys

    many = tmp_path / "many.tif"
    many.write_bytes(_with_many_images(20_000))
    check = ("import sys; from pathlib import Path; from api.validate import RasterLimits, UploadRejected, inspect_raster, too_large\n"
             "try: inspect_raster(Path(sys.argv[1]), RasterLimits(100_000, 10**9))\n"
             "except UploadRejected as exc: print(exc.status_code, exc.detail)")
    try:
        done = subprocess.run([sys.executable, "-c", check, str(many)], capture_output=True, text=True, timeout=30,
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the upload check of a TIFF of 20,001 images took over 30 s")
    status, _, detail = done.stdout.strip().partition(" ")
    assert status == "422", done.stdout + done.stderr
    assert "more than 1000 images" in detail and "gdal_translate" in detail, detail
    fine = tmp_path / "fine.tif"  # a few dozen (overviews, masks) are any GeoTIFF's
    fine.write_bytes(_with_many_images(40))
    assert inspect_raster(fine, RasterLimits(100_000, 10**9))["width"] == 256
    fine = tmp_path / "fine.tif"  # a few dozen (overviews, masks) are every GeoTIFF's
    fine.write_bytes(_with_many_images(40))
    assert inspect_raster(fine, RasterLimits(100_000, 10**9))["width"] == 256


@pytest.mark.timeout(30)
def test_a_tiff_whose_images_loop_back_is_refused_at_once(tmp_path):
    """GDAL opens such a file (it stops at the loop), but the upload check's TIFF walk (tifffile) followed
    the loop for ever, its memory growing by GBs, and the request was never answered."""
    looped = tmp_path / "looped.tif"
    looped.write_bytes(_looped_ifds())
    with pytest.raises(UploadRejected) as refused:
        inspect_raster(looped, RasterLimits(100_000, 10**9))
    assert refused.value.status_code == 400 and "loops back" in refused.value.detail
    assert "gdal_translate" in refused.value.detail


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_are_refused_with_a_useful_detail(client, tmp_path, case):
    make, status, words = BAD_UPLOADS[case]
    content = make(tmp_path)
    assert len(content) < 8 * 1024**2
    for endpoint in ("/v1/jobs", "/v1/segment"):
        r = post(client, "upload.tif", content, endpoint)
        assert r.status_code == status, (case, r.text)
        assert r.headers["content-type"] == "application/json"
        assert words in r.json()["detail"]
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/jobs").json()["total"] == 0


def test_refused_uploads_leave_no_files(client):
    post(client, "x.tif", b"garbage")
    svc = client.app.state.settings
    assert list(svc.uploads_dir.iterdir()) == [] and list(svc.jobs_dir.iterdir()) == []


def test_upload_over_the_size_limit_is_413(client):
    r = post(client, "big.tif", b"II*\x00" + b"\x00" * (10 * 1024**2))  # past the multipart slack too
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # the limit the operator set (8 MiB), not the body cap with its multipart slack (9 MiB)
    assert f"limit of {8 * 1024**2} bytes" in r.json()["detail"], r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_missing_file_field_is_422(client):
    r = client.post("/v1/jobs", data={"refine": "true"})
    assert r.status_code == 422 and "file" in str(r.json()["detail"])


def test_a_multipart_body_that_cannot_be_parsed_says_how_to_send_one(client):
    """Starlette's refusals of a body its multipart parser cannot read were its bare messages: "Invalid
    multipart data." for a part whose headers pass 4 KiB (a file name of a few thousand characters),
    "Missing boundary in multipart." for a hand-set Content-Type; neither said what to send instead."""
    long_name = "scene_" + "x" * 5000 + ".tif"
    r = client.post("/v1/jobs", files={"file": (long_name, SCENE.read_bytes(), "image/tiff")})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "header size" in detail and "file name" in detail and "curl -F file=@scene.tif" in detail, detail
    assert "\n" not in detail and long_name not in detail
    r = client.post("/v1/jobs", content=SCENE.read_bytes(), headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["detail"] and "curl -F file=@scene.tif" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["total"] == 0


def _odd_rasters() -> list[Path]:
    return sorted(p for p in RASTERS.rglob("*.tif"))


def _expected(path: Path, over_http: bool = False) -> tuple[bool, str]:
    """What the service should say, decided from rasterio's own view of the file; fewer than three
    bands are refused over HTTP (``api.intake.check_bands``: the job's ``bands`` may read them), not
    by ``inspect_raster``."""
    with rasterio.open(path) as src:
        if src.transform.is_identity and src.gcps[0]:
            return False, "warp it first"
        if src.crs is None:
            return False, "no CRS"
        if src.transform.is_identity:
            return False, "geotransform"
        if over_http and src.count < 3 and not is_paletted(src):
            return False, "bands=1,1,1"
    return True, ""


@pytest.mark.parametrize("path", _odd_rasters(), ids=lambda p: str(p.relative_to(RASTERS)))
def test_odd_rasters_are_accepted_or_refused_for_the_right_reason(path):
    accepted, reason = _expected(path)
    limits = RasterLimits(max_side=50_000, max_pixels=200_000_000)
    if accepted:
        summary = inspect_raster(path, limits)
        with rasterio.open(path) as src:
            bands = 4 if is_paletted(src) else src.count  # a paletted band is read as RGBA
            assert (summary["width"], summary["height"], summary["bands"]) == (src.width, src.height, bands)
        assert summary["gsd_m"] > 0
    else:
        with pytest.raises(UploadRejected) as err:
            inspect_raster(path, limits)
        assert err.value.status_code == 422 and reason in err.value.detail


@pytest.mark.parametrize("name", ["rasterio/rotated.tif", "rasterio/byte.tif", "rasterio/goes.tif",
                                  "rasterio/RGBA.uint16.tif", "opengeos_naip/m_4709963_se_14_1_20200831.tif"])
def test_odd_rasters_over_http(client, name):
    path = RASTERS / name
    accepted, reason = _expected(path, over_http=True)
    r = post(client, path.name, path.read_bytes())
    with rasterio.open(path) as src:
        gsd = gsd_m(src.crs, src.transform, src.width, src.height) if src.crs else None
    if accepted and gsd and gsd > 3.0 * (1 + GSD_SLACK):  # over 10x the building model's 0.3 m (geoseg.coarse_input)
        assert r.status_code == 422 and "allow_coarse=true" in r.json()["detail"], r.text
        r = post(client, path.name, path.read_bytes(), allow_coarse="true")
    if accepted:
        assert r.status_code == 202, r.text
        with rasterio.open(path) as src:
            assert r.json()["input"]["bands"] == src.count
        assert client.delete(r.json()["links"]["self"]).status_code == 204
    else:
        assert r.status_code == 422 and reason in r.json()["detail"]


def test_a_paletted_geotiff_is_accepted_as_the_rgba_it_stands_for(client, tmp_path):
    """``geoseg predict`` reads a one-band colour-table raster as its colours (tiles.palette), but
    the service refused its upload as '1 band(s)'. It is accepted (4 bands: the RGBA expansion);
    a one-band raster without a colour table is still refused."""
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    with rasterio.open(scene) as src:
        rgb, profile = src.read([1, 2, 3]), dict(src.profile)
    indexed = Image.fromarray(np.moveaxis(rgb, 0, -1)).quantize(64)
    palette = np.reshape(indexed.getpalette()[:192], (64, 3))
    profile.update(driver="GTiff", count=1, photometric="palette", tiled=False, compress=None)
    with rasterio.open(tmp_path / "paletted.tif", "w", **profile) as dst:
        dst.write(np.array(indexed), 1)
        dst.write_colormap(1, {i: (*map(int, palette[i]), 255) for i in range(64)})
    r = post(client, "paletted.tif", (tmp_path / "paletted.tif").read_bytes())
    assert r.status_code == 202, r.text
    assert r.json()["input"]["bands"] == 4
    assert client.delete(r.json()["links"]["self"]).status_code == 204
    profile.update(photometric="minisblack")
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as dst:
        dst.write(np.array(indexed), 1)
    r = post(client, "grey.tif", (tmp_path / "grey.tif").read_bytes())
    assert r.status_code == 422 and "1 band(s)" in r.json()["detail"]


def test_a_grey_upload_is_read_as_rgb_when_bands_says_so(client, tmp_path):
    """A one-band grey raster (a historical black-and-white aerial photo, a panchromatic band) was
    refused whatever the job's ``bands`` said; ``bands=1,1,1`` reads it as red, green and blue, as
    ``geoseg predict --bands 1,1,1`` does, and without it the 422 names that field."""
    with rasterio.open(SCENE) as src:
        grey, profile = src.read(2), dict(src.profile)
    profile.update(count=1, photometric="minisblack", compress="deflate")
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as dst:
        dst.write(grey, 1)
    content = (tmp_path / "grey.tif").read_bytes()
    refused = post(client, "grey.tif", content)
    assert refused.status_code == 422, refused.text
    assert "1 band(s)" in refused.json()["detail"] and "bands=1,1,1" in refused.json()["detail"]
    r = post(client, "grey.tif", content, bands="1,1,1")
    assert r.status_code == 202, r.text
    assert r.json()["input"]["bands"] == 1
    assert client.get(r.json()["links"]["self"]).json()["options"]["bands"] == [1, 1, 1]
    assert client.delete(r.json()["links"]["self"]).status_code == 204
    too_far = post(client, "grey.tif", content, bands="1,1,2")
    assert too_far.status_code == 422 and "band(s) 2 do not exist" in too_far.json()["detail"], too_far.text


def test_gsd_is_in_metres_for_projected_and_geographic_scenes():
    limits = RasterLimits(max_side=50_000, max_pixels=200_000_000)
    swiss = inspect_raster(RASTERS / "detectree_swissimage/img/1091-322_00.tif", limits)
    assert swiss["gsd_m"] == pytest.approx(0.5, rel=0.01) and swiss["crs"] == "EPSG:2056"
    assert swiss["crs_wkt"] is None  # named by its code
    world = inspect_raster(RASTERS / "rasterio/world.rgb.tif", limits)
    with rasterio.open(RASTERS / "rasterio/world.rgb.tif") as src:
        degrees = src.res[0]
    assert world["gsd_m"] == pytest.approx(degrees * 111_320, rel=0.02)  # centre on the equator



def test_a_jobs_gsd_is_the_one_its_report_will_say_for_pixels_longer_than_wide(tmp_path):
    """A lon/lat grid at 65 N has pixels 0.42 times as wide as tall: the job said their arithmetic mean
    (0.385 m), its report.json the geometric one predict uses (0.352 m)."""
    degrees = 6e-6
    path = tmp_path / "n65.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(10.0, 65.0, degrees, degrees)) as dst:
        dst.write(np.full((3, 64, 64), 90, np.uint8))
    summary = inspect_raster(path, RasterLimits(max_side=50_000, max_pixels=200_000_000))
    with Scene(path) as scene:
        assert summary["gsd_m"] == pytest.approx(scene.native_gsd, abs=1e-4)
    east, north = 111_320 * degrees * math.cos(math.radians(65)), 111_320 * degrees
    assert summary["gsd_m"] == pytest.approx(math.sqrt(east * north), rel=0.01)


def test_upload_just_over_the_limit_is_cut_while_copying(client):
    r = post(client, "big.tif", b"II*\x00" + b"\x00" * (8 * 1024**2 + 10))
    assert r.status_code == 413 and "GEOSEG_MAX_UPLOAD_MB" in r.json()["detail"]
    assert list(client.app.state.settings.uploads_dir.iterdir()) == []


def test_streamed_upload_without_length_is_cut_at_the_limit(client):
    boundary = "geosegboundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tif\"\r\n"
               "Content-Type: image/tiff\r\n\r\nII*\x00").encode()
        for _ in range(12):
            yield b"\x00" * 1024**2
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/v1/jobs", content=body(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    assert client.get("/healthz").status_code == 200


def test_every_413_of_an_oversized_upload_is_the_same_bytes(client):
    """An upload past GEOSEG_MAX_UPLOAD_MB is refused by the body cap (its Content-Length, or the
    bytes received without one) or, when within the multipart slack, as its file part is written
    (api.upload_parts). The cap wrote ``{"detail": "..."}`` with json.dumps' spaces, the other
    FastAPI's compact ``{"detail":"..."}``: one refusal, two bodies. Now each is FastAPI's."""
    limit = 8 * 1024**2
    by_length = post(client, "big.tif", b"II*\x00" + b"\x00" * (10 * 1024**2))
    cut_while_written = post(client, "big.tif", b"II*\x00" + b"\x00" * (limit + 10))

    def streamed():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tif\"\r\n\r\nII*\x00"
        for _ in range(12):
            yield b"\x00" * 1024**2
        yield b"\r\n--b--\r\n"

    cut_while_received = client.post("/v1/jobs", content=streamed(),
                                     headers={"content-type": "multipart/form-data; boundary=b"})
    expected = JSONResponse({"detail": too_large(limit).detail}).body
    for r in (by_length, cut_while_written, cut_while_received):
        assert r.status_code == 413 and r.headers["content-type"] == "application/json", r.text
        assert r.content == expected and int(r.headers["content-length"]) == len(expected), r.content

def test_the_block_check_of_a_many_band_upload_reads_a_few_bands_at_a_time(tmp_path):
    """The truncation check read its first and last block of every band in one call, one array for all
    bands: an 800 KB sparse upload of 2,000 bands took 0.5 GB of the server's memory, and one of 65,535
    bands with 1024 px tiles (TIFF's most) would take 68 GB, so a small upload could get the server killed."""
    import tracemalloc

    bands = 400  # 1024 px tiles: 400 MiB read at once
    many = tmp_path / "bands.tif"
    with rasterio.open(many, "w", driver="GTiff", width=1024, height=1024, count=bands, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(3627854, 38830, 0.3, 0.3), tiled=True,
                       blockxsize=1024, blockysize=1024, interleave="band", SPARSE_OK=True) as dst:
        dst.write(np.full((3, 1024, 1024), 100, np.uint8), indexes=[1, 2, 3])
    tracemalloc.start()
    try:
        assert inspect_raster(many, RasterLimits(100_000, 10**9))["bands"] == bands
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"  # a few blocks, not one per band


def test_too_many_bands_are_refused_from_the_header(tmp_path):
    """A 720 KB sparse upload of 20,000 bands took the upload check 100 s and 1.2 GB (each band group's
    read costs time with the band count), then the worker an hour in its mask check; TIFF allows 65,535."""
    import time

    path = tmp_path / "bands.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1100, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(3627854, 38830, 0.3, 0.3), interleave="band", SPARSE_OK=True) as dst:
        dst.write(np.full((3, 64, 64), 100, np.uint8), indexes=[1, 2, 3])
    started = time.perf_counter()
    with pytest.raises(UploadRejected) as err:
        inspect_raster(path, RasterLimits(100_000, 10**9))
    assert err.value.status_code == 413 and "1100 bands; the limit is 1024" in err.value.detail
    assert time.perf_counter() - started < 5
    assert inspect_raster(path, RasterLimits(100_000, 10**9, max_bands=1100))["bands"] == 1100


def test_an_image_of_too_many_tiles_is_refused_from_its_tags(tmp_path):
    """3.9 million 16 px tiles (an 86 MB upload of 1e9 px) took 11 s and 0.5 GB only to list them."""
    path = tmp_path / "tiny_tiles.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(3627854, 38830, 0.3, 0.3), tiled=True, blockxsize=16, blockysize=16,
                       compress="deflate") as dst:
        dst.write(np.full((3, 1024, 1024), 100, np.uint8))
    with pytest.raises(UploadRejected) as err:
        inspect_raster(path, RasterLimits(100_000, 10**9, max_blocks=4095))
    assert err.value.status_code == 422 and "4096 tiles of 16 x 16 pixels" in err.value.detail
    assert "TILED=YES" in err.value.detail
    assert inspect_raster(path, RasterLimits(100_000, 10**9))["width"] == 1024  # 4,096 tiles: far under


def test_huge_strips_are_refused_before_any_read(tmp_path):
    path = tmp_path / "one_strip.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(0, 0, 0.3, 0.3), compress="deflate",
                       blockysize=1024) as dst:
        dst.write(np.zeros((3, 1024, 1024), np.uint8))
    with pytest.raises(UploadRejected) as err:
        inspect_raster(path, RasterLimits(max_side=50_000, max_pixels=10**9, max_block_bytes=2**20))
    assert err.value.status_code == 422 and "TILED=YES" in err.value.detail
    assert inspect_raster(path, RasterLimits(max_side=50_000, max_pixels=10**9))["width"] == 1024


def test_single_strip_that_gdal_shows_as_rows_is_refused(tmp_path):
    """GDAL presents a big strip as 1-row blocks; the limit must apply to the strip as stored."""
    path = tmp_path / "single_strip.tif"
    profile = dict(driver="GTiff", width=2048, height=2048, count=3, dtype="uint8", crs="EPSG:3857",
                   transform=from_origin(0, 0, 0.3, 0.3), compress="deflate")
    with rasterio.open(path, "w", tiled=False, blockysize=2048, **profile) as dst:
        dst.write(np.zeros((3, 2048, 2048), np.uint8))
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (1, 2048)  # what GDAL reports: 6 KiB "blocks"
    limits = RasterLimits(max_side=50_000, max_pixels=10**9, max_block_bytes=8 * 2**20)
    with pytest.raises(UploadRejected) as err:
        inspect_raster(path, limits)
    assert err.value.status_code == 422
    assert "strips of 2048 x 2048" in err.value.detail and "TILED=YES" in err.value.detail

    tiled = tmp_path / "tiled.tif"  # the same pixels retiled pass the same limit
    with rasterio.open(tiled, "w", tiled=True, blockxsize=512, blockysize=512, **profile) as dst:
        dst.write(np.zeros((3, 2048, 2048), np.uint8))
    assert inspect_raster(tiled, limits)["width"] == 2048


def _first_tile_corrupted(tmp: Path) -> bytes:
    """A real JPEG-tiled scene whose first tile is 0xff bytes: the block check reads it."""
    from test_api_errors import JPEG_TILED, corrupt_tile

    return corrupt_tile(JPEG_TILED, tmp / "corrupt.tif", 0).read_bytes()


@pytest.mark.parametrize("make, words", [
    (lambda tmp: b"II*\x00", "Cannot read TIFF header"),
    (_first_tile_corrupted, "Not a JPEG file"),  # GDAL's reason, chained under "Read failed"
], ids=["tiff signature only", "corrupt first tile"])
def test_refusals_do_not_reveal_server_paths(client, tmp_path, make, words):
    data_dir = str(client.app.state.settings.data_dir)
    for endpoint in ("/v1/jobs", "/v1/segment"):
        r = post(client, "mine.tif", make(tmp_path), endpoint)
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert words in detail  # GDAL's reason is kept ...
        assert data_dir not in detail and "uploads" not in detail and "upload.tif" in detail  # ... not where


def test_redact_paths_keeps_file_names_and_urls():
    from api.redact import redact_paths

    text = "/srv/geoseg/jobs/42/input.tif, band 1: see https://gdal.org/a/b; EPSG:3857 a/b 1/2"
    assert redact_paths(text) == "input.tif, band 1: see https://gdal.org/a/b; EPSG:3857 a/b 1/2"
    named = {"/srv/geo seg/u/x.tif": "upload.tif", "x.tif": "upload.tif"}
    assert redact_paths("x.tif: /srv/geo seg/u/x.tif: bad", named) == "upload.tif: upload.tif: bad"


def test_unknown_and_repeated_form_fields_are_422(client):
    # FastAPI ignored a field the route does not take and kept the last of a repeated one: a typo
    # ran the job with the defaults (profil=fast: the accurate profile), and of two files sent in
    # one request the first was dropped, the 202 looking like both were taken
    tif = SCENE.read_bytes()
    svc = client.app.state.settings
    jobs, folders = client.get("/v1/jobs").json()["total"], set(svc.jobs_dir.iterdir())
    cases = {
        ("/v1/jobs", "typo"): ({"file": ("a.tif", tif, "image/tiff")}, {"profil": "fast"},
                               "unknown form field 'profil' (did you mean 'profile'?)"),
        ("/v1/jobs", "two files"): ([("file", ("a.tif", tif, "image/tiff")), ("file", ("b.tif", tif, "image/tiff"))],
                                    {}, "form field 'file' sent 2 times (one GeoTIFF per job: submit each file as "
                                        "its own job)"),
        ("/v1/jobs", "twice"): ({"file": ("a.tif", tif, "image/tiff")}, {"profile": ["fast", "accurate"]},
                                "form field 'profile' sent 2 times"),
        ("/v1/segment", "outputs"): ({"file": ("a.tif", tif, "image/tiff")}, {"outputs": "classmap"},
                                     "unknown form field 'outputs'"),
    }
    for (endpoint, case), (files, data, says) in cases.items():
        r = client.post(endpoint, files=files, data=data)
        assert r.status_code == 422, (case, r.status_code, r.text)
        assert r.json()["detail"].startswith(says) and "\n" not in r.json()["detail"], (case, r.json())
    assert r.json()["detail"].endswith("this route takes each of file, refine, regularize, profile, bands, model, "
                                       "allow_coarse, mask at most once (see /docs)")  # /v1/segment's own fields
    assert client.get("/v1/jobs").json()["total"] == jobs  # nothing stored
    # no folder added (one of an earlier test's jobs may be removed meanwhile: the module shares a server)
    assert list(svc.uploads_dir.iterdir()) == [] and not set(svc.jobs_dir.iterdir()) - folders
    # and the schema says so: a generated client offered to send any extra field
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Body_submit_job"]["additionalProperties"] is False
    assert schemas["Body_segment"]["additionalProperties"] is False
    # every declared field once is still taken
    r = client.post("/v1/jobs", files={"file": ("a.tif", tif, "image/tiff")},
                    data={"refine": "false", "regularize": "true", "outputs": "buildings", "profile": "fast",
                          "bands": "1,2,3", "model": ""})
    assert r.status_code == 202, r.text
    client.delete(f"/v1/jobs/{r.json()['id']}")


def test_a_field_sent_empty_is_422_unless_empty_means_something(client):
    """FastAPI reads an empty text value as the field left out: ``outputs=`` (a client's unset variable)
    made both outputs, ``profile=`` the accurate profile, ``refine=`` the GCN, each with a 202. ``bands=``
    and ``model=`` say what their empty value means (the raster's bands, the shipped models)."""
    tif = SCENE.read_bytes()
    jobs = client.get("/v1/jobs").json()["total"]
    for endpoint, data, says in [
            ("/v1/jobs", {"outputs": ""}, "form field 'outputs' sent empty"),
            ("/v1/jobs", {"profile": "", "refine": ""}, "form fields 'profile', 'refine' sent empty"),
            ("/v1/segment", {"regularize": ""}, "form field 'regularize' sent empty")]:
        r = client.post(endpoint, files={"file": ("a.tif", tif, "image/tiff")}, data=data)
        assert r.status_code == 422, (data, r.status_code, r.text)
        assert r.json()["detail"] == f"{says}: give a value, or leave the field out for its default (see /docs)"
    assert client.get("/v1/jobs").json()["total"] == jobs  # nothing stored
    r = client.post("/v1/jobs", files={"file": ("a.tif", tif, "image/tiff")},
                    data={"outputs": "buildings", "profile": "fast", "bands": "", "model": " "})
    assert r.status_code == 202, r.text
    client.delete(f"/v1/jobs/{r.json()['id']}")


def test_the_job_row_and_its_fsyncs_are_written_off_the_event_loop(client, monkeypatch):
    # accept_upload moved the input in, fsync'd its folder and inserted the row (a synchronous=FULL
    # commit: 15-25 ms here) on the event loop: every poll and download waited, once per upload
    import asyncio

    store = client.app.state.store
    create, on_loop = store.create, []

    def spying_create(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread: no running loop
            on_loop.append(False)
        return create(*args, **kwargs)

    monkeypatch.setattr(store, "create", spying_create)
    for endpoint in ("/v1/jobs", "/v1/segment"):
        r = post(client, "k.tif", SCENE.read_bytes(), endpoint)
        assert r.status_code in (200, 202), r.text
    assert on_loop == [False, False]


def test_a_raster_far_coarser_than_the_models_is_refused_at_submit(client, tmp_path):
    """Such a job (a continent in a few hundred pixels) was accepted and ran with a warning, its
    outputs meaning nothing. 422 at submit, naming both GSDs and the fields that get past it, as
    geoseg predict refuses it; nothing is stored."""
    with rasterio.open(SCENE) as src:
        window = Window(0, 0, 64, 64)
        pixels, profile = src.read(window=window), dict(src.profile)
        corner = src.window_transform(window)
    for key in ("blockxsize", "blockysize", "jpeg_quality"):
        profile.pop(key, None)
    profile.update(width=64, height=64, tiled=False, compress="deflate", photometric="RGB",
                   transform=rasterio.Affine(5.0, 0, corner.c, 0, -5.0, corner.f))  # 5 m pixels
    with rasterio.open(tmp_path / "coarse.tif", "w", **profile) as dst:
        dst.write(pixels)
    content = (tmp_path / "coarse.tif").read_bytes()
    jobs = client.get("/v1/jobs").json()["total"]
    for endpoint in ("/v1/jobs", "/v1/segment"):
        r = post(client, "coarse.tif", content, endpoint)
        detail = r.json()["detail"]
        assert r.status_code == 422 and detail.startswith("input GSD 4.98 m is 17x the 0.3 m the buildings-u2net-lite0 model")
        assert "allow_coarse=true" in detail and "\n" not in detail
        assert ("outputs=classmap for the class map alone" in detail) == (endpoint == "/v1/jobs"), detail
    assert client.get("/v1/jobs").json()["total"] == jobs
    for form in ({"outputs": "classmap"}, {"allow_coarse": "true"}):  # 4.5x the land cover's 1.1 m: a warning
        r = post(client, "coarse.tif", content, **form)
        assert r.status_code == 202, (form, r.text)
        job = client.get(r.json()["links"]["self"]).json()
        assert job["options"].get("allow_coarse", False) == ("allow_coarse" in form), job["options"]
        assert client.delete(r.json()["links"]["self"]).status_code == 204


def test_longitude_latitude_labelled_as_a_projected_crs_is_refused_at_submit(client, tmp_path):
    """A lon/lat grid whose CRS says UTM reads as micrometre pixels near the CRS's origin: such a
    job ran and gave outputs of no meaning; 422 naming the coordinates and the CRS to set."""
    with rasterio.open(SCENE) as src:
        pixels, profile = src.read(window=Window(0, 0, 64, 64)), dict(src.profile)
    for key in ("blockxsize", "blockysize", "jpeg_quality"):
        profile.pop(key, None)
    profile.update(width=64, height=64, tiled=False, compress="deflate", photometric="RGB", crs="EPSG:32636",
                   transform=rasterio.Affine(2.7e-6, 0, 32.59, 0, -2.7e-6, 0.35))
    with rasterio.open(tmp_path / "degrees.tif", "w", **profile) as dst:
        dst.write(pixels)
    r = post(client, "degrees.tif", (tmp_path / "degrees.tif").read_bytes())
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("the raster: its coordinates (32.59 to 32.5902, 0.349827 to 0.35) look like "
                                         "longitude/latitude, but its CRS EPSG:32636 is projected")
    assert "gdal_edit.py -a_srs EPSG:4326 upload.tif" in r.json()["detail"]


def test_an_all_nodata_upload_is_refused_at_submit(client, tmp_path):
    """An upload whose every pixel is nodata (its nodata value, or NaN in a float raster) was
    accepted (202) and its job failed in the worker with 'no valid pixels'. It is refused with 422;
    one valid pixel, in the last row, is enough to be accepted."""
    with rasterio.open(SCENE) as src:
        window = Window(0, 0, 128, 128)
        profile = {"driver": "GTiff", "width": 128, "height": 128, "crs": src.crs,
                   "transform": src.window_transform(window)}
        pixels = src.read([1, 2, 3], window=window)

    def upload(name: str, data: np.ndarray, **extra) -> bytes:
        with rasterio.open(tmp_path / name, "w", count=3, dtype=data.dtype, **profile, **extra) as dst:
            dst.write(data)
        return (tmp_path / name).read_bytes()

    empty = np.zeros_like(pixels)
    r = post(client, "nodata.tif", upload("nodata.tif", empty, nodata=0))
    assert r.status_code == 422 and "no valid pixel" in r.json()["detail"] and "1,2,3" in r.json()["detail"], r.text
    nan = np.full(pixels.shape, np.nan, dtype="float32")
    r = post(client, "nan.tif", upload("nan.tif", nan))
    assert r.status_code == 422 and "not a number" in r.json()["detail"], r.text
    one = empty.copy()
    one[:, -1, -1] = pixels[:, -1, -1] | 1
    r = post(client, "one.tif", upload("one.tif", one, nodata=0))
    assert r.status_code == 202, r.text
    assert client.delete(r.json()["links"]["self"]).status_code == 204
    from tiles.masks import has_valid_pixel

    with rasterio.open(tmp_path / "one.tif") as src:  # read in small windows: the last one finds it
        assert has_valid_pixel(src, (1, 2, 3), strip_pixels=128 * 16) is True


def test_a_large_all_nodata_upload_is_refused_at_submit_too(client, tmp_path):
    """Past 64 Mpx the check stopped reading and accepted the upload (202), whose job then failed
    in the worker. A tiled, compressed 8300 x 8300 px raster of nodata is refused; one valid pixel
    in its last tile is accepted. Its identical tiles are read once (tiles.tiff_chunks)."""
    side = 8300  # 68.9 Mpx
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32737", "transform": from_origin(250000, 9860000, 0.3, 0.3), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    with rasterio.open(tmp_path / "big.tif", "w", **profile) as dst:
        strip = np.zeros((3, 1024, side), np.uint8)
        for row in range(0, side, 1024):
            dst.write(strip[:, :min(1024, side - row)], window=Window(0, row, side, min(1024, side - row)))
    r = post(client, "big.tif", (tmp_path / "big.tif").read_bytes())
    assert r.status_code == 422 and "no valid pixel" in r.json()["detail"], r.text
    with rasterio.open(tmp_path / "big.tif", "r+") as dst:
        dst.write(np.full((3, 1, 1), 90, np.uint8), window=Window(side - 2, side - 2, 1, 1))
    r = post(client, "big.tif", (tmp_path / "big.tif").read_bytes())
    assert r.status_code == 202, r.text
    assert client.delete(r.json()["links"]["self"]).status_code == 204


def test_the_all_nodata_check_reads_the_bands_the_job_reads(client, tmp_path):
    """The check built its mask from every band (GDAL's dataset mask ORs them; rasterio reads a
    4-band raster whose band 1 is red as RGBA): an R,G,B,NIR upload whose NIR is nodata everywhere
    was refused as holding no valid pixel, and a 5-band upload whose bands 1-3 (the ones the job
    reads) are nodata everywhere was accepted, its job predicting black ground. Now the bands the
    job reads decide, as they do in predict (``tiles.masks.bands_valid_mask``)."""
    with rasterio.open(SCENE) as src:
        rgb = np.maximum(src.read([1, 2, 3]), 1)  # no pixel 0: nodata below is only where it is set
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "dtype": "uint8", "nodata": 0,
                   "crs": src.crs, "transform": src.transform, "tiled": True, "compress": "deflate",
                   "photometric": "MINISBLACK"}
    fill, data = np.zeros_like(rgb[:1]), np.full_like(rgb[:1], 90)

    def upload(name: str, bands: np.ndarray, colorinterp: list | None = None) -> bytes:
        with rasterio.open(tmp_path / name, "w", count=len(bands), **profile) as dst:
            dst.write(bands)
            if colorinterp:
                dst.colorinterp = colorinterp
        return (tmp_path / name).read_bytes()

    from rasterio.enums import ColorInterp

    nir = upload("rgbn.tif", np.concatenate([rgb, fill]),
                 [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])
    r = post(client, "rgbn.tif", nir)
    assert r.status_code == 202, r.text
    assert client.delete(r.json()["links"]["self"]).status_code == 204
    five = upload("five.tif", np.concatenate([fill, fill, fill, data, data]))
    r = post(client, "five.tif", five)
    assert r.status_code == 422 and "no valid pixel" in r.json()["detail"] and "(1,2,3)" in r.json()["detail"], r.text
    r = post(client, "five.tif", five, bands="4,5,4")  # the bands with data
    assert r.status_code == 202, r.text
    assert client.delete(r.json()["links"]["self"]).status_code == 204


def test_the_upload_checks_run_in_the_server_without_torch(tmp_path):
    """An accepted upload passes every check (bands, GSD against the models' cards, data) in the
    server process without importing torch: the server stays small (its workers load the models).
    Why: the GSD check (``geoseg.coarse_input``) and ``PredictOptions`` imported ``geoseg.heads`` and
    ``geoseg.infer``, so ``geoseg serve`` idled at ~420 MiB RSS instead of ~230 MiB."""
    import os
    import subprocess
    import sys

    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    code = ("import sys\n"
            "from fastapi.testclient import TestClient\n"
            "from api.app import create_app\n"
            "from api.settings import Settings\n"
            f"settings = Settings(data_dir={str(tmp_path / 'svc')!r}, standby=False)\n"
            "with TestClient(create_app(settings, runner='test_api_fakes:footprint_runner')) as c:\n"
            f"    with open({str(SCENE)!r}, 'rb') as f:\n"
            "        r = c.post('/v1/jobs', files={'file': ('scene.tif', f, 'image/tiff')}, data={'profile': 'fast'})\n"
            "    assert r.status_code == 202, r.text\n"
            "assert 'torch' not in sys.modules, 'the server imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120, cwd=tests.parent, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_crs_without_a_code_is_sent_as_wkt(tmp_path):
    """A custom transverse Mercator in US feet was listed as ``crs: unknown`` alone: a client could not
    tell what the scene was in."""
    feet = ('+proj=tmerc +lat_0=0 +lon_0=32.6 +k=0.9996 +x_0=1640416.67 +y_0=0 +ellps=WGS84 '
            '+units=us-ft +no_defs')
    with rasterio.open(SCENE) as src:
        pixels = src.read(window=Window(0, 0, 64, 64))
    with rasterio.open(tmp_path / "feet.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs=rasterio.crs.CRS.from_proj4(feet), transform=from_origin(1_650_000, 1_000, 1, 1)) as dst:
        dst.write(pixels)
    summary = inspect_raster(tmp_path / "feet.tif", RasterLimits(max_side=50_000, max_pixels=200_000_000))
    assert summary["crs"] in ("unknown", "custom") and "US survey foot" in summary["crs_wkt"]
    assert rasterio.crs.CRS.from_wkt(summary["crs_wkt"]) == rasterio.crs.CRS.from_proj4(feet)
