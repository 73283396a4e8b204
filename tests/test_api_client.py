"""The service as a client developer meets it: one error shape, an OpenAPI document that says
what each route answers, and the Python client example of docs/service.md, run for real."""
from __future__ import annotations

import uuid

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
