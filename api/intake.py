"""Turn an upload into a durable queued job: stream to disk, validate, move, insert.

The job row is written only after the input file is complete, fsync'd and in
its final place, so a 202 always points at a job the server can run after a crash.
"""
from __future__ import annotations

import dataclasses
import difflib
import errno
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import anyio
import rasterio
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from api.admission import queue_full_answer
from api.jobs import Job, JobStore, QueueFull
from api.mask_upload import check_mask_file, sidecar_of, write_mask_sidecar
from api.redact import redact_paths
from api.settings import Settings
from api.upload_parts import received_path
from api.validate import (
    RasterLimits,
    UploadRejected,
    copy_upload,
    discard,
    display_name,
    inspect_raster,
)
from api.worker import INPUT_NAME, job_dir
from geoseg.coarse_input import too_coarse
from geoseg.options import PredictOptions
from tiles.gsd import gsd_m
from tiles.masks import has_valid_pixel
from tiles.normalize import dataset_bands, parse_bands
from tiles.palette import is_paletted
from tiles.tiff_chunks import stored_chunks

#: upload checks run at once, on threads of their own rather than the pool that serves status, results and
#: tiles: each may decode a 256 MiB block per band group or read a whole raster of nodata, and 40 at once
#: (the pool's size) took 4 GB and held a job's status 22 s (session 31's security review)
UPLOAD_CHECKS_AT_ONCE = 2

T = TypeVar("T")

OUTPUTS = ("buildings", "classmap")

log = logging.getLogger("geoseg.api")


def parse_options(refine: bool, regularize: bool, outputs: str, profile: str | None,
                  bands: str | None = None, allow_coarse: bool = False) -> dict[str, Any]:
    """Form fields -> pipeline options (names of ``geoseg.pipeline.PredictOptions``)."""
    wanted = {o.strip() for o in outputs.split(",") if o.strip()}
    unknown = sorted(wanted - set(OUTPUTS))
    if unknown or not wanted:
        raise UploadRejected(422, f"outputs must be a comma-separated subset of {', '.join(OUTPUTS)}"
                                  f" (got {outputs!r})")
    options: dict[str, Any] = {"refine": "gcn" if refine else "none", "regularize": regularize,
                               "buildings": "buildings" in wanted, "classmap": "classmap" in wanted}
    if profile:
        options["profile"] = profile
    if bands is not None and bands.strip():  # an empty form field: the raster's own choice
        try:
            options["bands"] = list(parse_bands(bands, option="bands"))
        except ValueError as exc:
            raise UploadRejected(422, str(exc)) from None
    if allow_coarse:  # only when asked: a job's options list what was chosen
        options["allow_coarse"] = True
    return options


#: form fields whose empty value has a meaning of its own (the raster's bands, the shipped models)
EMPTY_MEANS_DEFAULT = frozenset({"bands", "model"})


