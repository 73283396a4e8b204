"""What browsers, proxies and CDNs may keep: ``Cache-Control`` and ``Vary`` of every answer.
One keyed server and one succeeded job (fake runner) for the module."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from test_api_contract import service, submit, wait

KEY = "cache-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    with service(tmp_path_factory.mktemp("cache"), api_key=KEY) as client:
        client.headers["X-API-Key"] = KEY
        job = wait(client, submit(client)["id"])
        assert job["status"] == "succeeded", job
        yield client, job


def cache_control(response) -> set[str]:
    return {d.strip() for d in response.headers.get("cache-control", "").split(",") if d.strip()}


def test_job_status_lists_health_and_errors_are_never_stored(served):
    # no Cache-Control anywhere: a browser or proxy could reuse a status polled a moment ago
    # ('queued' for ever to a caching client) or an error, by heuristic freshness
    client, job = served
    answers = {
        "status": client.get(job["links"]["self"]),
        "list": client.get("/v1/jobs"),
        "models": client.get("/v1/models"),
        "healthz": client.get("/healthz"),
        "404": client.get(f"/v1/jobs/{uuid.uuid4()}"),
        "404 file": client.get(f"{job['links']['self']}/classmap.tif.aux.xml"),
        "422": client.get("/v1/jobs/not-a-uuid"),
        "401 (gate)": client.get("/v1/jobs", headers={"X-API-Key": "wrong"}),
    }
    for name, r in answers.items():
        assert cache_control(r) == {"no-store"}, (name, r.status_code, r.headers)


def test_result_files_are_kept_privately_by_the_client_and_vary_with_the_key(served):
    # a succeeded job's files never change: a client may keep them (revalidating by ETag still
    # works), but a shared cache must not hand them to a client without the key
    client, job = served
    url = job["links"]["classmap.tif"]
    full = client.get(url)
    part = client.get(url, headers={"Range": "bytes=0-99"})
    current = client.get(url, headers={"If-None-Match": full.headers["etag"]})
    assert (full.status_code, part.status_code, current.status_code) == (200, 206, 304)
    for r in (full, part, current):
        assert cache_control(r) == {"private", "max-age=31536000", "immutable"}, r.status_code
    for r in (full, part, current):
        assert "x-api-key" in {v.strip().lower() for v in r.headers["vary"].split(",")}, r.status_code
    gpkg = client.get(job["links"]["buildings.gpkg"], headers={"Accept-Encoding": "gzip"})  # gzipped
    assert gpkg.headers["content-encoding"] == "gzip" and "private" in cache_control(gpkg)
    assert {"x-api-key", "accept-encoding"} <= {v.strip().lower() for v in gpkg.headers["vary"].split(",")}


def vary(response) -> list[str]:
    return [v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()]


def test_a_304_carries_the_vary_and_cache_control_of_its_200(served):
    # RFC 9110 15.4.5: a cache replaces its stored copy's Vary with the 304's; the 304s had none,
    # so a revalidated copy lost 'Vary: X-API-Key' (one key's copy shown to another key's page)
    # and 'Accept-Encoding' (a gzipped copy served to a client that cannot read gzip)
    client, job = served
    tile = job["links"]["tiles"].replace("{z}/{x}/{y}", "0/0/0")
    for url in (job["links"]["buildings.geojson"], job["links"]["buildings.gpkg"], job["links"]["report.json"],
                job["links"]["classmap.tif"], tile):
        for encoding in ("gzip", "identity"):
            ok = client.get(url, headers={"Accept-Encoding": encoding})
            for method in (client.get, client.head):
                again = method(url, headers={"Accept-Encoding": encoding, "If-None-Match": ok.headers["etag"]})
                assert again.status_code == 304, (url, encoding)
                assert vary(again) == vary(ok) and "x-api-key" in vary(ok), (url, encoding, again.headers)
                assert again.headers["cache-control"] == ok.headers["cache-control"], (url, encoding)
                assert again.headers["etag"] == ok.headers["etag"], (url, encoding)
            # a type the gzip layer compresses varies on Accept-Encoding, whatever the body's size
            # (the GeoJSON here is under gzip's 1 KiB) or the client's Accept-Encoding; each name once
            assert ("accept-encoding" in vary(ok)) is (url not in (job["links"]["classmap.tif"], tile)), url
            assert len(vary(ok)) == len(set(vary(ok))), ok.headers["vary"]


def test_an_open_server_does_not_vary_results_on_a_key(tmp_path):
    with service(tmp_path) as client:
        job = wait(client, submit(client, outputs="classmap")["id"])
        r = client.get(job["links"]["classmap.tif"])
    assert "private" in cache_control(r) and "vary" not in r.headers
