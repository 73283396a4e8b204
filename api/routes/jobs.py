"""``/v1/jobs``: submit, poll, list, fetch results, delete."""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID

from fastapi import (
    APIRouter,
    File,
    Form,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from rasterio.errors import RasterioIOError
from starlette.concurrency import run_in_threadpool

from api.caching import result_cache_headers
from api.downloads import (
    HeldFileResponse,
    current_copy,
    not_modified,
    precondition_failed,
    precondition_failed_response,
)
from api.intake import accept_upload, parse_options
from api.jobs import STATUSES, Job, JobStore, KeyTaken
from api.pacing import poll_headers
from api.routes.common import (
    ACCEPT_RANGES_HEADER,
    CONTENT_RANGE_HEADER,
    LOCATION_HEADER,
    OUTPUTS_PATTERN,
    POLL_AFTER_HEADER,
    RESULT_CACHE_CONTROL_HEADER,
    RESULT_SCHEMAS,
    VALIDATOR_HEADERS,
    AllowCoarse,
    Bands,
    MaskPart,
    Model,
    Profile,
    Refine,
    Regularize,
    accepted_answer,
    binary_part,
    check_form,
    check_query,
    model_options,
    models_bands,
    models_cards,
    problems,
    root_path_of,
    settings_of,
    store_of,
    supervisor_of,
)
from api.schemas import (
    RESULT_FILES,
    JobAccepted,
    JobPage,
    JobStatus,
    Problem,
    TileJSON,
    asked_for,
    job_status,
)
from api.security import TILE_SIGNATURE_PARAM, Caller, caller_of
from api.tile_urls import (
    TILE_VERSION_PARAM,
    tile_cache_control,
    tile_etag,
    tile_template,
)
from api.upload_parts import UploadsDirRoute
from api.validate import display_name
from api.worker import RESULT_DIR, job_dir
from geoseg import __version__
from tiles.xyz import MAX_ZOOM, check_tile, empty_tile_png, render_xyz_tile, tileset_of

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UploadsDirRoute)  # uploads: api.upload_parts

# Any name is routed, and one other than the four answers 404, not 422: GDAL (QGIS, gdalinfo, pyogrio)
# opening a result by URL probes its sidecars (classmap.tif.aux.xml, .msk, buildings.gpkg.aux, ...)
# and takes 404 as "absent", but warns "HTTP response code ...: 422" for each other answer.
ResultName = Annotated[str, PathParam(max_length=200, description="One of the job's result files.",
                                      json_schema_extra={"enum": list(RESULT_FILES)})]

log = logging.getLogger("geoseg.api")


_BINARY = {"type": "string", "format": "binary"}


