"""The service as a client developer meets it: one error shape, an OpenAPI document that says
what each route answers, and the Python client example of docs/service.md, run for real."""
from __future__ import annotations

import uuid

import httpx
import pytest
from test_api_contract import SCENE, service

KEY = "client-key"


def test_every_refusal_has_a_one_line_string_detail(tmp_path):
    """FastAPI's own validation used to answer ``detail`` as a list where the app's refusals (and the
    same mistake in another field, ``bands``) answer a string: a client had to branch on the type."""
    scene = SCENE.read_bytes()
    upload = {"file": ("s.tif", scene, "image/tiff")}
    with service(tmp_path, api_key=KEY, max_upload_bytes=100_000) as client:
        key = {"X-API-Key": KEY}
        answers = {
            "bad profile": client.post("/v1/jobs", headers=key, files=upload, data={"profile": "x"}),
            "bad bool": client.post("/v1/jobs", headers=key, files=upload, data={"refine": "maybe"}),
            "bad bands": client.post("/v1/jobs", headers=key, files=upload, data={"bands": "a"}),
            "missing file": client.post("/v1/jobs", headers=key, data={"refine": "true"}),
            "json body": client.post("/v1/segment", headers=key, json={"file": "x"}),
            "file as text": client.post("/v1/jobs", headers=key, data={"file": "abc"}),
            "profile as file": client.post("/v1/jobs", headers=key,
                                           files={**upload, "profile": ("p", b"x", "text/plain")}),
            "not tiff": client.post("/v1/jobs", headers=key, files={"file": ("a.png", b"\x89PNG\r\n\x1a\n0", "image/png")}),
            "oversized": client.post("/v1/jobs", headers=key, files={"file": ("a.tif", b"II*\0" + bytes(200_000), "image/tiff")}),
            "bad uuid": client.get("/v1/jobs/nope", headers=key),
            "bad limit": client.get("/v1/jobs?limit=0", headers=key),
            "bad cursor": client.get("/v1/jobs?after=zz", headers=key),
            "no job": client.get(f"/v1/jobs/{uuid.uuid4()}", headers=key),
            "no job file": client.get(f"/v1/jobs/{uuid.uuid4()}/x.txt", headers=key),
            "bad key": client.get("/v1/jobs", headers={"X-API-Key": "wrong"}),
        }
    for case, answer in answers.items():
        assert answer.status_code >= 400, case
        body = answer.json()
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], (case, body)
    invalid = answers["bad profile"].json()
    assert invalid["detail"].startswith("invalid request: form field 'profile': ") and "'x'" in invalid["detail"]
    assert invalid["errors"] == [{"type": "literal_error", "loc": ["body", "profile"],
                                  "msg": "Input should be 'accurate' or 'fast'"}]
    assert "form field 'file': Field required" in answers["missing file"].json()["detail"]
    assert "path parameter 'job_id'" in answers["bad uuid"].json()["detail"]
    assert "_file" not in answers["profile as file"].text  # FastAPI echoed an UploadFile's internals


def test_a_method_not_allowed_names_every_method_the_url_takes(tmp_path):
    # 405 said "Method Not Allowed" with the Allow of the first route on the path only: a job's
    # URL said `Allow: GET` (not DELETE), /v1/jobs `Allow: POST` (not GET)
    with service(tmp_path) as client:
        job = client.put(f"/v1/jobs/{uuid.uuid4()}")
        jobs = client.patch("/v1/jobs")
    assert (job.status_code, job.headers["allow"]) == (405, "GET, HEAD, DELETE")
    assert job.json()["detail"] == "method PUT is not allowed here; this URL takes GET, HEAD, DELETE"
    assert (jobs.status_code, jobs.headers["allow"]) == (405, "GET, HEAD, POST")


