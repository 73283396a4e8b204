"""The operator's own models in the service (``geoseg serve --models DIR``): listed, named by a
job's ``model`` field, loaded by its worker as ``geoseg predict --model`` does, refused clearly.

No training: a model folder is made by copying the shipped fast building student under a new name.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from geoseg.paths import weights_dir
from test_api_contract import SCENE, service, submit, wait
from test_api_fakes import SLEEP_ENV

NAME = "mybldg"


def own_model(models: Path, name: str = NAME, shipped: str = "buildings-u2net-fast") -> Path:
    """``models/<name>/<name>.json`` + ``.pt``, as ``geoseg train --out models/<name> --name <name>`` leaves them."""
    folder = models / name
    folder.mkdir(parents=True)
    card = json.loads((weights_dir() / f"{shipped}.json").read_text())
    shutil.copy(weights_dir() / card["weights"], folder / f"{name}.pt")
    card.update(name=name, weights=f"{name}.pt")
    (folder / f"{name}.json").write_text(json.dumps(card))
    return folder


def test_models_lists_the_servers_own_beside_the_shipped(tmp_path):
    own_model(tmp_path / "models")
    (tmp_path / "models" / NAME / "classes.json").write_text("[]")  # not a card: ignored
    with service(tmp_path, models_dir=tmp_path / "models") as client:
        listed = client.get("/v1/models").json()
    shipped = sorted(json.loads(p.read_text())["name"] for p in weights_dir().glob("*.json"))
    assert sorted(c["name"] for c in listed if c["shipped"]) == shipped
    assert [(c["name"], c["task"], c["gsd_m"]) for c in listed if not c["shipped"]] == [(NAME, "buildings", 0.3)]


def test_a_job_runs_the_named_model_in_its_worker(tmp_path):
    own_model(tmp_path / "models")
    # the real runner: the worker loads the card as `geoseg predict --model buildings=CARD` does
    settings = Settings(data_dir=tmp_path / "svc", poll_s=0.05, standby=False, models_dir=tmp_path / "models")
    with TestClient(create_app(settings)) as client:
        job = submit(client, model=f" buildings = {NAME} ", profile="fast", refine="false", outputs="buildings")
        done = wait(client, job["id"], timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["options"]["models"] == {"buildings": NAME}
        report = client.get(f"/v1/jobs/{job['id']}/report.json").json()
    assert report["models"]["buildings"]["name"] == NAME
    assert report["models"]["buildings"]["weights"] == f"{NAME}.pt"
    # named as the client named it, not by the card's path on the server
    assert report["options"]["model_dirs"] == {"buildings": NAME}
    assert str(tmp_path) not in json.dumps(report)


@pytest.mark.parametrize("model, words", [
    ("buildings=nobody", ["no model named 'nobody'", f"buildings models: buildings-u2net-fast, buildings-u2net-lite0, buildings-u2net, {NAME}"]),
    (f"landcover={NAME}", [f"'{NAME}' is a buildings model, not a landcover one", "landcover models: landcover-attresunet"]),
    (f"buildings={NAME},buildings={NAME}", ["names a task twice"]),
    ("mybldg", ["model expects TASK=NAME with TASK buildings|landcover|gcn, got 'mybldg'"]),
])
def test_a_model_the_server_cannot_run_is_refused_and_nothing_is_kept(tmp_path, model, words):
    own_model(tmp_path / "models")
    with service(tmp_path, models_dir=tmp_path / "models") as client:
        for route in ("/v1/jobs", "/v1/segment"):
            with open(SCENE, "rb") as f:
                r = client.post(route, files={"file": (SCENE.name, f, "image/tiff")}, data={"model": model})
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert "\n" not in detail and all(w in detail for w in words), detail
        assert client.get("/v1/jobs").json()["total"] == 0
        assert list((tmp_path / "svc" / "jobs").iterdir()) == []


def test_a_model_trained_on_bands_the_upload_lacks_is_refused_before_the_job_is_queued(tmp_path):
    """A model cut from ``geoseg tile --bands 4,3,2`` chips reads band 4; a 3-band upload naming it
    was accepted (202) and failed in the worker. It is a 422 now, and ``bands=`` still chooses."""
    folder = own_model(tmp_path / "models")
    card = json.loads((folder / f"{NAME}.json").read_text())
    (folder / f"{NAME}.json").write_text(json.dumps(card | {"bands": [4, 3, 2]}))
    with service(tmp_path, models_dir=tmp_path / "models") as client:
        for route in ("/v1/jobs", "/v1/segment"):
            with open(SCENE, "rb") as f:
                r = client.post(route, files={"file": (SCENE.name, f, "image/tiff")},
                                data={"model": f"buildings={NAME}"})
            assert r.status_code == 422, r.text
            assert r.json()["detail"] == (f"model '{NAME}' reads bands 4,3,2 as red, green, blue (its card), but the "
                                          f"raster has 3 band(s): send bands=R,G,B to choose others, or choose "
                                          f"another model")
        assert client.get("/v1/jobs").json()["total"] == 0
        with open(SCENE, "rb") as f:
            r = client.post("/v1/jobs", files={"file": (SCENE.name, f, "image/tiff")},
                            data={"model": f"buildings={NAME}", "bands": "3,2,1"})
        assert r.status_code == 202, r.text


def test_a_model_removed_after_the_job_was_accepted_fails_the_job_clearly(tmp_path, monkeypatch):
    folder = own_model(tmp_path / "models")
    monkeypatch.setenv(SLEEP_ENV, "1.5")  # the fake runner holds the one worker meanwhile
    with service(tmp_path, models_dir=tmp_path / "models", workers=1) as client:
        ahead = submit(client)
        job = submit(client, model=f"buildings={NAME}")
        shutil.rmtree(folder)
        failed = wait(client, job["id"])
        assert wait(client, ahead["id"])["status"] == "succeeded"
        # a new submission naming it is refused, and the listing no longer offers it
        with open(SCENE, "rb") as f:
            again = client.post("/v1/jobs", files={"file": (SCENE.name, f)}, data={"model": f"buildings={NAME}"})
        listed = [c["name"] for c in client.get("/v1/models").json()]
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"buildings model '{NAME}' is gone: its card or weights were removed")
    assert "Traceback" not in failed["error"] and str(tmp_path) not in failed["error"]
    assert again.status_code == 422 and "no longer on the server" in again.json()["detail"]
    assert NAME not in listed


@pytest.mark.parametrize("breakage, words", [
    (lambda d: (d / NAME / f"{NAME}.json").write_text('{"task": "buildings",'), ["mybldg.json", "not valid JSON"]),
    (lambda d: (d / NAME / f"{NAME}.pt").unlink(), ["weights", "mybldg.pt", "not found"]),
    (lambda d: [shutil.copy(f, d) for f in (d / NAME).iterdir()], ["two models are named 'mybldg'"]),
    (lambda d: own_model(d, "buildings-u2net", "buildings-u2net"), ["two models are named 'buildings-u2net'",
                                                                     "geoseg train --name"]),
])
def test_a_broken_models_folder_stops_the_server_naming_the_file(tmp_path, breakage, words):
    models = tmp_path / "models"
    own_model(models)
    breakage(models)
    with pytest.raises(ValueError) as caught:
        create_app(Settings(data_dir=tmp_path / "svc", models_dir=models))
    message = str(caught.value)
    assert "\n" not in message and "GEOSEG_MODELS_DIR" in message and all(w in message for w in words), message


def test_serve_takes_models_from_its_option_or_the_environment(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from checks import assert_one_line_error
    from geoseg.cli import app as cli

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: None)
    monkeypatch.setenv("GEOSEG_MODELS_DIR", "")  # restored afterwards: serve writes it
    serve = ["serve", "--data-dir", str(tmp_path / "d")]
    own_model(tmp_path / "models")
    result = CliRunner().invoke(cli, [*serve, "--models", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    assert Settings.from_env().models_dir == (tmp_path / "models").resolve()
    monkeypatch.setenv("GEOSEG_MODELS_DIR", str(tmp_path / "none"))
    result = CliRunner().invoke(cli, serve)
    assert_one_line_error(result, "serve", "--models", "none", "no such folder")
    card = tmp_path / "models" / NAME / f"{NAME}.json"  # the folder is wanted, not a card in it
    result = CliRunner().invoke(cli, [*serve, "--models", str(card)])
    assert_one_line_error(result, "serve", "--models", f"{NAME}.json", "is a file, not a folder")


def test_the_schema_declares_the_model_field(tmp_path):
    import re

    with service(tmp_path) as client:
        schema = client.get("/openapi.json").json()
    bodies = {name: body for name, body in schema["components"]["schemas"].items()
              if name.startswith(("Body_submit_job", "Body_segment"))}
    assert len(bodies) == 2
    for body in bodies.values():
        field = body["properties"]["model"]
        pattern = field["pattern"]
        for good in ("buildings=mybldg", "buildings=a, landcover=b", ""):
            assert re.search(pattern, good), good
        for bad in ("mybldg", "roads=a", "buildings="):
            assert not re.search(pattern, bad), bad
        assert "GET /v1/models" in field["description"]
    assert schema["components"]["schemas"]["ModelCard"]["properties"]["shipped"]["type"] == "boolean"


def test_the_server_checks_the_models_folder_without_loading_torch(tmp_path):
    """The card checks are ``geoseg.card``'s, and importing it must not cost the server torch."""
    import subprocess
    import sys

    own_model(tmp_path / "models")
    code = ("import sys; from api.catalog import ModelCatalog; "
            f"c = ModelCatalog.load({str(tmp_path / 'models')!r}); "
            "assert 'mybldg' in [m.name for m in c.models]; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