def job_gone(store: JobStore, job_id: UUID, client: str | None = None) -> HTTPException:
    """The 404 of a job not in the table: it says so when retention removed it (a ``client``'s own only:
    another client learns nothing of a job, gone or not)."""
    expiry = store.expiry(str(job_id), client)
    if expiry is not None:
        expired_at, hours = expiry
        when = datetime.fromtimestamp(expired_at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return HTTPException(404, f"job {job_id} expired: the server removes jobs and their files "
                                  f"{hours:g} h after they end (GEOSEG_RETENTION_HOURS); removed at {when}")
    return _no_job(job_id)


def _no_job(job_id: UUID) -> HTTPException:
    return HTTPException(404, f"no job {job_id}: it never existed or was deleted")


def _get_job(request: Request, job_id: UUID) -> Job:
    """The job, if the caller may see it; else the 404 of a job that is not there (another client's
    job is not said to exist)."""
    store, caller = store_of(request), caller_of(request)
    job = store.get(str(job_id))
    if job is None:
        raise job_gone(store, job_id, caller.client)
    if not caller.sees(job):
        store.expiry(str(job_id), caller.client)  # the query a job gone costs: its 404 is no faster to tell it exists
        raise _no_job(job_id)
    return job


def scoped_idempotency_key(caller: Caller, key: str) -> str:
    """The key as the table stores it: a client's own keys cannot name another client's jobs (a space,
    which a header's key cannot hold, separates the client's name)."""
    return key if caller.client is None else f"{caller.client} {key}"


@router.post("", status_code=202, response_model=JobAccepted,
             responses={202: {"description": "Accepted: poll the job at `Location` (its `links.self`)",
                              "headers": {"Location": LOCATION_HEADER, "Retry-After": POLL_AFTER_HEADER}},
                        **problems(400, 408, 413, 415, 422, 429, 503, 507),
                        409: {"model": Problem, "description": "The job the `Idempotency-Key` named was deleted "
                                                               "while this submission was stored: submit again"}})
async def submit_job(
    request: Request,
    file: Annotated[UploadFile, File(description="A georeferenced GeoTIFF (RGB).",
                                     json_schema_extra=binary_part)],
    refine: Refine = True,
    regularize: Regularize = False,
    outputs: Annotated[str, Form(max_length=64, json_schema_extra={"pattern": OUTPUTS_PATTERN},
                                 description="The results to make: `buildings`, `classmap` or both, "
                                             "comma-separated.")] = "buildings,classmap",
    profile: Profile = None,
    bands: Bands = None,
    model: Model = None,
    allow_coarse: AllowCoarse = False,
    mask: MaskPart = None,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
        description="A key of the client's choosing (visible ASCII, up to 200 characters; e.g. a uuid4) "
                    "that makes retrying this submission safe: while the job it made exists, a submission "
                    "with the same key, file name and options answers that job's 202 instead of queuing "
                    "the scene again; with another file name or options, 422.")] = None,
) -> JSONResponse:
    """Queue a scene for prediction; poll the ``self`` link until it succeeds."""
    await check_form(request)
    options = parse_options(refine, regularize, outputs, profile, bands, allow_coarse) | model_options(request, model)
    settings, store, caller = settings_of(request), store_of(request), caller_of(request)
    stored_key = scoped_idempotency_key(caller, idempotency_key) if idempotency_key is not None else None
    # the job table on threads: a locked one waits up to its 30 s timeout, which on the event loop
    # held every other request of the server
    if stored_key is not None and (made := await run_in_threadpool(store.by_idempotency_key, stored_key)) is not None:
        return await run_in_threadpool(_replayed, request, made, idempotency_key, options, file.filename, mask)
    try:
        job = await accept_upload(file, options, settings, store, model_bands=models_bands(request, options),
                                  model_cards=models_cards(request, options), idempotency_key=stored_key,
                                  mask=mask, checks=request.app.state.upload_checks, client=caller.client)
    except KeyTaken as taken:  # a concurrent submission with the key was queued first
        made = await run_in_threadpool(store.get, taken.job_id)
        if made is None:
            raise HTTPException(409, f"Idempotency-Key {idempotency_key!r} named job {taken.job_id}, deleted "
                                     "meanwhile: submit again") from None
        return await run_in_threadpool(_replayed, request, made, idempotency_key, options, file.filename, mask)
    supervisor_of(request).wake()
    return await run_in_threadpool(accepted_answer, request, job)


def _replayed(request: Request, job: Job, key: str, options: dict, filename: str | None,
              mask: UploadFile | None = None) -> JSONResponse:
    """The answer to a retried submission (``Idempotency-Key``): the 202 of the job it made, once more.
    Why: a client whose POST got no answer (a timeout, a dropped connection) cannot tell whether the
    job was queued; retrying queued the scene a second time, and each retry once more."""
    mask_name = display_name(mask.filename or "mask.tif") if mask is not None else None
    if (job.options != json.loads(json.dumps(options)) or job.input.get("filename") != display_name(filename)
            or job.input.get("mask") != mask_name):
        raise HTTPException(422, f"Idempotency-Key {key!r} already names job {job.id}, submitted with another "
                                 "file name, mask or options: give each new submission a key of its own")
    return accepted_answer(request, job)