def check_form_fields(form: FormData, fields: Collection[str]) -> None:
    """Refuse a form with a field the route does not take, one sent twice, or one sent empty where
    empty means nothing (422, before the upload is stored). FastAPI ignores unknown fields and keeps
    the last of repeated ones, so a typo (``profil=fast``, ``regularise=true``) ran the job with the
    defaults, and a second ``file`` part (a client sending a batch) was dropped while the 202 looked
    like success. It also reads an empty text value as the field left out, so ``outputs=`` (a client's
    unset variable) made both outputs and ``profile=`` the accurate one, as ``geoseg predict`` refuses
    ``--out ""``; ``bands=`` and ``model=`` keep their documented empty meaning."""
    problems, empty = [], []
    for name in dict.fromkeys(form.keys()):
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            problems.append(f"unknown form field {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif (count := len(form.getlist(name))) > 1:
            problems.append(f"form field {name!r} sent {count} times" + (
                " (one GeoTIFF per job: submit each file as its own job)" if name == "file" else ""))
        elif isinstance(value := form[name], str) and not value.strip() and name not in EMPTY_MEANS_DEFAULT:
            empty.append(name)
    if problems:
        raise UploadRejected(422, f"{'; '.join(problems)}; this route takes each of {', '.join(fields)} "
                                  "at most once (see /docs)")
    if empty:
        raise UploadRejected(422, f"form field{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} sent "
                                  "empty: give a value, or leave the field out for its default (see /docs)")


def check_bands(options: dict[str, Any], summary: dict[str, Any],
                model_bands: tuple[tuple[int, ...], str] | None = None) -> None:
    """Refuse ``bands`` naming a band the upload does not have, or, without ``bands``, a chosen
    model trained on bands it does not have (``model_bands``: ``ModelCatalog.bands``), before the job
    is queued. Why: such a job was accepted (202) and failed in the worker. Fewer than three bands
    (a grey aerial photo, a panchromatic band) are refused unless ``bands`` or the model's card names
    the bands to read (``1,1,1``: the grey band as red, green and blue), as ``geoseg predict`` does."""
    wanted = options.get("bands")
    if wanted is None and model_bands is None and summary["bands"] < 3:
        raise UploadRejected(422, f"the raster has {summary['bands']} band(s); RGB imagery with at least 3 bands "
                                  f"(or one paletted band) is needed, or a grey (panchromatic) band read as red, "
                                  f"green and blue: send the form field bands=1,1,1 (the models were trained on "
                                  f"colour imagery, so expect lower accuracy)")
    missing = [b for b in wanted or () if b > summary["bands"]]
    if missing:
        raise UploadRejected(422, f"bands {','.join(map(str, wanted))} were asked for red, green, blue, but the "
                                  f"raster has {summary['bands']} band(s): band(s) {', '.join(map(str, missing))} "
                                  f"do not exist")
    if wanted is None and model_bands is not None:
        named, model = model_bands
        missing = [b for b in named if b > summary["bands"]]
        if missing:
            raise UploadRejected(422, f"model {model!r} reads bands {','.join(map(str, named))} as red, green, blue "
                                      f"(its card), but the raster has {summary['bands']} band(s): send bands=R,G,B "
                                      f"to choose others, or choose another model")


def job_bands(src: rasterio.io.DatasetReader, options: dict[str, Any],
              model_bands: tuple[tuple[int, ...], str] | None = None) -> tuple[int, ...]:
    """The bands of ``src`` a job reads (1-based): its ``bands``, else its model's, else the raster's
    own red, green, blue (``tiles.normalize.dataset_bands``); a paletted raster's one band."""
    if is_paletted(src):
        return (1,)
    wanted = options.get("bands") or (model_bands[0] if model_bands else None)
    return tuple(wanted) if wanted else dataset_bands(src).bands


def store_mask(staged: Path, mask_file: Path, options: dict[str, Any],
               model_bands: tuple[tuple[int, ...], str] | None = None) -> None:
    """Write the upload's ``mask`` part as the staged image's ``.msk`` (``api.mask_upload``), over
    the bands the job reads."""
    with rasterio.open(staged) as src:
        bands = job_bands(src, options, model_bands)
    try:
        write_mask_sidecar(staged, mask_file, bands)
    except UploadRejected as exc:  # GDAL's reason names the files: never their place on the server
        named = {sidecar_of(staged): "upload.tif.msk", staged: "upload.tif", mask_file: "mask.tif"}
        raise UploadRejected(exc.status_code, redact_paths(exc.detail, named)) from exc


def check_has_data(staged: Path, options: dict[str, Any],
                   model_bands: tuple[tuple[int, ...], str] | None = None) -> None:
    """Refuse (422) an upload with no valid pixel in the bands the job reads (every pixel nodata,
    masked by its alpha band or mask, or NaN), checked at full resolution, whatever its size, until
    the first valid pixel; a stored chunk of the same bytes as one read already is not read again
    (``tiles.tiff_chunks``), so a fill-valued raster costs a few reads. Why: such a job was accepted
    (202) and failed in the worker with 'no valid pixels' (up to session 19, above 64 Mpx)."""
    with rasterio.open(staged) as src:
        bands = job_bands(src, options, model_bands)
        chunks = stored_chunks(staged)
        if chunks is not None and chunks.shape != (src.height, src.width):
            chunks = None  # not the image GDAL reads: read every block
        if not has_valid_pixel(src, bands, chunks):
            raise UploadRejected(422, "the raster holds no valid pixel: every pixel of the bands read "
                                      f"({','.join(map(str, bands))}) is nodata, masked (alpha band or mask) or "
                                      "not a number, so there is nothing to segment; send the scene with its data, "
                                      "or unset a wrong nodata value (`gdal_edit.py -unsetnodata file.tif`)")


def check_gsd(staged: Path, options: dict[str, Any], model_cards: dict[str, str]) -> None:
    """Refuse (422) a raster far coarser than the models the job would run work at
    (``geoseg.coarse_input``), measured as ``geoseg predict`` measures it, before the job is queued.
    Why: such a job (a continent in a few hundred pixels) was accepted and succeeded with a warning,
    its class map and buildings meaning nothing; ``allow_coarse=true`` runs it anyway."""
    with rasterio.open(staged) as src:
        gsd = gsd_m(src.crs, src.transform, src.width, src.height)
    known = {f.name for f in dataclasses.fields(PredictOptions)}
    job = PredictOptions(**{k: v for k, v in options.items() if k in known}, model_dirs=model_cards)
    coarse = too_coarse(gsd, job)
    if coarse is not None:
        only = "outputs=classmap" if coarse.task == "buildings" else "outputs=buildings"
        raise UploadRejected(422, coarse.advice(only, None, "allow_coarse=true", verb="send"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


NO_SPACE = ("the server has no disk space left for this upload; nothing was kept: try again later, "
            "or ask the operator to free space in the service's data dir")


def out_of_space(exc: BaseException) -> bool:
    """A full disk (or quota), as the file system or SQLite reports it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def store_upload(upload: UploadFile, dest: Path, max_bytes: int) -> None:
    """Put ``upload`` at ``dest``, synced. A file part the service received into its uploads folder
    (``api.upload_parts``) is renamed there: written once, never through the system temp folder;
    any other (an ``UploadFile`` of the caller's own) is copied, refused past ``max_bytes``."""
    received = received_path(upload)
    if received is None:
        copy_upload(upload.file, dest, max_bytes)
        return
    os.fsync(upload.file.fileno())
    os.replace(received, dest)
    upload.file.close()  # its descriptor, now; the part's name is gone, so nothing is removed


def _stage_and_inspect(upload: UploadFile, staged: Path, settings: Settings) -> dict[str, Any]:
    store_upload(upload, staged, settings.max_upload_bytes)
    return inspect_raster(staged, RasterLimits(settings.max_side, settings.max_pixels))


def _stage_mask(mask: UploadFile, staged: Path, summary: dict[str, Any], settings: Settings) -> None:
    """Copy the ``mask`` part to ``staged`` and check it against the image (``summary``)."""
    store_upload(mask, staged, settings.max_upload_bytes)
    try:
        check_mask_file(staged, summary["width"], summary["height"],
                        RasterLimits(settings.max_side, settings.max_pixels))
    except UploadRejected as exc:  # GDAL's reason names the file: never its place on the server
        # GDAL quotes the bare file name too (TIFFReadDirectory: <job id>.mask.tif: ...)
        raise UploadRejected(exc.status_code, redact_paths(exc.detail, {staged: "mask.tif",
                                                                        staged.name: "mask.tif"})) from exc


def _publish(staged: Path, target: Path, job_id: str, options: dict[str, Any], summary: dict[str, Any],
             settings: Settings, store: JobStore, kind: str, priority: int, idempotency_key: str | None,
             client: str | None = None) -> Job:
    """Move the checked upload into its job's folder, sync it, insert the row. In a worker thread:
    the two fsyncs (the folder's, and the row's ``synchronous=FULL`` commit: 15-25 ms here, more on
    a busy or network disk) stalled every request the event loop serves, once per upload."""
    try:
        target.mkdir(parents=True)
        if sidecar_of(staged).exists():  # the mask part (api.mask_upload), beside the image as GDAL seeks it
            os.replace(sidecar_of(staged), sidecar_of(target / INPUT_NAME))
        os.replace(staged, target / INPUT_NAME)  # fails if the request gave up and discarded it
        _fsync_dir(target)
        job = store.create(job_id, options, summary, kind=kind, priority=priority,
                           max_queued=settings.max_queued, idempotency_key=idempotency_key, client=client)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no row, no job: its input goes now
        raise
    if client is not None:  # whose job it is, for the operator's log (the job's 'client' says it too)
        log.info("job %s queued for client %s", job_id, client)
    return job


async def accept_upload(upload: UploadFile, options: dict[str, Any], settings: Settings,
                        store: JobStore, kind: str = "job", priority: int = 0,
                        max_pixels: int | None = None,
                        model_bands: tuple[tuple[int, ...], str] | None = None,
                        model_cards: dict[str, str] | None = None,
                        idempotency_key: str | None = None, mask: UploadFile | None = None,
                        checks: anyio.CapacityLimiter | None = None, client: str | None = None) -> Job:
    """Validate the upload (and its ``mask`` part, stored beside it as ``input.tif.msk``) and queue
    it as ``client``'s job; raises ``UploadRejected`` (nothing is kept) if unusable, ``api.jobs.KeyTaken`` (nothing is
    kept) if a job already has ``idempotency_key``. The checks run in threads under ``checks`` (the
    app's ``upload_checks``; None: the thread pool the routes share)."""

    async def checked(check: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(check, *args, limiter=checks)

    job_id = str(uuid.uuid4())
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    staged = settings.uploads_dir / f"{job_id}.tif"
    staged_mask = settings.uploads_dir / f"{job_id}.mask.tif"
    target = job_dir(settings, job_id)
    publishing = False
    try:
        summary = await checked(_stage_and_inspect, upload, staged, settings)
        if mask is not None:
            await checked(_stage_mask, mask, staged_mask, summary, settings)
        check_bands(options, summary, model_bands)
        await checked(check_gsd, staged, options, model_cards or {})
        pixels = summary["width"] * summary["height"]
        if max_pixels is not None and pixels > max_pixels:
            raise UploadRejected(413, f"raster has {pixels} pixels; synchronous segmentation takes "
                                      f"at most {max_pixels}: submit it with POST /v1/jobs instead")
        if mask is not None:
            await checked(store_mask, staged, staged_mask, options, model_bands)
            summary["mask"] = display_name(mask.filename or "mask.tif")
        await checked(check_has_data, staged, options, model_bands)
        summary["filename"] = display_name(upload.filename)
        publishing = True  # from here the thread owns the job's folder, and cleans it up if it fails
        return await run_in_threadpool(_publish, staged, target, job_id, options, summary, settings, store,
                                       kind, priority, idempotency_key, client)
    except BaseException as exc:
        # no row, no job: its input must not wait for the next start-up to be removed. Not while
        # publishing: a cancelled request (server shutdown) leaves the thread running, and the
        # row it may still insert needs the input it moved in
        if not publishing:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, QueueFull):  # filled while this upload was received
            raise UploadRejected(429, *queue_full_answer(exc, store, settings.workers)) from exc
        if out_of_space(exc):
            raise UploadRejected(507, NO_SPACE) from exc
        raise
    finally:
        for path in (staged, sidecar_of(staged), staged_mask):
            discard(path)
