"""Clients with keys of their own (``GEOSEG_API_KEYS_FILE``): each sees, reads and deletes only the jobs
its key submitted; the operator's key (``GEOSEG_API_KEY``) sees them all. With one key for every
partner, any key holder listed, read and deleted every job."""
from __future__ import annotations

import os

from pathlib import Path

import pytest
from test_api_contract import service, submit, wait
from test_api_fakes import classes_runner

from api.client_keys import parse_client_keys, read_client_keys
from api.settings import Settings

ALICE, BOB, OPERATOR = "alice-key-0123456789abcd", "bob-key-0123456789abcdef", "operator-key-0123456"
KEYS = (("alice", ALICE), ("bob", BOB))


def as_(_client, key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_a_client_sees_only_its_own_jobs_and_the_operator_sees_all(tmp_path: Path, caplog):
    caplog.set_level("INFO", logger="geoseg.api")
    with service(tmp_path, runner=classes_runner, api_key=OPERATOR, client_keys=KEYS) as client:
        client.headers["X-API-Key"] = ALICE
        alices = wait(client, submit(client, outputs="classmap")["id"])
        client.headers["X-API-Key"] = BOB
        bobs = wait(client, submit(client, outputs="classmap")["id"])
        del client.headers["X-API-Key"]
        assert alices["status"] == bobs["status"] == "succeeded"
        assert f"job {alices['id']} queued for client alice" in caplog.text  # for the operator: whose it is

        def ids(key: str) -> list[str]:
            page = client.get("/v1/jobs", headers=as_(client, key)).json()
            assert page["total"] == len(page["items"])
            return sorted(j["id"] for j in page["items"])

        assert ids(ALICE) == [alices["id"]] and ids(BOB) == [bobs["id"]]
        assert ids(OPERATOR) == sorted([alices["id"], bobs["id"]])
        assert client.get("/v1/jobs?status=succeeded", headers=as_(client, BOB)).json()["total"] == 1

        # Bob learns nothing of Alice's job: the 404 of a job that is not there, on every route
        links = alices["links"]
        for url in (links["self"], links["classmap.tif"], links["report.json"], links["tilejson"],
                    links["tiles"].split("?")[0].format(z=0, x=0, y=0)):
            r = client.get(url, headers=as_(client, BOB))
            assert r.status_code == 404 and "never existed or was deleted" in r.json()["detail"], (url, r.text)
        assert client.delete(links["self"], headers=as_(client, BOB)).status_code == 404
        assert client.get(links["self"], headers=as_(client, ALICE)).json()["status"] == "succeeded"
        assert client.get(links["classmap.tif"], headers=as_(client, OPERATOR)).status_code == 200
        assert client.get("/v1/jobs", headers={"X-API-Key": "carol-key-0123456789abcd"}).status_code == 401

        # signed tile URLs: Alice's own signature opens her tiles; Bob's key signs nothing of hers
        template = client.get(links["tilejson"], headers=as_(client, ALICE)).json()["tiles"][0]
        assert client.get(template.format(z=0, x=0, y=0)).status_code == 200
        bobs_template = client.get(bobs["links"]["tilejson"], headers=as_(client, BOB)).json()["tiles"][0]
        bobs_sig = bobs_template.split("&sig=")[1]
        from api.security import tile_signature
        forged = tile_signature(BOB, alices["id"])
        assert forged != bobs_sig
        alices_tile = template.split("&sig=")[0].format(z=0, x=0, y=0)
        assert client.get(f"{alices_tile}&sig={forged}").status_code == 401  # only her key and the operator's are tried

        assert client.delete(links["self"], headers=as_(client, ALICE)).status_code == 204
        assert ids(OPERATOR) == [bobs["id"]]


def test_an_idempotency_key_is_the_clients_own(tmp_path: Path):
    """The same Idempotency-Key from two clients made one job, the second client's 202 naming the
    first's job (its links, and the job's own key being the first's)."""
    with service(tmp_path, runner=classes_runner, client_keys=KEYS) as client:
        client.headers["Idempotency-Key"] = "nightly-2026-11-29"
        client.headers["X-API-Key"] = ALICE
        first = submit(client, outputs="classmap")
        again = submit(client, outputs="classmap")
        client.headers["X-API-Key"] = BOB
        bobs = submit(client, outputs="classmap")
        assert again["id"] == first["id"] and bobs["id"] != first["id"]
        del client.headers["Idempotency-Key"]
        assert client.get(first["links"]["self"]).status_code == 404
        assert client.get(bobs["links"]["self"]).status_code == 200


def test_a_keys_file_is_checked_at_start_up_and_never_echoes_a_key(tmp_path: Path, caplog, monkeypatch):
    good = tmp_path / "keys"
    good.write_text("# partners\nalice  alice-key-0123456789abcd\n\nbob\tbob-key-0123456789abcdef\n")
    assert read_client_keys(good) == KEYS
    bad = {
        "alice alice-key-0123456789abcd extra\n": "line 1: expected 'NAME KEY' (two words), found 3",
        "alice short\n": "line 1: the key (the second word) must be at least 24",
        "alice 0123456789abcdef0123\n": "line 1: the key (the second word) must be at least 24",
        "al/ice alice-key-0123456789abcd\n": "line 1: the first word is no client name",
        # written key first: the key was echoed, or taken for a name (and logged with every job)
        "HhVGvcew1YV7ZdiXMov_wTyGe2-ti8Cs814DVavJbIM partner-c-organisation\n": "line 1: the first word is no "
                                                                              "client name",
        "0123456789abcdefghij0123456789abcdefghij partnerC\n": "line 1: the first word is no client name",
        "0123456789abcdef0123456789abcdef partner-c-organisation\n": "line 1: the first word is no client name",
        "alice alice-key-0123456789abcd\nalice bob-key-0123456789abcdef\n": "line 2: client 'alice' is named twice",
        "alice alice-key-0123456789abcd\nbob alice-key-0123456789abcd\n": "line 2: the key of 'bob' is another client's",
    }
    for text, words in bad.items():
        with pytest.raises(ValueError) as err:
            parse_client_keys(text)
        assert words in str(err.value) and "0123456789" not in str(err.value), str(err.value)
        assert "HhVG" not in str(err.value) and "partner" not in str(err.value)
    # PowerShell 5's byte-order mark, a comment after the key
    assert parse_client_keys("\ufeffalice alice-key-0123456789abcd  # main office\nbob bob-key-0123456789abcdef\n") == KEYS
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    with pytest.raises(ValueError, match="lists no client"):
        read_client_keys(empty)
    with pytest.raises(ValueError, match="cannot be read"):
        read_client_keys(tmp_path / "missing")
    good.chmod(0o644)
    with caplog.at_level("WARNING", logger="geoseg.api"):
        read_client_keys(good)
    assert "can be read by other users (mode 644): chmod 600 it" in caplog.text
    # group-readable by a group of this process's own (a Kubernetes Secret mounted 0440 with the pod's fsGroup,
    # which cannot be chmod'ed): no warning; by another group, the warning
    good.chmod(0o640)
    caplog.clear()
    with caplog.at_level("WARNING", logger="geoseg.api"):
        read_client_keys(good)
    assert "can be read by other users" not in caplog.text
    other_group = next((g for g in range(1, 70000) if g not in {os.getgid(), *os.getgroups()}), None)
    if os.geteuid() == 0 and other_group is not None:  # only root may give a file to another group
        os.chown(good, -1, other_group)
        with caplog.at_level("WARNING", logger="geoseg.api"):
            read_client_keys(good)
        assert "can be read by other users (mode 640)" in caplog.text
    monkeypatch.setenv("GEOSEG_API_KEYS_FILE", "")  # a compose file's unset ${KEYS_FILE}: not an open server
    with pytest.raises(ValueError, match="GEOSEG_API_KEYS_FILE is set but empty"):
        Settings.from_env()
    with pytest.raises(ValueError, match="the operator's key opens every job and must be its own"):
        Settings(api_key=ALICE, client_keys=KEYS)
    # settings made in code: an empty key installed the gate and let a request without the header in,
    # and two clients of one key gave a job the wrong owner
    with pytest.raises(ValueError, match="is empty"):
        Settings(api_key="")
    with pytest.raises(ValueError, match="the key of 'bob' is another client's too"):
        Settings(client_keys=(("alice", ALICE), ("bob", ALICE)))
    assert ALICE not in repr(Settings(client_keys=KEYS)) and OPERATOR not in repr(Settings(api_key=OPERATOR))


def test_geoseg_serve_stops_on_a_bad_keys_file_in_one_line(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from geoseg.cli import app as cli

    bad = tmp_path / "keys"
    bad.write_text("alice short\n")
    monkeypatch.setenv("GEOSEG_API_KEYS_FILE", str(bad))
    import uvicorn

    from api.app import create_app

    # uvicorn starts the app factory: a bad file fails create_app's Settings.from_env there
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: create_app())
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "svc")])
    assert result.exit_code == 1
    assert "bad service configuration: GEOSEG_API_KEYS_FILE" in result.output and "line 1" in result.output
    assert "Traceback" not in result.output