#: ``created_at`` (seconds, as ``repr`` writes a float of time.time()) ``_`` job id
CURSOR_PATTERN = r"^[0-9]+(\.[0-9]+)?_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def page_cursor(job: Job) -> str:
    """Where the page after ``job`` starts: its creation time (exact: ``repr`` of the float) and id."""
    return f"{job.created_at!r}_{job.id}"


def _parse_cursor(cursor: str) -> tuple[float, str]:
    created, _, job_id = cursor.partition("_")
    try:
        return float(created), str(UUID(job_id))
    except ValueError:
        raise HTTPException(422, f"after={cursor!r} is not a page cursor: follow the 'next' link of "
                                 "the previous page, or leave 'after' out for the first page") from None


@router.get("", response_model=JobPage, responses=problems(422, 503))
def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    # "" is allowed: the documented form `?status=` (a cleared filter field) means every status
    status: Annotated[Literal[(*STATUSES, "")] | None,  # type: ignore[valid-type]
                      Query(description="Only jobs in this status; empty or absent: all.")] = None,
    after: Annotated[str | None, Query(max_length=100, pattern=CURSOR_PATTERN, description=(
        "Page cursor from a page's `next` link: the page starts right after the last job of the "
        "previous page, however many jobs were submitted or deleted since."))] = None,
) -> JobPage:
    """Newest first; follow ``next`` for the following page."""
    check_query(request)
    status, root = status or None, root_path_of(request)
    cursor = _parse_cursor(after) if after else None
    client = caller_of(request).client
    jobs, total = store_of(request).list(limit, offset, status, after=cursor, client=client)
    nxt = None
    # a full page may have more behind it: the next one starts after its last job (an offset
    # would repeat or skip jobs when jobs are submitted or deleted between the two requests)
    if len(jobs) == limit:
        more, _ = store_of(request).list(1, 0, status, after=(jobs[-1].created_at, jobs[-1].id), client=client)
        if more:
            nxt = f"{root}/v1/jobs?limit={limit}&after={page_cursor(jobs[-1])}" + (f"&status={status}" if status else "")
    settings = settings_of(request)
    return JobPage(items=[job_status(j, settings.retention_hours, root, settings.key_of(j.client)) for j in jobs],
                   total=total, limit=limit, offset=offset, next=nxt)


@router.get("/{job_id}", response_model=JobStatus,
            responses={200: {"description": "The job", "headers": {"Retry-After": POLL_AFTER_HEADER}},
                       **problems(404, 422, 503)})
def get_job(request: Request, response: Response, job_id: UUID) -> JobStatus:
    """Status, progress (0..1), current pipeline stage, error, timestamps and input summary;
    while the job is queued or running, ``Retry-After`` suggests when to poll again."""
    store, settings = store_of(request), settings_of(request)
    job = _get_job(request, job_id)
    response.headers.update(poll_headers(job, store, settings.workers))
    return job_status(job, settings.retention_hours, root_path_of(request), settings.key_of(job.client))


@router.delete("/{job_id}", status_code=204, responses=problems(404, 422, 503))
def delete_job(request: Request, job_id: UUID) -> Response:
    """Cancel the job if it runs, and remove it and all its files."""
    job = _get_job(request, job_id)
    caller = caller_of(request).client
    if store_of(request).mark_deleted(str(job_id)) is None:  # removed meanwhile (another DELETE, retention)
        raise job_gone(store_of(request), job_id, caller)
    log.info("job %s%s deleted by %s", job_id, f" of client {job.client}" if job.client else "",
             f"client {caller}" if caller else "the operator's key" if settings_of(request).keyed else "a request")
    supervisor_of(request).wake()
    return Response(status_code=204)


