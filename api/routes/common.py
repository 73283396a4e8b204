"""Shared pieces of the routers: state accessors, form fields, documented error answers."""
from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from fastapi import File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from api.catalog import ModelCatalog, ModelUnavailable
from api.intake import check_form_fields
from api.jobs import Job, JobStore
from api.pacing import poll_headers
from api.schemas import InputSummary, JobAccepted, Problem, job_links
from api.settings import Settings
from api.validate import UploadRejected
from api.worker import Supervisor


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def store_of(request: Request) -> JobStore:
    return request.app.state.store


def supervisor_of(request: Request) -> Supervisor:
    return request.app.state.supervisor


def catalog_of(request: Request) -> ModelCatalog:
    return request.app.state.catalog


def root_path_of(request: Request) -> str:
    """The path prefix a reverse proxy serves the API under (``geoseg serve --root-path``), to put
    before the links and ``Location`` the service writes: without it a client behind a proxy at
    ``/geoseg/`` was sent to ``/v1/jobs/...``, outside the prefix."""
    return request.scope.get("root_path", "").rstrip("/")


def accepted_answer(request: Request, job: Job) -> JSONResponse:
    """The 202 of a job to poll, one answer for ``POST /v1/jobs`` and a ``/v1/segment`` that ran
    past its wait: its links, ``Location`` and ``Retry-After``."""
    settings, store = settings_of(request), store_of(request)
    links = job_links(job, root_path_of(request), settings.key_of(job.client))
    body = JobAccepted(id=job.id, status=job.status, links=links, input=InputSummary(**job.input))
    return JSONResponse(body.model_dump(mode="json"), status_code=202,
                        headers={"Location": links.self, **poll_headers(job, store, settings.workers)})


async def check_form(request: Request) -> None:
    """422 for a form field the route does not declare, one sent twice, or one sent empty where empty
    means nothing (``check_form_fields``);
    the fields are read from the route's own signature, so the check cannot drift from it."""
    declared = [field.alias for field in request.scope["route"].dependant.body_params]
    check_form_fields(await request.form(), declared)