def test_another_clients_expired_job_is_not_said_to_have_existed(tmp_path: Path):
    """The 404 of a job retention removed says it expired, and when: to any key, another client's
    included, which so learnt that the job had existed."""
    import time

    with service(tmp_path, runner=classes_runner, api_key=OPERATOR, client_keys=KEYS) as client:
        client.headers["X-API-Key"] = ALICE
        job = wait(client, submit(client, outputs="classmap")["id"])
        assert client.app.state.store.expire_ended(time.time() + 1, 0.01, 10) == [job["id"]]
        own = client.get(job["links"]["self"])
        bobs = client.get(job["links"]["self"], headers={"X-API-Key": BOB})
        operators = client.get(job["links"]["self"], headers={"X-API-Key": OPERATOR})
    assert own.status_code == bobs.status_code == operators.status_code == 404
    assert "expired" in own.json()["detail"] and "expired" in operators.json()["detail"]
    assert bobs.json()["detail"] == f"no job {job['id']}: it never existed or was deleted"


def test_a_removed_clients_jobs_are_the_operators_and_their_tiles_still_draw(tmp_path: Path):
    """Removed from the file, a client's jobs stay listed to the operator, but their tile URLs lost
    their signature: the operator's map drew none of their tiles (401)."""
    with service(tmp_path, runner=classes_runner, api_key=OPERATOR, client_keys=KEYS) as client:
        client.headers["X-API-Key"] = ALICE
        job = wait(client, submit(client, outputs="classmap")["id"])
        assert job["client"] == "alice" and job["status"] == "succeeded"
    with service(tmp_path, runner=classes_runner, api_key=OPERATOR, client_keys=KEYS[1:]) as client:
        listed = client.get("/v1/jobs", headers={"X-API-Key": OPERATOR}).json()["items"]
        assert [(j["id"], j["client"]) for j in listed] == [(job["id"], "alice")]
        template = client.get(job["links"]["tilejson"], headers={"X-API-Key": OPERATOR}).json()["tiles"][0]
        assert "&sig=" in template and client.get(template.format(z=0, x=0, y=0)).status_code == 200
        assert client.get(job["links"]["self"], headers={"X-API-Key": ALICE}).status_code == 401


