"""Response bodies of the service (pydantic), shared by the routers and the OpenAPI schema."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from api.jobs import ENDED, Job
from api.tile_urls import tile_template

RESULT_FILES: dict[str, str] = {
    "buildings.geojson": "application/geo+json",
    "buildings.gpkg": "application/geopackage+sqlite3",
    "classmap.tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    "classmap.qml": "application/xml",
    "report.json": "application/json",
}


class InvalidField(BaseModel):
    """One request value that failed validation (FastAPI's check of the declared fields)."""

    type: str = Field(description="Pydantic's error type, e.g. `literal_error`, `missing`, `uuid_parsing`.")
    loc: list[str | int] = Field(description="Where: `body` (a form field), `query` or `path`, then the name.")
    msg: str


class Problem(BaseModel):
    """Every 4xx/5xx answer: what is wrong and what to do."""

    detail: str = Field(description="What is wrong and what to do about it, in one line.")
    errors: list[InvalidField] | None = Field(
        None, description="Only on a 422 for request values that fail the declared field types, "
                          "values or patterns: each such value, machine-readable.")


class InputSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    filename: str
    bytes: int
    width: int
    height: int
    bands: int
    dtype: str
    crs: str = Field(description="`EPSG:code` (or another authority's code), else the CRS's name, or `custom`.")
    crs_wkt: str | None = Field(None, description="The CRS as WKT when it has no authority code (`crs` then "
                                                  "names it only); null otherwise.")
    gsd_m: float = Field(description="Ground sample distance at the scene centre, metres.")
    bounds_wgs84: list[float] | None = Field(
        None, description="West, south, east, north (WGS84 degrees) as an RFC 7946 bbox: longitudes in "
                          "-180..180, west > east for a scene across the antimeridian; null when the "
                          "scene's corners do not project to longitude and latitude.")
    mask: str | None = Field(
        None, description="The file name of the `mask` part sent with the image (its valid area, stored as the "
                          "upload's `.msk`); null when none was sent.")


class JobLinks(BaseModel):
    """``self``, and once the job succeeded a link per result file it made (absent otherwise:
    a link to an output not requested would only answer 404). Declared one by one, under the
    files' names, so a generated client has them as typed optional fields."""

    model_config = ConfigDict(extra="allow", serialize_by_alias=True, validate_by_name=True)

    self: str
    buildings_geojson: str | None = Field(None, alias="buildings.geojson")
    buildings_gpkg: str | None = Field(None, alias="buildings.gpkg")
    classmap_tif: str | None = Field(None, alias="classmap.tif")
    classmap_qml: str | None = Field(None, alias="classmap.qml", description="The class map's QGIS style "
                                     "(class names and colours as a legend): save it beside classmap.tif.")
    report_json: str | None = Field(None, alias="report.json")
    tilejson: str | None = Field(None, description="TileJSON 3.0.0 of the class map's web-map tiles "
                                                   "(with a class map only).")
    tiles: str | None = Field(None, description="URL template of the class map's XYZ tiles "
                                                "(256 px Web-Mercator PNGs): `{z}/{x}/{y}` to fill in. Its "
                                                "`v` names the server's tile renderer (tiles under it are "
                                                "immutable; an upgrade that draws them otherwise changes it). "
                                                "On a keyed server it carries the job's tile signature (`sig`), "
                                                "so a map can load the tiles without `X-API-Key`.")

    @model_serializer(mode="wrap")
    # no return annotation: pydantic would make it the schema (a bare dict), hiding the fields
    def _only_present(self, handler: SerializerFunctionWrapHandler):
        return {name: url for name, url in handler(self).items() if url is not None}


class TileJSON(BaseModel):
    """TileJSON 3.0.0 (https://github.com/mapbox/tilejson-spec) of a job's class map tiles, as web
    maps (MapLibre, OpenLayers, Leaflet plugins) read it to add the layer."""

    tilejson: Literal["3.0.0"] = "3.0.0"
    name: str
    scheme: Literal["xyz"] = "xyz"
    tiles: list[str] = Field(description="The tile URL template, absolute: `{z}/{x}/{y}` to fill in; `v=` "
                                         "names the server's tile renderer (on a keyed server also signed: "
                                         "`sig=...` opens this job's tiles only).")
    bounds: list[float] = Field(description="West, south, east, north of the scene (WGS84 degrees); a scene "
                                            "across the antimeridian spans -180..180 (TileJSON's bounds never wrap).")
    center: tuple[float, float, int] = Field(description="Longitude, latitude and zoom (an integer) a map may open at.")
    minzoom: int = Field(description="0: tiles are drawn at every zoom (the centre's zoom is the deepest where the "
                                     "whole scene fits one tile).")
    maxzoom: int = Field(description="The scene's native zoom: its pixels as fine as the scene's GSD.")
    attribution: str


class JobStatus(BaseModel):
    # every field is in every answer (null when it does not apply): required in the schema, or a
    # generated client types eta_s, previous_error and expires_at as "maybe absent" (Unset)
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: str
    kind: Literal["job", "segment"]
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float = Field(ge=0, le=1)
    eta_s: float | None = Field(
        None, description="Estimated seconds until this attempt ends, at its rate so far: at its last "
                          "progress report, seconds since its pipeline began (after the `starting` stage) x "
                          "(1 - progress) / progress, less the seconds since that report (once that is spent: "
                          "the same product with the seconds until now); "
                          "null unless running with at least 5 % done.")
    stage: str | None
    error: str | None
    previous_error: str | None = Field(
        None, description="Why the previous attempt ended, once the job was retried (a crash, "
                          "a killed or silent worker, an interrupted server); null otherwise.")
    retryable: bool | None = Field(
        None, description="Of a failed job: true when the server is at fault (its workers crashed or were killed "
                          "until GEOSEG_MAX_ATTEMPTS ran out, e.g. out of memory; the server stopped while it ran "
                          "too often), so submitting it again later may succeed; false when the input, its options "
                          "or the job's time limit are (fix them first); null unless failed.")
    attempts: int
    options: dict[str, Any]
    input: InputSummary
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None = Field(description="Last sign of life of the running worker.")
    client: str | None = Field(
        None, description="The client (GEOSEG_API_KEYS_FILE) whose key submitted the job; null: the operator's "
                          "key, or an open server. A client sees only its own jobs: the operator reads here whose "
                          "a job is.")
    expires_at: datetime | None = Field(
        None, description="When the server will remove this ended job and its files "
                          "(GEOSEG_RETENTION_HOURS after finished_at); null while it is queued or "
                          "running, or when the server keeps jobs until they are deleted.")
    links: JobLinks


class JobAccepted(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    links: JobLinks
    input: InputSummary


class JobPage(BaseModel):
    items: list[JobStatus]
    total: int
    limit: int
    offset: int
    next: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    open: bool = Field(description="True when no API key is required.")
    workers: int
    running: int
    jobs: dict[str, int] = Field(description="Jobs per status; 'queued' is the queue's depth.")
    max_queued: int = Field(description="Queue cap (GEOSEG_MAX_QUEUED): submissions beyond it get 429; "
                                        "0: no limit.")
    retention_hours: float = Field(description="Hours an ended job is kept (GEOSEG_RETENTION_HOURS); "
                                               "0: until deleted.")
    problem: str | None = Field(None, description="Why the status is degraded (the supervisor died, or the job "
                                                  "runner does not import, which every job would fail on); "
                                                  "null when ok.")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    task: str
    shipped: bool = Field(description="Shipped with geoseg (false: one of the server's own "
                                            "models, `geoseg serve --models DIR`).")


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


#: The job option (``outputs`` form field) each result file depends on; None: always written.
_PRODUCED_WITH: dict[str, str | None] = {
    "buildings.geojson": "buildings", "buildings.gpkg": "buildings", "classmap.tif": "classmap",
    "classmap.qml": "classmap", "report.json": None,
}


def asked_for(job: Job, name: str) -> bool:
    """Whether ``job`` was asked for the result file ``name`` (its ``outputs`` option): a file not
    asked for never comes, whatever the job's status."""
    option = _PRODUCED_WITH.get(name)
    return option is None or bool(job.options.get(option, True))


def job_links(job: Job, root_path: str = "", api_key: str | None = None) -> JobLinks:
    """``self``, and once succeeded the result files the job was asked for (a link to an output
    not requested would only answer 404). ``root_path``: the path a proxy serves the API under
    (``--root-path``), so the links work from the client's side of the proxy; the ``tiles``
    template names the renderer version, and a keyed server's is signed (``api.tile_urls``)."""
    base = f"{root_path}/v1/jobs/{job.id}"
    links: dict[str, str] = {"self": base}
    if job.status == "succeeded":
        links.update({name: f"{base}/{name}" for name in _PRODUCED_WITH if asked_for(job, name)})
        if job.options.get("classmap", True):
            links.update(tilejson=f"{base}/tilejson.json",
                         tiles=tile_template(f"{base}/tiles/{{z}}/{{x}}/{{y}}.png", job.id, api_key))
    return JobLinks(**links)


def expires_at(job: Job, retention_hours: float) -> float | None:
    """When retention removes ``job`` (epoch seconds); None if it has not ended or retention is off."""
    if not retention_hours or job.status not in ENDED or job.finished_at is None:
        return None
    return job.finished_at + retention_hours * 3600.0


#: below this share done, a job's rate says little (its start-up is most of what went by)
ETA_MIN_PROGRESS = 0.05


def eta_s(job: Job, now: float) -> float | None:
    """Seconds left of a running job at the rate of its pipeline so far (its progress moves with
    time, ``geoseg.progress``), as of its last progress report, counted down since; None when it is
    not running or under ``ETA_MIN_PROGRESS`` done.

    The rate is measured from the runner's first progress report, not from ``started_at``: the
    start-up before it (interpreter, imports, model load: 3-10 s) advances no progress, and
    counted in, it made a small scene 3 s from done say 40 s (a ``Retry-After`` of 30). It is taken
    at the last report (``updated_at``), not now: between reports (a stage that reports its end
    only) the rate measured now fell while the job ran on, and the estimate climbed, 21 s left
    3.2 s before a job ended. Once that countdown runs out, the rate measured now again."""
    since = job.pipeline_started_at or job.started_at
    if job.status != "running" or since is None or job.progress < ETA_MIN_PROGRESS:
        return None
    reported = min(max(job.updated_at, since), now)
    rate = (1.0 - job.progress) / job.progress
    left = max(0.0, reported - since) * rate - (now - reported)
    if left <= 0:  # overdue: the rate so far, as measured now (0 sent clients back every second)
        left = max(0.0, now - since) * rate
    return round(left, 1)


def job_status(job: Job, retention_hours: float, root_path: str = "", api_key: str | None = None) -> JobStatus:
    return JobStatus(
        id=job.id, kind=job.kind, status=job.status, progress=job.progress, eta_s=eta_s(job, time.time()),
        stage=job.stage,
        error=job.error, previous_error=job.previous_error, attempts=job.attempts,
        retryable=job.retryable if job.status == "failed" else None,
        options=job.options, input=InputSummary(**job.input),
        created_at=_ts(job.created_at), updated_at=_ts(job.updated_at), started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at), heartbeat_at=_ts(job.heartbeat_at), client=job.client,
        expires_at=_ts(expires_at(job, retention_hours)), links=job_links(job, root_path, api_key),
    )