def check_query(request: Request) -> None:
    """422 for a query parameter the route does not declare, or one given twice. FastAPI ignores the
    one and keeps the last of the other, so a misspelt filter (``/v1/jobs?stauts=failed``) listed
    every job, and ``?status=queued&status=running`` the running ones only, each with a 200 that
    looked like the answer (a client deleting the jobs listed would have deleted the wrong ones).
    The parameters are read from the route's own signature, as :func:`check_form` reads its fields."""
    declared = [param.alias for param in request.scope["route"].dependant.query_params]
    problems = []
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            problems.append(f"unknown query parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif (count := len(request.query_params.getlist(name))) > 1:
            problems.append(f"query parameter {name!r} given {count} times")
    if problems:
        raise HTTPException(422, f"{'; '.join(problems)}; this URL takes each of {', '.join(declared)} "
                                 "at most once (see /docs)")


def model_options(request: Request, model: str | None) -> dict[str, Any]:
    """The ``model`` form field checked against the server's models -> ``{"models": {task: name}}``
    for the job's options ({} for the shipped ones); 422 before the upload is stored otherwise."""
    try:
        chosen = catalog_of(request).choose(model)
    except ModelUnavailable as exc:
        raise UploadRejected(422, str(exc)) from None
    return {"models": chosen} if chosen else {}


def models_bands(request: Request, options: dict[str, Any]) -> tuple[tuple[int, ...], str] | None:
    """The bands a job's chosen models read as red, green, blue (``ModelCatalog.bands``), for the
    upload check (``api.intake.check_bands``)."""
    return catalog_of(request).bands(options.get("models", {}))


def models_cards(request: Request, options: dict[str, Any]) -> dict[str, str]:
    """{task: card path} of a job's chosen models ({} for the shipped ones), for the upload check of
    the input's GSD against theirs (``api.intake.check_gsd``)."""
    try:
        return catalog_of(request).card_paths(options.get("models", {}))
    except ModelUnavailable as exc:
        raise UploadRejected(422, str(exc)) from None


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    text = {400: "Malformed upload (empty, damaged, truncated)", 401: "Missing or wrong API key",
            404: "No such job or file", 409: "Job not succeeded (yet: queued or running, with Retry-After)",
            408: "The upload stalled: no byte of it arrived for GEOSEG_UPLOAD_IDLE_S seconds; send it again",
            412: "`If-Match` / `If-Unmodified-Since` rule out the file as it is",
            413: "Upload or raster too large",
            416: "The byte range starts past the end of the file (`Content-Range: bytes */SIZE` gives its size)",
            415: "Not a GeoTIFF", 422: "Unusable raster or invalid option",
            429: "The queue is full (GEOSEG_MAX_QUEUED): nothing was kept; retry after Retry-After seconds",
            503: ("The job table is unavailable (disk full, database locked), the server is stopping, or "
                  "(`/v1/segment`) its run failed for the server's reasons (a worker out of memory): "
                  "retry after Retry-After seconds"),
            507: "No disk space left on the server for the upload"}
    answers: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        answers[code] = {"model": Problem, "description": text[code]}
        if code in (429, 503):
            answers[code]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        elif code == 409:
            answers[code]["headers"] = {"Retry-After": POLL_AFTER_HEADER}
        elif code == 416:
            answers[code]["headers"] = {"Content-Range": {"description": "`bytes */SIZE`: the file's size.",
                                                          "schema": {"type": "string"}}}
    return answers


#: a GeoJSON body, declared: with no schema a generated client drops it (openapi-python-client's
#: `segment` returned None, the GeoJSON only in the raw response)
FEATURE_COLLECTION = {"type": "object", "required": ["type", "features"],
                      "properties": {"type": {"const": "FeatureCollection"},
                                     "features": {"type": "array", "items": {"type": "object"}}}}
#: the schema of a whole result file of each media type (a 200): JSON ones are JSON objects, as a
#: validating client parses them (declared binary, report.json and the GeoJSON failed validation);
#: the others are bytes
RESULT_SCHEMAS = {"application/geo+json": FEATURE_COLLECTION, "application/json": {"type": "object"}}
LOCATION_HEADER = {"description": "The job's URL, to poll.", "schema": {"type": "string"}}
RETRY_AFTER_HEADER = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
POLL_AFTER_HEADER = {"description": "While the job is queued or running: suggested seconds before polling "
                                    "it again (its estimated seconds left, 1..30).", "schema": {"type": "integer"}}
RESULT_CACHE_CONTROL_HEADER = {
    "description": "`private, max-age=31536000, immutable`: the file never changes; only the client may "
                   "keep it (every other answer is `no-store`).", "schema": {"type": "string"}}

_STRING = {"type": "string"}
#: the validators of a result file or tile, sent on its 200, 206 and 304
VALIDATOR_HEADERS = {
    "ETag": {"description": "The representation's tag, for `If-None-Match` (and `If-Range`); weak (`W/...`) "
                            "when the answer is gzipped.", "schema": _STRING},
    "Last-Modified": {"description": "When the file was written, for `If-Modified-Since`.", "schema": _STRING},
}
ACCEPT_RANGES_HEADER = {"description": "`bytes`: the file answers `Range` requests.", "schema": _STRING}
CONTENT_RANGE_HEADER = {"description": "`bytes FIRST-LAST/SIZE`, for a single range (several ranges: a "
                                       "`multipart/byteranges` body, each part with its own).", "schema": _STRING}


def binary_part(schema: dict[str, Any]) -> None:
    """``format: binary`` on a file part's string type: OpenAPI 3.1 as FastAPI writes it marks an
    upload only with ``contentMediaType``, and client generators (openapi-python-client,
    openapi-generator) recognise a file part by ``format: binary``; without it they typed ``file`` as
    a str, and a generated client could not send a file. On an optional part (``mask``) it goes on
    the ``anyOf``'s string branch: written beside the ``anyOf`` it was not read, and a generated client
    sent the mask as a text part (422 "a text value, not a file")."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["format"] = "binary"

Refine = Annotated[bool, Form(description="Refine the class map with the superpixel GCN.")]
Regularize = Annotated[bool, Form(description="Square building outlines.")]
Profile = Annotated[Literal["accurate", "fast"] | None,
                    Form(description="Pipeline profile: accurate (default) or fast.")]
# Patterns for the schema only (generated clients, form validators): the app's own checks
# (``parse_bands``, ``parse_options``) answer a value outside them with a clearer 422 than a regex.
_BAND = r"\s*0*[1-9][0-9]*\s*"
#: three 1-based band numbers, or empty (the raster's own choice)
BANDS_PATTERN = rf"^\s*$|^{_BAND},{_BAND},{_BAND}$"
#: a comma-separated subset of the outputs
OUTPUTS_PATTERN = r"^\s*(buildings|classmap)\s*(,\s*(buildings|classmap)\s*)*$"
_MODEL_ITEM = r"\s*(buildings|landcover|gcn)\s*=\s*[^,=]*[^,=\s][^,=]*"
#: TASK=NAME items, comma-separated, or empty (the shipped models)
MODEL_PATTERN = rf"^\s*$|^{_MODEL_ITEM}(,{_MODEL_ITEM})*$"
Model = Annotated[str | None, Form(max_length=500, json_schema_extra={"pattern": MODEL_PATTERN}, description=(
    "Models to run instead of the shipped ones, by name, as `geoseg predict --model TASK=CARD` "
    "(TASK `buildings`, `landcover` or `gcn`): `buildings=NAME` or `buildings=NAME,landcover=NAME`. "
    "`GET /v1/models` lists the names; the server's own come from `geoseg serve --models DIR`. "
    "Default: the shipped models of the profile."))]
AllowCoarse = Annotated[bool, Form(description=(
    "Predict a raster more than 10x coarser than a model's working GSD (buildings 0.3 m, land cover 1.1 m for "
    "the shipped models; 1 % of slack: 3 m UTM pixels pass), refused otherwise (422): a house or a road is "
    "then a pixel or two, and the outputs mean little."))]
Bands = Annotated[str | None, Form(max_length=64, json_schema_extra={"pattern": BANDS_PATTERN}, description=(
    "1-based bands read as red, green, blue, e.g. `3,2,1` for bands stored blue, green, red (BGR, "
    "BGRN), `5,3,2` for WorldView-3 or `1,1,1` for a one-band grey raster (the models were trained on colour: "
    "lower accuracy). Default: bands labelled red, green, blue by colour interpretation or band description, "
    "else 1,2,3; a raster of fewer than 3 bands needs this field."))]
MaskPart = Annotated[UploadFile | None, File(json_schema_extra=binary_part, description=(
    "The image's valid area, sent with it: a one-band integer GeoTIFF of the image's size (pixel for pixel; "
    "its georeferencing is not read), 0 where the image has no data, e.g. GDAL's external mask `scene.tif.msk` "
    "as it is (`curl -F file=@scene.tif -F mask=@scene.tif.msk`). Stored beside the upload as its `.msk`, so "
    "the job reads it as the image's mask: no building and class 0 where it is 0. It only takes area away: "
    "the image's own nodata, alpha or NaN stay invalid. Refused (4xx) when it is not such a raster, or when the "
    "image has an internal mask (GDAL would read that instead)."))]