def test_the_gate_reads_the_job_table_only_for_a_signature_and_a_locked_one_is_no_500(tmp_path: Path, monkeypatch):
    """The gate looks up whose a signed tile's job is. It did so for every tile URL, signed or not, and a
    locked table (outside the routes' 503 for it) answered an anonymous request 500 with a traceback."""
    import sqlite3
    import sys

    with service(tmp_path, runner=classes_runner, api_key=OPERATOR, client_keys=KEYS) as client:
        client.headers["X-API-Key"] = ALICE
        job = wait(client, submit(client, outputs="classmap")["id"])
        template = client.get(job["links"]["tilejson"]).json()["tiles"][0]
        del client.headers["X-API-Key"]
        reads = []

        def locked(job_id, include_deleted=False):
            if sys._getframe(1).f_code.co_filename.endswith("security.py"):  # the gate's (the supervisor reads too)
                reads.append(job_id)
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(client.app.state.store, "get", locked)
        unsigned = template.split("?")[0].format(z=0, x=0, y=0)
        assert client.get(unsigned).status_code == 401 and reads == []
        assert client.get(template.format(z=0, x=0, y=0)).status_code == 401 and reads == [job["id"]]
    with pytest.raises(ValueError, match="must start with a letter or digit"):  # read as a comment: no client
        Settings(client_keys=(("#team", ALICE),))
