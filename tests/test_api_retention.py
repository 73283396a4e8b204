"""A server run for weeks: downloads survive the removal of their job, finished jobs expire."""
from __future__ import annotations

import os
import shutil

from starlette.responses import FileResponse

from test_api_contract import service, submit, wait


def test_a_download_under_way_survives_the_removal_of_its_job(tmp_path, monkeypatch):
    # the job's files removed (DELETE, or retention, by the supervisor's tick) after the route
    # checked the job but before starlette opened the file: it answered 500 ("File at path ...
    # does not exist"), or, once its headers were out, a body cut short of its Content-Length
    with service(tmp_path) as client:
        job = wait(client, submit(client)["id"])
        url = job["links"]["classmap.tif"]
        whole = client.get(url).content
        folder = tmp_path / "svc" / "jobs" / job["id"]
        shutil.copytree(folder, tmp_path / "kept")
        send_file = FileResponse.__call__

        async def removed_then_sent(self, scope, receive, send):
            shutil.rmtree(folder, ignore_errors=True)
            return await send_file(self, scope, receive, send)

        monkeypatch.setattr(FileResponse, "__call__", removed_then_sent)
        fds = len(os.listdir("/proc/self/fd"))
        for headers, status, body in (({}, 200, whole), ({"Range": "bytes=4-99"}, 206, whole[4:100])):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(tmp_path / "kept", folder)
            r = client.get(url, headers=headers)
            assert (r.status_code, r.content) == (status, body)
        assert client.head(job["links"]["report.json"]).status_code == 404  # gone before the route: 404
        assert len(os.listdir("/proc/self/fd")) <= fds  # each response closed the file it held
