"""`geoseg serve`: start the REST service (FastAPI + uvicorn) on a data dir.

Options become ``GEOSEG_*`` environment variables and uvicorn imports the app
factory by name, so ``geoseg`` never imports ``api`` (imports flow api -> geoseg)
and worker processes see the same configuration. Each option also reads its
variable (typer ``envvar``): an option given on the command line wins, else the
operator's environment, else the default, so a deployment configured through the
environment (the Docker image) is not silently reset to the defaults.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from geoseg.commands.usage import UsageError

LOG_LEVELS = ("debug", "info", "warning", "error")
#: seconds a stopping server waits for the requests in flight before cutting them off (they get a
#: 503 to retry). Then the supervisor gives the running jobs back to the queue, their attempt not
#: counted; that must happen before an orchestrator's SIGKILL: ``docker stop`` sends it 10 s after
#: SIGTERM (Kubernetes 30 s). At 10 s here the SIGKILL came first whenever a request was in flight,
#: and each running job counted an interrupted attempt (GEOSEG_MAX_ATTEMPTS of them failed it)
GRACEFUL_SHUTDOWN_S = 5


def _fail(message: str) -> None:
    """One line for the user, exit 1 (uvicorn and logging would print a traceback)."""
    typer.echo(f"geoseg serve: error: {message}", err=True)
    raise typer.Exit(1)


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (address in use, not an address of this machine), as
    uvicorn binds it (SO_REUSEADDR), or None. A check before the start-up: the moment between it and
    uvicorn's own bind is left to uvicorn."""
    import socket

    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn picks it (Config.bind_socket)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            return f"no such host ({exc.strerror})"
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _held_by_another_server(data_dir: Path) -> bool:
    """Whether a running server holds ``data_dir`` (``api.app`` flocks ``DATA_DIR/server.lock`` for
    its lifetime). Asked here because the app's own refusal comes from its start-up, where uvicorn
    prints it as a 40-line traceback."""
    try:
        handle = open(data_dir / "server.lock", "a")
    except OSError:
        return False  # the app will say what is wrong with the folder
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 inside containers.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="GEOSEG_SERVICE_DIR",
                                          help="Job table and result files.")] = Path("geoseg-data"),
    workers: Annotated[int, typer.Option(min=1, envvar="GEOSEG_WORKERS",
                                         help="Jobs running at the same time (one process each).")] = 1,
    max_upload_mb: Annotated[int, typer.Option(min=1, envvar="GEOSEG_MAX_UPLOAD_MB",
                                               help="Largest accepted upload, MiB.")] = 2048,
    max_pixels: Annotated[int, typer.Option(min=1, envvar="GEOSEG_MAX_PIXELS",
                                            help="Largest accepted raster (width x height).")] = 1_000_000_000,
    sync_max_pixels: Annotated[int, typer.Option(min=1, envvar="GEOSEG_SYNC_MAX_PIXELS",
                                                 help="Pixel limit of POST /v1/segment.")] = 4_000_000,
    retention_hours: Annotated[float, typer.Option(
        min=0, envvar="GEOSEG_RETENTION_HOURS",
        help="Remove a job and its files this many hours after it ended (succeeded or failed); "
             "0 keeps jobs until they are deleted.")] = 0.0,
    max_queued: Annotated[int, typer.Option(
        min=0, envvar="GEOSEG_MAX_QUEUED",
        help="Most jobs waiting to run; a submission beyond it gets 429 and Retry-After. 0: no limit.")] = 100,
    models: Annotated[Path | None, typer.Option(
        "--models", envvar="GEOSEG_MODELS_DIR",
        help="A folder of your own models (geoseg train's NAME.json cards beside their weights, directly "
             "in it or one sub-folder down): listed by GET /v1/models, named by a job's form field "
             "model=TASK=NAME. Checked at start-up: a broken card, or two models of one name, stops the "
             "server. Default: the shipped models only.")] = None,
    root_path: Annotated[str, typer.Option(
        "--root-path", envvar="GEOSEG_ROOT_PATH",
        help="The path a reverse proxy serves the API under, the proxy stripping it (e.g. /geoseg): the "
             "job links, Location headers and /docs then carry it. Default: served at the root.")] = "",
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve the REST API (jobs, synchronous segmentation, model cards; OpenAPI at /docs).

    Set GEOSEG_API_KEY to require the header X-API-Key on every /v1 route.

    GEOSEG_API_KEYS_FILE ('NAME KEY' lines) gives each client a key of its own, seeing only its own jobs.

    Other settings are environment variables (GEOSEG_CORS_ORIGINS, GEOSEG_MAX_SIDE, timeouts): docs/service.md.
    """
    import uvicorn
    from uvicorn.importer import import_from_string

    if log_level.lower() not in LOG_LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    root_path = root_path.strip().rstrip("/")
    if root_path and not root_path.startswith("/"):
        raise UsageError(f"--root-path (GEOSEG_ROOT_PATH) must be a path starting with '/', e.g. /geoseg "
                         f"(got {root_path!r})")
    if data_dir.exists() and not data_dir.is_dir():
        _fail(f"--data-dir {data_dir} is a file, not a folder")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot use --data-dir {data_dir} as a folder: {exc.strerror or exc}")
    if not os.access(data_dir, os.W_OK | os.X_OK):  # the app's start-up said so in a 38-line traceback
        _fail(f"--data-dir {data_dir} cannot be written by this user (uid {os.getuid()}): a read-only mount, or a "
              f"folder owned by another user (a host folder mounted into a container: chown it to uid {os.getuid()})")
    if _held_by_another_server(data_dir):
        _fail(f"another geoseg server is using --data-dir {data_dir}; stop it or give another folder")
    busy = _port_taken(host, port)
    if busy:  # uvicorn ran the app's start-up, then printed its own ERROR line and exited 3
        advice = ("stop what uses it (another geoseg serve?) or give another --port" if "in use" in busy
                  else "give a --host that is an address of this machine (0.0.0.0: every one)")
        _fail(f"cannot listen on {host}:{port}: {busy}; {advice}")
    if models is not None and not models.is_dir():
        what = "is a file, not a folder" if models.exists() else "no such folder"
        _fail(f"--models {models} (GEOSEG_MODELS_DIR): {what}; give the folder of the models jobs may name "
              f"(their cards and weights, as geoseg train writes them)")
    os.environ.update({
        "GEOSEG_SERVICE_DIR": str(data_dir.resolve()),
        "GEOSEG_WORKERS": str(workers),
        "GEOSEG_MAX_UPLOAD_MB": str(max_upload_mb),
        "GEOSEG_MAX_PIXELS": str(max_pixels),
        "GEOSEG_SYNC_MAX_PIXELS": str(sync_max_pixels),
        "GEOSEG_RETENTION_HOURS": repr(retention_hours),
        "GEOSEG_MAX_QUEUED": str(max_queued),
    })
    if models is not None:  # absolute, as --data-dir: the log and errors name it wherever the server runs
        os.environ["GEOSEG_MODELS_DIR"] = str(models.resolve())
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # the server's root path (FastAPI's own root_path is deprecated): requests' root_path, from
        # which the app writes its links, Location headers and OpenAPI servers
        # the protocol by its import string, as the app (geoseg imports nothing of api): a request's headers
        # have a deadline (GEOSEG_HEADER_TIMEOUT_S), which uvicorn's own protocol has not
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level=log_level.lower(),
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, root_path=root_path,
                    http=import_from_string("api.http_protocol:HeaderDeadlineH11"))
    except ValueError as exc:
        # the app factory reads the other GEOSEG_* variables (GEOSEG_STALE_AFTER_S=abc, ...): a bad
        # one came out as a 70-line traceback; requests never raise out of uvicorn.run
        _fail(f"bad service configuration: {exc}")