def _succeeded(request: Request, job: Job, name: str) -> Path:
    """The folder of ``job``'s results; 409 (with ``Retry-After`` while it may still succeed) before,
    but a 404 at once for a file ``name`` the job was not asked for (a client told to poll for it would
    poll until the job ended, and then get the 404)."""
    settings, root = settings_of(request), root_path_of(request)
    if name in RESULT_FILES and not asked_for(job, name):
        raise _not_produced(request, UUID(job.id), name)
    if job.status == "failed":  # it told the client to poll a job that will never succeed
        raise HTTPException(409, f"job failed, so it has no results; its error is at {root}/v1/jobs/{job.id}")
    if job.status != "succeeded":
        raise HTTPException(409, f"job is {job.status}; results exist once it has succeeded "
                                 f"(poll {root}/v1/jobs/{job.id}, after Retry-After seconds)",
                            headers=poll_headers(job, store_of(request), settings.workers))
    return job_dir(settings, job.id) / RESULT_DIR


def _not_produced(request: Request, job_id: UUID, name: str) -> HTTPException:
    """The 404 of a result file absent: the job is gone (removed since it was read), or was not asked for it."""
    _get_job(request, job_id)
    return HTTPException(404, f"this job did not produce {name} (check its 'outputs' option)")


#: the tile of a place the scene does not cover: a transparent PNG, not a 204 or a 404, which
#: Leaflet and OpenLayers count as failed image loads (tileerror events, console errors)
EMPTY_TILE = empty_tile_png()
_PNG = {"image/png": {"schema": _BINARY}}


@router.get("/{job_id}/tilejson.json", response_model=TileJSON, responses=problems(404, 409, 422, 503))
def get_tilejson(request: Request, job_id: UUID) -> TileJSON:
    """TileJSON 3.0.0 of the class map's web-map tiles: their URL template, bounds and zoom range."""
    job = _get_job(request, job_id)
    path = _succeeded(request, job, "classmap.tif") / "classmap.tif"
    try:
        tileset = tileset_of(path)
    except RasterioIOError:
        raise _not_produced(request, job_id, "classmap.tif") from None
    except ValueError as exc:
        raise HTTPException(422, f"the class map has no web-map tiles: {exc}") from None
    template = str(request.url_for("get_tile", job_id=str(job.id), z="{z}", x="{x}", y="{y}"))
    # url_for quotes the braces of the template
    template = tile_template(template.replace("%7B", "{").replace("%7D", "}"), job.id,
                             settings_of(request).key_of(job.client))
    return TileJSON(name=f"geoseg land cover, job {job.id}", tiles=[template], bounds=list(tileset.tilejson_bounds),
                    center=(*tileset.centre_lonlat, tileset.fit_zoom),
                    # every zoom is drawn: MapLibre requests no tile below a source's minzoom, so with the
                    # zoom the scene fits one tile the class map vanished as the map zoomed out a little
                    minzoom=0, maxzoom=tileset.maxzoom,
                    attribution=f"Land cover: geoseg {__version__}")


@router.get("/{job_id}/tiles/{z}/{x}/{y}.png", response_class=Response,
            responses={200: {"content": _PNG, "description": "The 256 px tile, RGBA; fully transparent "
                                                             "where the scene has nothing",
                             "headers": {"Cache-Control": RESULT_CACHE_CONTROL_HEADER, **VALIDATOR_HEADERS}},
                       304: {"description": "Not modified: the copy named by `If-None-Match` / "
                                            "`If-Modified-Since` is current",
                             "headers": {"Cache-Control": RESULT_CACHE_CONTROL_HEADER, **VALIDATOR_HEADERS}},
                       **problems(404, 409, 412, 422, 503)})
