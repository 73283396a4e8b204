"""Results read over HTTP as GIS clients and web maps do: GDAL's /vsicurl/ (QGIS, gdalinfo),
browsers and caching clients. One server and one succeeded job (fake runner) for the module."""
from __future__ import annotations

from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime

import pytest
from fastapi.testclient import TestClient
from test_api_contract import service, submit, wait


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    with service(tmp_path_factory.mktemp("gis")) as client:
        job = wait(client, submit(client)["id"])
        assert job["status"] == "succeeded", job
        yield client, job


def test_a_cached_result_is_revalidated_with_304(served):
    # a browser or caching client revalidating a result it holds (If-None-Match with the ETag,
    # or If-Modified-Since with Last-Modified) was sent the whole file again (200)
    client, job = served
    url = job["links"]["buildings.gpkg"]
    first = client.get(url, headers={"Accept-Encoding": "identity"})
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for method in ("get", "head"):
        for headers, tag in (({"If-None-Match": etag}, etag), ({"If-None-Match": f'"other", W/{etag}'}, f"W/{etag}"),
                             ({"If-None-Match": "*"}, etag), ({"If-Modified-Since": modified}, etag)):
            r = getattr(client, method)(url, headers=headers)
            assert (r.status_code, r.content) == (304, b""), (method, headers)
            assert r.headers["etag"] == tag and "content-length" not in r.headers
    earlier = formatdate(parsedate_to_datetime(modified).timestamp() - 60, usegmt=True)
    for headers in ({"If-None-Match": '"other"'}, {"If-Modified-Since": earlier},
                    {"If-Modified-Since": "not a date"},
                    {"If-None-Match": '"other"', "If-Modified-Since": modified}):  # the tag decides
        r = client.get(url, headers=headers)
        assert (r.status_code, r.content) == (200, first.content), headers


def test_if_match_and_if_unmodified_since_answer_412_when_they_rule_the_file_out(served):
    # both were ignored: 'If-Match: "other"' with a Range got the 206 of whatever the URL held
    client, job = served
    url, tile = job["links"]["buildings.gpkg"], job["links"]["tiles"].format(z=18, x=0, y=0)
    for link in (url, tile):
        first = client.get(link, headers={"Accept-Encoding": "identity"})
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        earlier = formatdate(parsedate_to_datetime(modified).timestamp() - 60, usegmt=True)
        for headers in ({"If-Match": '"other"'}, {"If-Match": f"W/{etag}"},  # strong comparison
                        {"If-Unmodified-Since": earlier}, {"If-Match": '"other"', "If-Unmodified-Since": modified}):
            for method in ("get", "head"):
                r = getattr(client, method)(link, headers={**headers, "Range": "bytes=0-9"})
                assert r.status_code == 412, (link, headers, method)
            assert client.get(link, headers=headers).json()["detail"].startswith("precondition failed: "), headers
        for headers in ({"If-Match": etag}, {"If-Match": f'"other", {etag}'}, {"If-Match": "*"},
                        {"If-Unmodified-Since": modified}, {"If-Unmodified-Since": "not a date"},
                        {"If-Match": etag, "If-Unmodified-Since": earlier}):  # If-Match decides
            r = client.get(link, headers={**headers, "Accept-Encoding": "identity"})
            assert (r.status_code, r.content) == (200, first.content), (link, headers)
    strong = client.head(url, headers={"Accept-Encoding": "identity"}).headers["etag"]
    part = client.get(url, headers={"If-Match": strong, "Range": "bytes=0-9"})
    assert (part.status_code, len(part.content)) == (206, 10)


def test_sidecar_probes_of_gdal_get_404(served):
    # GDAL opening a result by URL looks for its sidecars: each got 422, which GDAL reports as a
    # warning ("HTTP response code on .../classmap.tif.aux.xml: 422", 5-9 per open in QGIS's log)
    client, job = served
    base = job["links"]["self"]
    for name in ("classmap.tif.aux.xml", "classmap.tif.msk", "classmap.aux", "buildings.gpkg.aux",
                 "input.tif", "result"):
        for method in ("get", "head"):
            r = getattr(client, method)(f"{base}/{name}")
            assert r.status_code == 404, (name, method, r.status_code)
    assert client.get(f"{base}/classmap.tif.aux.xml").json()["detail"].startswith("a job has no file")
    schema = client.get("/openapi.json").json()
    name = next(p for p in schema["paths"]["/v1/jobs/{job_id}/{name}"]["get"]["parameters"]
                if p["name"] == "name")
    assert set(name["schema"]["enum"]) == set(job["links"]) - {"self", "tilejson", "tiles"}


def test_vector_results_are_gzipped_for_clients_that_accept_it(served):
    # a web map fetching the building layer got it uncompressed (about 6x the bytes of gzip);
    # byte ranges and the COG must stay as they are
    client, job = served
    url = job["links"]["buildings.gpkg"]
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content
    assert "accept-encoding" in zipped.headers["vary"].lower()
    assert zipped.num_bytes_downloaded < len(plain.content) / 3 < plain.num_bytes_downloaded
    assert zipped.headers["etag"] == f"W/{plain.headers['etag']}"  # another representation
    r = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]})
    assert r.status_code == 304
    part = client.get(url, headers={"Accept-Encoding": "gzip", "Range": "bytes=100-199"})
    assert part.status_code == 206 and "content-encoding" not in part.headers
    assert part.content == plain.content[100:200]
    # If-Range with the gzip body's (weak) ETag: the whole file, not ranges of another representation
    whole = client.get(url, headers={"Accept-Encoding": "identity", "Range": "bytes=100-199",
                                     "If-Range": zipped.headers["etag"]})
    assert (whole.status_code, whole.content) == (200, plain.content)
    cog = client.get(job["links"]["classmap.tif"], headers={"Accept-Encoding": "gzip"})
    assert cog.status_code == 200 and "content-encoding" not in cog.headers


