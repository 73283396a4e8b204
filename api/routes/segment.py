"""``POST /v1/segment``: the synchronous path for small scenes (answers GeoJSON).

It runs as a high-priority job in a worker process (never in the event loop)
and waits for it; if it takes longer than the sync timeout the client gets the
202 of an ordinary job to poll instead of a gateway timeout. A client that hangs
up stops the waiting, not the job: it runs to completion and stays listed (kind
``segment``), since nobody received its answer.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.intake import accept_upload, parse_options
from api.routes.common import (
    FEATURE_COLLECTION,
    LOCATION_HEADER,
    POLL_AFTER_HEADER,
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
    model_options,
    models_bands,
    models_cards,
    problems,
    settings_of,
    store_of,
    supervisor_of,
)
from api.schemas import JobAccepted
from api.security import caller_of
from api.upload_parts import UploadsDirRoute
from api.worker import RESULT_DIR, job_dir

router = APIRouter(prefix="/v1", tags=["segment"], route_class=UploadsDirRoute)  # uploads: api.upload_parts
log = logging.getLogger("geoseg.api")

SYNC_PRIORITY = 10
#: Retry-After of a run that failed for the server's reasons (its workers crashed or were killed)
SERVER_FAILURE_RETRY_AFTER_S = 30

@router.post(
    "/segment",
    response_class=Response,
    responses={200: {"content": {"application/geo+json": {"schema": FEATURE_COLLECTION}},
                     "description": "Building footprints (RFC 7946 FeatureCollection, WGS84)"},
               202: {"model": JobAccepted, "description": "Not finished in time: poll the job",
                     "headers": {"Location": LOCATION_HEADER, "Retry-After": POLL_AFTER_HEADER}},
               **problems(400, 404, 408, 413, 415, 422, 429, 503, 507)},
)
async def segment(
    request: Request,
    file: Annotated[UploadFile, File(description="A small georeferenced GeoTIFF (RGB).",
                                     json_schema_extra=binary_part)],
    refine: Refine = True,
    regularize: Regularize = False,
    profile: Profile = None,
    bands: Bands = None,
    model: Model = None,
    allow_coarse: AllowCoarse = False,
    mask: MaskPart = None,
) -> Response:
    """Building footprints of a small scene in one request (pixel limit: GEOSEG_SYNC_MAX_PIXELS)."""
    await check_form(request)
    settings, store = settings_of(request), store_of(request)
    options = (parse_options(refine, regularize, "buildings", profile, bands, allow_coarse)
               | model_options(request, model))
    job = await accept_upload(file, options, settings, store, kind="segment",
                              priority=SYNC_PRIORITY, max_pixels=settings.sync_max_pixels,
                              model_bands=models_bands(request, options), model_cards=models_cards(request, options),
                              mask=mask, checks=request.app.state.upload_checks, client=caller_of(request).client)
    supervisor = supervisor_of(request)
    supervisor.wake()
    deadline = time.monotonic() + settings.sync_timeout_s
    while time.monotonic() < deadline:
        if await request.is_disconnected():  # checked first: never drop a result nobody received
            log.info("segment job %s: client disconnected; the job is kept", job.id)
            break
        # the job table on a thread: a locked one waits up to its 30 s timeout, which on the event
        # loop held every other request of the server
        current = await run_in_threadpool(store.get, job.id)
        if current is None:
            raise HTTPException(404, "the job was deleted while running")
        if current.status == "succeeded":
            body = (job_dir(settings, job.id) / RESULT_DIR / "buildings.geojson").read_bytes()
            await run_in_threadpool(store.mark_deleted, job.id)
            supervisor.wake()
            return Response(body, media_type="application/geo+json")
        if current.status == "failed":
            await run_in_threadpool(store.mark_deleted, job.id)
            supervisor.wake()
            if current.retryable:  # the server's failure (out of memory, say): not "fix your input"
                raise HTTPException(503, f"segmentation failed on the server, not because of the input: "
                                         f"{current.error}; submit it again later",
                                    headers={"Retry-After": str(SERVER_FAILURE_RETRY_AFTER_S)})
            raise HTTPException(422, f"segmentation failed: {current.error}")
        await asyncio.sleep(0.1)
    return await run_in_threadpool(lambda: accepted_answer(request, store.get(job.id) or job))