def get_tile(
    request: Request, job_id: UUID,
    z: Annotated[int, PathParam(ge=0, le=MAX_ZOOM, description="Zoom level.")],
    x: Annotated[int, PathParam(ge=0, description="Column, from 180 W eastwards (0 .. 2^z - 1).")],
    y: Annotated[int, PathParam(ge=0, description="Row, from 85.05 N southwards (0 .. 2^z - 1; XYZ, "
                                                  "not TMS).")],
    sig: Annotated[str | None, Query(alias=TILE_SIGNATURE_PARAM, description=(
        "On a keyed server: the job's tile signature, in place of `X-API-Key` (the TileJSON's and the "
        "job's `tiles` template carry it), for maps that load tiles as `<img>`. Checked before the route "
        "runs; it opens this job's tiles only."))] = None,
    version: Annotated[str | None, Query(alias=TILE_VERSION_PARAM, max_length=64, description=(
        "The tile renderer's version, as the TileJSON's and the job's `tiles` template name it: a tile "
        "URL with the current one is `immutable`; without it (or with an old one) the tile is the "
        "same but revalidated at each use, so an upgrade that draws tiles otherwise reaches the map."))] = None,
) -> Response:
    """A 256 px Web-Mercator (EPSG:3857) PNG tile of the class map in its colours, for web maps."""
    job = _get_job(request, job_id)
    path = _succeeded(request, job, "classmap.tif") / "classmap.tif"
    try:
        check_tile(z, x, y)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        stat = os.stat(path)
        # a tile is a function of the class map (never rewritten once the job succeeded), z/x/y
        # and the renderer (api.tile_urls)
        etag = tile_etag(stat, z, x, y)
        headers = {**result_cache_headers(settings_of(request).keyed, "image/png"),
                   "Cache-Control": tile_cache_control(version), "ETag": etag,
                   "Last-Modified": formatdate(stat.st_mtime, usegmt=True)}
        if (failed := precondition_failed(request.headers, etag, stat.st_mtime)) is not None:
            return precondition_failed_response(failed)
        if (tag := current_copy(request.headers, etag, stat.st_mtime)) is not None:
            return not_modified(tag, headers)
        png = render_xyz_tile(path, z, x, y)
    except (FileNotFoundError, RasterioIOError):
        raise _not_produced(request, job_id, "classmap.tif") from None
    except ValueError as exc:
        raise HTTPException(422, f"the class map has no web-map tiles: {exc}") from None
    return Response(png or EMPTY_TILE, media_type="image/png", headers=headers)


@router.get("/{job_id}/{name}", response_class=FileResponse,
            responses={200: {"content": {m.split(";")[0]: {"schema": RESULT_SCHEMAS.get(m.split(";")[0], _BINARY)}
                                         for m in RESULT_FILES.values()},
                             "description": "The result file",
                             "headers": {"Cache-Control": RESULT_CACHE_CONTROL_HEADER, **VALIDATOR_HEADERS,
                                         "Accept-Ranges": ACCEPT_RANGES_HEADER}},
                       206: {"content": {**{m.split(";")[0]: {"schema": _BINARY} for m in RESULT_FILES.values()},
                                         "multipart/byteranges": {"schema": _BINARY}},
                             "description": "The byte range asked for with `Range` (`Content-Range` says which); "
                                            "several ranges: `multipart/byteranges`",
                             "headers": {"Cache-Control": RESULT_CACHE_CONTROL_HEADER, **VALIDATOR_HEADERS,
                                         "Accept-Ranges": ACCEPT_RANGES_HEADER,
                                         "Content-Range": CONTENT_RANGE_HEADER}},
                       304: {"description": "Not modified: the copy named by `If-None-Match` / "
                                            "`If-Modified-Since` is current",
                             "headers": {"Cache-Control": RESULT_CACHE_CONTROL_HEADER, **VALIDATOR_HEADERS}},
                       **problems(404, 409, 412, 416, 422, 503)})
def get_result(request: Request, job_id: UUID, name: ResultName) -> FileResponse:
    """One result file of a succeeded job."""
    job = _get_job(request, job_id)
    if name not in RESULT_FILES:
        raise HTTPException(404, f"a job has no file {name!r}: its files are {', '.join(RESULT_FILES)}")
    path = _succeeded(request, job, name) / name
    try:
        # opened here: from now on the job's removal (DELETE, retention) cannot cut the download
        return HeldFileResponse(path, media_type=RESULT_FILES[name], filename=f"{job.id}-{name}",
                                headers=result_cache_headers(settings_of(request).keyed,
                                                             RESULT_FILES[name]))
    except (FileNotFoundError, IsADirectoryError):
        raise _not_produced(request, job_id, name) from None
