"""The FastAPI application factory (``uvicorn api.app:create_app --factory``)."""
from __future__ import annotations

import fcntl
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match

from api.admission import QueueGate
from api.caching import NoStoreByDefault
from api.catalog import ModelCatalog
from api.compression import add_compression
from api.cors import add_cors
from api.errors import describe_invalid_request, exception_chain
from api.head_requests import HeadAsGet
from api.http_protocol import header_timeout_s
from api.intake import NO_SPACE, UPLOAD_CHECKS_AT_ONCE, out_of_space
from api.jobs import JobStore
from api.limits import BodySizeLimit
from api.response_headers import NoSniffing
from api.routes import health, jobs, models, segment
from api.routes.common import problems
from api.runners import Runner, check_runner_spec, runner_spec
from api.security import ApiKeyGate, require_api_key
from api.settings import Settings
from api.shutdown import CutOffAtShutdown, quiet_cut_off_requests
from api.validate import UploadRejected
from api.worker import RESULT_DIR, Supervisor, discard_scratch
from geoseg import __version__

log = logging.getLogger("geoseg.api")

_MULTIPART_SLACK = 1024 * 1024  # form boundaries and the small option fields

def _lock_data_dir(settings: Settings) -> IO[str]:
    """One server per data dir: two supervisors would run the same jobs twice."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.data_dir / "server.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise RuntimeError(f"another geoseg server is using {settings.data_dir}") from exc
    return handle


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path, HEAD wherever GET (api.head_requests
    answers it). Starlette's 405 names only those of the first route matching the path
    (``Allow: GET`` on a job, which also takes DELETE)."""
    path, root_path = request.scope["path"], request.scope.get("root_path", "")
    taken = {method for method in _METHODS if any(
        route.matches({"type": "http", "path": path, "root_path": root_path, "method": method})[0] == Match.FULL
        for route in request.app.router.routes)}
    if "GET" in taken:
        taken.add("HEAD")
    return [method for method in _METHODS if method in taken]


#: how a client sends an upload the multipart parser reads
_MULTIPART_HOW = ("send the GeoTIFF as a form part named 'file' (curl -F file=@scene.tif; httpx/requests "
                  "files={'file': ('scene.tif', f)}, which set the boundary), each part's headers under 4 KiB "
                  "(a file name of at most a few hundred characters), the options as form fields of their own")


def unreadable_multipart(exc: StarletteHTTPException) -> str:
    """The 400 of a body Starlette's multipart parser refused: its reasons, and how to send one it reads.
    Why: Starlette answered its bare message ("Invalid multipart data." for a part header past
    python-multipart's 4 KiB, "Missing boundary in multipart."), which said nothing of what to send."""
    reasons = [str(exc.detail)]
    for cause in exception_chain(exc)[1:]:
        reason = str(cause).strip()
        # not a KeyError's key, nor a quoted part header
        if reason and not isinstance(cause, KeyError) and len(reason) <= 200 and reason not in reasons:
            reasons.append(reason)
    return f"the multipart body could not be read ({'; '.join(reasons)}): {_MULTIPART_HOW}"


def _model_catalog(settings: Settings) -> ModelCatalog:
    """The models jobs may name, checked before the server starts: a ``ValueError`` naming the bad
    file stops ``geoseg serve`` with one line (a model that is not what it should be is the
    operator's to fix, not something to discover from a client's failed job)."""
    try:
        return ModelCatalog.load(settings.models_dir)
    except ValueError as exc:
        raise ValueError(f"models folder {settings.models_dir} (--models, GEOSEG_MODELS_DIR): {exc}") from None