def test_a_url_no_route_has_is_a_404_pointing_to_the_docs(tmp_path):
    # the router's 404 said {"detail": "Not Found"}: not which URL, nor where the right ones are
    with service(tmp_path) as client:
        typo = client.get(f"/v1/job/{uuid.uuid4()}")
        gone = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert typo.status_code == 404
    assert typo.json()["detail"] == (f"no such URL: {typo.url.path} is none of the service's "
                                     "(they are listed at /docs)")
    assert gone.json()["detail"].startswith("no job ")  # a route's own 404 is unchanged


def test_a_body_that_is_not_a_form_is_told_so(tmp_path):
    with service(tmp_path) as client:
        raw = client.post("/v1/jobs", content=SCENE.read_bytes(), headers={"Content-Type": "image/tiff"})
    assert raw.status_code == 422
    assert "the body is image/tiff, not multipart/form-data" in raw.json()["detail"]


def test_an_unexpected_error_answers_json_with_a_detail(tmp_path):
    """Starlette's own 500 is text/plain: a client reading ``detail`` of every error failed on it."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "svc"))

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/broken")
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/json"
    assert answer.json()["detail"].startswith("internal server error (RuntimeError)")


def test_the_openapi_document_declares_what_each_route_answers(tmp_path):
    """What a generated client is built from: short operation ids, every status a route gives
    (503 of an unavailable job table on each route, /healthz's included, 206/304 of result files) with their
    headers, string problems, the form fields' allowed values and the job status fields."""
    import re

    with service(tmp_path, api_key=KEY) as client:
        doc = client.get("/openapi.json").json()
    operations = {(method, path): op for path, ops in doc["paths"].items() for method, op in ops.items()}
    assert {op["operationId"] for op in operations.values()} == {
        "healthz", "submit_job", "list_jobs", "get_job", "delete_job", "get_result", "get_tile", "get_tilejson",
        "segment", "list_models"}
    for (method, path), op in operations.items():
        if path.startswith("/v1/jobs") or path == "/v1/segment":
            assert "503" in op["responses"], (method, path)
            assert "Retry-After" in op["responses"]["503"]["headers"]
        if path.startswith("/v1"):
            assert op["security"] == [{"APIKeyHeader": []}], (method, path)
            assert "Problem" in op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
    geojson = operations[("post", "/v1/segment")]["responses"]["200"]["content"]["application/geo+json"]
    assert geojson["schema"]["properties"]["type"] == {"const": "FeatureCollection"}
    unhealthy = operations[("get", "/healthz")]["responses"]["503"]["content"]["application/json"]["schema"]
    assert unhealthy["anyOf"] == [{"$ref": "#/components/schemas/Health"}, {"$ref": "#/components/schemas/Problem"}]
    with service(tmp_path / "open") as client:  # a server without a key never answers 401
        open_doc = client.get("/openapi.json").json()
    assert not [path for path, ops in open_doc["paths"].items() for op in ops.values() if "401" in op["responses"]]
    submit = operations[("post", "/v1/jobs")]
    assert "Location" in submit["responses"]["202"]["headers"]
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    result = operations[("get", "/v1/jobs/{job_id}/{name}")]
    assert {"200", "206", "304", "404", "409"} <= set(result["responses"])
    assert "Retry-After" in result["responses"]["409"]["headers"]  # the poll interval, as on the job's 200
    assert "Retry-After" in operations[("get", "/v1/jobs/{job_id}")]["responses"]["200"]["headers"]
    assert "Cache-Control" in result["responses"]["200"]["headers"]
    assert result["responses"]["200"]["content"]["image/tiff"]["schema"] == {"type": "string", "format": "binary"}
    names = next(p for p in result["parameters"] if p["name"] == "name")["schema"]["enum"]
    assert names == ["buildings.geojson", "buildings.gpkg", "classmap.tif", "classmap.qml", "report.json"]
    schemas = doc["components"]["schemas"]
    assert schemas["Problem"]["properties"]["detail"]["type"] == "string"
    form = schemas["Body_submit_job"]["properties"]
    assert form["profile"]["anyOf"][0]["enum"] == ["accurate", "fast"]
    bands, outputs = re.compile(form["bands"]["pattern"]), re.compile(form["outputs"]["pattern"])
    assert all(bands.search(v) for v in ("3,2,1", " 5, 3, 2 ", "")) and not any(
        bands.search(v) for v in ("0,1,2", "1,2", "a,b,c"))
    assert all(outputs.search(v) for v in ("buildings", "buildings,classmap", "classmap")) and not outputs.search("x")
    links = schemas["JobLinks"]["properties"]  # typed fields of a generated client, not a bare dict
    assert set(links) == {"self", "buildings.geojson", "buildings.gpkg", "classmap.tif", "classmap.qml", "report.json",
                          "tilejson", "tiles"}
    # always sent (null when not applicable): required, else a generated client types them "maybe absent"
    assert {"expires_at", "eta_s", "previous_error", "progress", "links"} <= set(schemas["JobStatus"]["required"])
    for body in ("Body_submit_job", "Body_segment"):  # how generators know the part is a file, not a str
        assert schemas[body]["properties"]["file"]["format"] == "binary"
        # the optional mask: on its string branch (beside the anyOf, openapi-python-client typed it a str
        # and sent it as a text part, answered 422 "a text value, not a file")
        mask = schemas[body]["properties"]["mask"]
        assert [b.get("format") for b in mask["anyOf"] if b.get("type") == "string"] == ["binary"]
        assert "format" not in mask


def docs_client_example() -> dict:
    """The namespace of the ```python block under "## Python client" in docs/service.md."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "service.md").read_text()
    section = text.split("\n## Python client\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    namespace: dict = {"__name__": "geoseg_client"}
    exec(compile(code, "docs/service.md#python-client", "exec"), namespace)  # noqa: S102 (our own docs)
    return namespace


class BusyFirst(httpx.BaseTransport):
    """Answers the first submission 429 and the first poll 503 (each with ``Retry-After: 0``),
    as a full queue and a locked job table do, then passes every request on to ``inner``."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.refusals = inner, {("POST", "/v1/jobs"): 429, ("GET", "job"): 503}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = (request.method, "job" if request.url.path.count("/") == 3 else request.url.path)
        if route in self.refusals:
            request.read()
            return httpx.Response(self.refusals.pop(route), headers={"Retry-After": "0"},
                                  json={"detail": "busy; try again after Retry-After seconds"})
        return self.inner.handle_request(request)


def test_the_python_client_example_of_the_docs_runs_against_the_service(tmp_path):
    import json

    import rasterio

    example = docs_client_example()
    with service(tmp_path, api_key=KEY) as app_client:
        transport = BusyFirst(app_client._transport)  # TestClient's transport, bound to the app
        with httpx.Client(transport=transport, base_url=str(app_client.base_url),
                          headers={"X-API-Key": KEY}) as client:
            paths = example["run"](client, SCENE, tmp_path / "out", profile="fast")
            assert transport.refusals == {}  # the 429 and the 503 were met, and retried
            with pytest.raises(example["GeosegError"], match="422 .*form field 'profile'"):
                example["submit"](client, SCENE, profile="best")
    geojson, classmap = paths
    assert [p.name for p in paths] == ["buildings.geojson", "classmap.tif"]
    assert json.loads(geojson.read_text())["type"] == "FeatureCollection"
    with rasterio.open(classmap) as src:
        assert src.crs is not None and src.count == 1


def test_a_file_sent_as_a_text_part_is_told_so_without_echoing_its_bytes(tmp_path):
    # a part without a file name (curl -F file=<scene.tif, a client leaving the name out) is text
    # to FastAPI: the detail said "Expected UploadFile, received: <class 'str'>
    # (got 'II*\x00\x08...')", the GeoTIFF's first bytes
    with service(tmp_path) as client:
        for endpoint in ("/v1/jobs", "/v1/segment"):
            r = client.post(endpoint, files={"file": ("", SCENE.read_bytes(), "image/tiff")})
            detail = r.json()["detail"]
            assert r.status_code == 422 and "II*" not in detail and "UploadFile" not in detail, detail
            assert "form field 'file': a text value, not a file: send the GeoTIFF as a file part" in detail