def test_gzip_is_sent_only_to_a_client_whose_accept_encoding_takes_it(served):
    # 'gzip;q=0' (the client refuses gzip) was answered gzipped: the letters 'gzip' were enough
    client, job = served
    for url in (job["links"]["buildings.gpkg"], "/v1/models"):
        for accept, gzipped in (("gzip;q=0", False), ("identity, gzip;q=0", False), ("br", False),
                                ("deflate, gzip;q=0.5", True), ("GZip", True)):
            r = client.get(url, headers={"Accept-Encoding": accept})
            assert (r.headers.get("content-encoding") == "gzip") is gzipped, (url, accept)
            assert "accept-encoding" in r.headers["vary"].lower(), (url, accept)


def test_head_has_the_headers_of_the_get_gzipped_or_not(served):
    # a result file's HEAD sends no body, so the gzip layer (which decides from the body) left
    # it uncompressed: HEAD with Accept-Encoding: gzip gave the file's Content-Length and a strong
    # ETag where the GET streamed it gzipped (no Content-Length, W/ ETag), and no Vary with or
    # without gzip; RFC 9110 9.3.2
    client, job = served
    links = job["links"]
    urls = [links["self"], "/v1/jobs", "/v1/models", links["report.json"], links["buildings.geojson"],
            links["buildings.gpkg"], links["classmap.tif"], links["tilejson"]]
    compared = ("content-length", "content-encoding", "etag", "vary", "content-type", "cache-control")
    for encoding in ("gzip", "identity"):
        for url in urls:
            get = client.get(url, headers={"Accept-Encoding": encoding})
            head = client.head(url, headers={"Accept-Encoding": encoding})
            assert (head.status_code, head.content) == (get.status_code, b""), (encoding, url)
            assert ({h: head.headers.get(h) for h in compared}
                    == {h: get.headers.get(h) for h in compared}), (encoding, url)
    zipped = client.head(links["buildings.gpkg"], headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"].startswith("W/")
    assert "content-length" not in zipped.headers
    part = client.head(links["buildings.gpkg"], headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"})
    assert (part.status_code, part.headers["content-length"]) == (206, "100")
    assert "content-encoding" not in part.headers


def test_the_schema_declares_the_headers_and_types_result_files_and_tiles_answer_with(served):
    # the schema named only Cache-Control: not the ETag / Last-Modified a caching client revalidates
    # with, Accept-Ranges, the 206's Content-Range, nor the multipart/byteranges of several ranges
    client, job = served
    paths = client.get("/openapi.json").json()["paths"]
    result = paths["/v1/jobs/{job_id}/{name}"]["get"]["responses"]
    tile = paths["/v1/jobs/{job_id}/tiles/{z}/{x}/{y}.png"]["get"]["responses"]
    url = job["links"]["classmap.tif"]
    etag = client.get(url).headers["etag"]
    tile_url = job["links"]["tiles"].format(z=18, x=0, y=0)
    answers = [(result, client.get(url)), (result, client.get(url, headers={"Range": "bytes=0-9"})),
               (result, client.get(url, headers={"Range": "bytes=0-9,20-29"})),
               (result, client.get(url, headers={"If-None-Match": etag})),
               (tile, client.get(tile_url)), (tile, client.get(tile_url, headers={"If-None-Match": '"x"'}))]
    answers.append((tile, client.get(tile_url, headers={"If-None-Match": answers[-1][1].headers["etag"]})))
    for declared, r in answers:
        spec = declared[str(r.status_code)]
        if r.content:
            assert r.headers["content-type"].split(";")[0] in spec["content"], (r.url, r.status_code)
        sent = {h for h in ("etag", "last-modified", "accept-ranges", "content-range", "cache-control")
                if h in r.headers}
        declared_headers = {h.lower() for h in spec["headers"]}
        if "," in r.request.headers.get("range", ""):  # several ranges: Content-Range is in each part
            declared_headers.discard("content-range")
        assert sent == declared_headers, (r.url, r.status_code, sent)
    assert [r.status_code for _, r in answers] == [200, 206, 206, 304, 200, 200, 304]


def test_a_range_past_the_end_is_a_json_416_and_other_units_are_ignored(served):
    # Starlette answered a range past the end with an empty text/plain 416, and a Range of another
    # unit (or no valid byte range) with a text/plain 400 'Only support bytes range': a client
    # reading `detail` failed on both, and RFC 9110 14.2 says an unknown unit MUST be ignored
    client, job = served
    url = job["links"]["classmap.tif"]
    whole = client.get(url).content
    for method in ("get", "head"):
        r = getattr(client, method)(url, headers={"Range": f"bytes={len(whole)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(whole)}", method
        assert r.headers["content-type"] == "application/json"
    detail = client.get(url, headers={"Range": "bytes=999999-"}).json()["detail"]
    assert detail == (f"range 'bytes=999999-' starts past the end of the file, which has {len(whole)} bytes: "
                      f"ask for bytes within 0-{len(whole) - 1}")
    for ignored in ("items=0-10", "bytes=5-2", "bytes=abc"):
        r = client.get(url, headers={"Range": ignored})
        assert (r.status_code, r.content) == (200, whole), ignored
    # a stale If-Range: the whole file, whatever the range
    r = client.get(url, headers={"Range": f"bytes={len(whole)}-", "If-Range": '"stale"'})
    assert (r.status_code, r.content) == (200, whole)
    responses = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/{name}"]["get"]["responses"]
    assert "Content-Range" in responses["416"]["headers"]