def declare_closed_forms(app: FastAPI) -> None:
    """Mark each form body of the OpenAPI schema ``additionalProperties: false``: a form field a
    route does not declare is refused with a 422 (``api.intake.check_form_fields``), and without
    it the schema said any extra field was welcome (generated clients offer to send them)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # cached by FastAPI in app.openapi_schema: edited once, in place
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    content = operation.get("requestBody", {}).get("content", {})
                    ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
                    if ref.startswith("#/components/schemas/"):
                        schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["additionalProperties"] = False
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _remove_unrecorded_uploads(settings: Settings, store: JobStore) -> None:
    """Remove the job folders a crash left between moving an upload in and writing its row (never
    answered 202), each with a log line. A folder holding results but no row is kept, with a warning:
    all of them were removed without a word, so a job table restored from an older backup, or copied
    while the server ran (its write-ahead log left behind), wiped the results of every newer job."""
    for folder in settings.jobs_dir.iterdir():
        if store.get(folder.name, include_deleted=True) is not None:
            continue
        if (folder / RESULT_DIR).exists():
            log.warning("job folder %s has results but no row in %s (a job table restored from an older "
                        "backup?): kept; remove it by hand if it is not wanted", folder.name, settings.db_path.name)
            continue
        log.info("removing job folder %s: an upload a crash cut off before its job was recorded", folder.name)
        shutil.rmtree(folder, ignore_errors=True)


def create_app(settings: Settings | None = None, runner: Runner | str | None = None) -> FastAPI:
    """Build the service. ``runner`` (default: the real pipeline) runs one job in a worker process."""
    settings = settings or Settings.from_env()
    spec = runner_spec(runner) if runner is not None else settings.runner
    check_runner_spec(spec)
    catalog = _model_catalog(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lock = _lock_data_dir(settings)
        store = JobStore(settings.db_path)
        store.keep_open()  # reads keep working on a full disk
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        for leftover in settings.uploads_dir.iterdir():  # uploads cut off by a crash: never 202'd
            leftover.unlink(missing_ok=True)
        _remove_unrecorded_uploads(settings, store)
        requeued, failed = store.recover_interrupted(settings.max_attempts)
        for job_id in [*requeued, *failed]:  # their processes died with the previous server
            discard_scratch(settings, job_id)
        if requeued or failed:
            log.warning("recovered interrupted jobs: %d requeued, %d failed", len(requeued), len(failed))
        supervisor = Supervisor(settings, store, spec, catalog)
        app.state.store, app.state.supervisor = store, supervisor
        app.state.upload_checks = anyio.CapacityLimiter(UPLOAD_CHECKS_AT_ONCE)
        supervisor.start()
        if not settings.keyed:
            log.warning("GEOSEG_API_KEY is not set: the service is OPEN, /v1 needs no key")
        else:
            log.info("API key required on /v1 (header X-API-Key)%s", f"; {len(settings.client_keys)} client key(s), "
                     "each seeing its own jobs" if settings.client_keys else "")
        log.info("geoseg service: data dir %s, %d worker(s), runner %s", settings.data_dir,
                 settings.workers, spec)
        if settings.models_dir is not None:
            own = [m.name for m in catalog.models if not m.shipped]
            log.info("%d model(s) of its own from %s: %s", len(own), settings.models_dir, ", ".join(own) or "none")
        try:
            yield
        finally:
            supervisor.stop()
            store.close()
            lock.close()

    app = FastAPI(
        title="geoseg",
        version=__version__,
        summary="Building footprints and land-cover class maps from GeoTIFFs",
        description="Submit a GeoTIFF to `/v1/jobs`, poll the job, fetch its GeoJSON, GeoPackage "
                    "and COG. Small scenes: `/v1/segment`.",
        lifespan=lifespan,
        # operationIds are what a generated client names its functions and body models after:
        # `submit_job`, not FastAPI's default `submit_job_v1_jobs_post`
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.catalog = catalog

    @app.exception_handler(UploadRejected)
    async def _rejected(_: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default puts its list of errors in `detail`, where every other refusal (and
        # the same kind of mistake caught by the app, e.g. `bands`) has a string: one shape for
        # clients, the list kept under `errors` for those that want the fields. Not the `input`
        # FastAPI echoes: the client's own value, or an UploadFile's internals for a file field
        errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = describe_invalid_request(exc.errors(), request.headers.get("content-type"))
        return JSONResponse({"detail": detail, "errors": errors},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers any failure while parsing a form "400 There was an error parsing the
        # body", a full disk included (api.upload_parts writes each file part into the data dir
        # as it is received): not the client's fault
        if exc.status_code == 400 and any(out_of_space(e) for e in exception_chain(exc)[1:]):
            log.error("no disk space to receive an upload: %s", exc.__cause__)
            return JSONResponse({"detail": NO_SPACE}, status_code=507)
        if exc.status_code == 400 and any(isinstance(e, MultiPartException) for e in exception_chain(exc)[1:]):
            return JSONResponse({"detail": unreadable_multipart(exc)}, status_code=400)
        if exc.status_code == 405:
            allowed = ", ".join(allowed_methods(request))
            return JSONResponse({"detail": f"method {request.method} is not allowed here; this URL takes {allowed}"},
                                status_code=405, headers={"Allow": allowed})
        if exc.status_code == 404 and exc.detail == "Not Found":  # the router's: no route has this path
            root = request.scope.get("root_path", "").rstrip("/")
            # a proxy that does not strip its prefix (Traefik's default) sends /geoseg/v1/...: the path is
            # then the root path twice, and the bare 404 left the operator to guess
            doubled = bool(root) and request.url.path.startswith(f"{root}{root}/")
            # the URL as the client sent it (the server's own view adds the root path once more)
            sent = request.url.path[len(root):] if doubled else request.url.path
            unstripped = (f"; it reached the server with the root path {root} still on it: the reverse proxy must "
                          f"strip {root} before it forwards (nginx: proxy_pass with a trailing '/'; Traefik: a "
                          f"StripPrefix middleware)" if doubled else "")
            return JSONResponse({"detail": f"no such URL: {sent} is none of the service's "
                                           f"(they are listed at {root}/docs){unstripped}"}, status_code=404)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's own 500 is text/plain "Internal Server Error": a client reading `detail`
        # from every error answer would fail on it. Starlette still re-raises (uvicorn logs it).
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__}): a bug in the "
                                       "service, its log has the traceback; please report it"},
                            status_code=500)

    @app.exception_handler(sqlite3.OperationalError)
    async def _table_unavailable(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # a full disk, a locked or unreadable jobs.sqlite: the client may retry, unlike a 500
        log.error("job table unavailable: %s", exc)
        return JSONResponse({"detail": f"the job table is unavailable ({exc}); try again later"},
                            status_code=503, headers={"Retry-After": "10"})

    # Only a keyed service declares (and enforces) the X-API-Key scheme and its 401, so the schema
    # is honest: an open one never answers 401.
    header_timeout_s()  # a bad GEOSEG_HEADER_TIMEOUT_S stops the server at start-up, not each connection
    guarded = [Depends(require_api_key)] if settings.keyed else []
    unauthorized = problems(401) if settings.keyed else {}
    app.include_router(health.router)
    app.include_router(jobs.router, dependencies=guarded, responses=unauthorized)
    app.include_router(segment.router, dependencies=guarded, responses=unauthorized)
    app.include_router(models.router, dependencies=guarded, responses=unauthorized)
    declare_closed_forms(app)
    add_compression(app)
    app.add_middleware(HeadAsGet)  # outside the gzip layer: a HEAD's headers are decided as its GET's
    # inside the key gate: only a client with the key learns that the queue is full
    app.add_middleware(QueueGate, state=app.state, max_queued=settings.max_queued,
                       priorities={"/v1/jobs": 0, "/v1/segment": segment.SYNC_PRIORITY}, workers=settings.workers)
    if settings.keyed:
        app.add_middleware(ApiKeyGate, settings=settings)  # inside CORS: preflights pass
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _MULTIPART_SLACK,
                       upload_limit=settings.max_upload_bytes, idle_s=settings.upload_idle_s or None)
    app.add_middleware(NoStoreByDefault)  # the gates' own refusals get it too
    quiet_cut_off_requests()  # uvicorn's traceback of each request cut off at a stop: one line
    app.add_middleware(CutOffAtShutdown)  # outside the routes and gates: whatever layer a stopping server cancels
    if settings.cors_origins:
        # a web page reads a refusal's detail only with CORS headers on it, the body cap's 413 and 408
        # and the 503 of a request cut off at shutdown included (they had none: the browser said only
        # "Failed to fetch")
        add_cors(app, list(settings.cors_origins))
    app.add_middleware(NoSniffing)  # outermost: preflights and the shutdown's 503 too
    return app
