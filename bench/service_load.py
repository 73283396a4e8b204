"""Load benchmark of the REST service: N concurrent uploads against a server on 127.0.0.1.

Prints jobs per minute, latency of the status calls made while jobs run, upload
latency, and the peak resident memory of the server and of its worker processes.

    # start a server itself (temporary data dir), real pipeline, 2 concurrent jobs:
    .venv/bin/python bench/service_load.py --start --workers 2 --n 6 --concurrency 6
    # or against a running one (give its pid for the memory figures):
    .venv/bin/python bench/service_load.py --url http://127.0.0.1:8000 --server-pid 1234
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from geoseg.paths import data_root  # noqa: E402

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found += kids
        frontier += kids
    return found


class MemorySampler(threading.Thread):
    """Peak RSS of the server alone, of its largest worker, and of server + workers together."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak_server = self.peak_worker = self.peak_total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            server = rss_kib(self.pid)
            workers = [rss_kib(p) for p in descendants(self.pid)]
            self.peak_server = max(self.peak_server, server)
            self.peak_worker = max([self.peak_worker, *workers])
            self.peak_total = max(self.peak_total, server + sum(workers))
            self.stop.wait(self.every_s)


def start_server(workers: int, runner: str | None, pythonpath: str | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GEOSEG_SERVICE_DIR=tempfile.mkdtemp(prefix="geoseg-bench-"),
               GEOSEG_WORKERS=str(workers),
               GEOSEG_MAX_QUEUED="0")  # the run queues as many jobs as it is told to: no 429 from the cap
    env.pop("GEOSEG_API_KEY", None)
    if runner:
        env["GEOSEG_RUNNER"] = runner
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--server-pid", type=int, help="pid of the running server (memory figures)")
    ap.add_argument("--start", action="store_true", help="start a server on a free port for the run")
    ap.add_argument("--workers", type=int, default=1, help="with --start: concurrent jobs")
    ap.add_argument("--runner", help="with --start: module:function instead of the real pipeline")
    ap.add_argument("--pythonpath", help="with --start: extra import path for --runner")
    ap.add_argument("--n", type=int, default=4, help="uploads")
    ap.add_argument("--concurrency", type=int, default=4, help="uploads in flight at once")
    ap.add_argument("--scene", type=Path,
                    default=data_root() / "buildings" / "kampala" / "kampala_z19_2.tif")
    ap.add_argument("--form", action="append", default=["refine=false", "profile=fast"],
                    help="extra form field key=value (repeatable)")
    ap.add_argument("--api-key", default=os.environ.get("GEOSEG_API_KEY"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--idle", type=float, default=0.0,
                    help="seconds to wait before the first upload (a lone request after idle time)")
    args = ap.parse_args()

    server = None
    if args.start:
        server, url = start_server(args.workers, args.runner, args.pythonpath)
        pid = server.pid
    else:
        url, pid = args.url.rstrip("/"), args.server_pid
    if urlparse(url).hostname not in LOCAL_HOSTS:
        raise SystemExit("this benchmark only sends traffic to 127.0.0.1")
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    form = dict(f.split("=", 1) for f in args.form)
    payload = args.scene.read_bytes()
    sampler = MemorySampler(pid) if pid else None
    if sampler:
        sampler.start()

    submit_s: list[float] = []
    status_s: list[float] = []

    def submit(i: int) -> str:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as c:
            t = time.perf_counter()
            r = c.post("/v1/jobs", files={"file": (f"scene-{i}.tif", payload, "image/tiff")}, data=form)
            submit_s.append(time.perf_counter() - t)
            r.raise_for_status()
            return r.json()["id"]

    time.sleep(args.idle)  # e.g. the standby worker has imported and loaded the models by then
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            ids = list(pool.map(submit, range(args.n)))
        t_submitted = time.perf_counter() - t0
        final: dict[str, dict] = {}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            while len(final) < len(ids) and time.perf_counter() - t0 < args.timeout:
                for job_id in ids:
                    if job_id in final:
                        continue
                    t = time.perf_counter()
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    status_s.append(time.perf_counter() - t)
                    if job["status"] in ("succeeded", "failed"):
                        final[job_id] = job
                time.sleep(0.1)
        elapsed = time.perf_counter() - t0
    finally:
        if sampler:
            sampler.stop.set()
            sampler.join()
        if server:
            server.terminate()
            server.wait(timeout=30)

    ok = sum(1 for j in final.values() if j["status"] == "succeeded")
    print(f"scene: {args.scene.name} ({len(payload)} bytes), uploads: {args.n}, "
          f"concurrency: {args.concurrency}, form: {form}")
    print(f"succeeded: {ok}/{args.n}, failed: {sum(1 for j in final.values() if j['status'] == 'failed')}, "
          f"unfinished: {args.n - len(final)}")
    print(f"wall: {elapsed:.1f} s (uploads accepted after {t_submitted:.2f} s) -> "
          f"{ok / elapsed * 60:.1f} jobs/min")
    print(f"upload latency: p50 {pct(submit_s, .5) * 1e3:.0f} ms, p95 {pct(submit_s, .95) * 1e3:.0f} ms")
    print(f"status latency under load ({len(status_s)} calls): p50 {pct(status_s, .5) * 1e3:.1f} ms, "
          f"p95 {pct(status_s, .95) * 1e3:.1f} ms, max {max(status_s, default=0) * 1e3:.1f} ms")
    if final:
        print(f"job errors: {sorted({j['error'] for j in final.values() if j['error']})[:3]}")
    if sampler:
        print(f"peak RSS: server {sampler.peak_server / 1024:.0f} MiB, largest worker "
              f"{sampler.peak_worker / 1024:.0f} MiB, server + workers {sampler.peak_total / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
