"""Receive a multipart upload's file parts straight into the service's uploads folder.

Why: Starlette's form parser spools each file part to a ``SpooledTemporaryFile``, which past
1 MiB lands in the system temp folder (often a small tmpfs, or the container's own layer); the
upload was then copied into the data dir. A multi-GB scene needed that much room in /tmp, was
written twice, and one bigger than /tmp was refused with a parse error though the data dir had
room. Here each file part is written once, as it arrives, to ``uploads/part-<uuid>``, and
``api.intake`` moves it into place (``received_path``). Form fields are parsed with
python-multipart's streaming parser (the one Starlette drives), with Starlette's limits.

The upload routes get it through their router's ``route_class`` (``UploadsDirRoute``): FastAPI's
documented hook for a custom ``Request``; the endpoints, their ``UploadFile`` parameters and so
the OpenAPI schema are unchanged.
"""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import io
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException

from api.validate import too_large

PART_PREFIX = "part-"


class PartFile(io.FileIO):
    """A file part as received, in the uploads folder: removed when closed (the request's end, or
    a failed parse), unless moved away first (``api.intake`` renames it into its job)."""

    def close(self) -> None:
        if not self.closed:
            super().close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        """All of ``data``, or an ``OSError``. A raw file's ``write`` may write part of its bytes and
        say how many: on a nearly full disk the rest was dropped without a word, and the client was
        told its GeoTIFF was truncated (400) instead of the server's disk being full (507); the
        write of the rest raises ``ENOSPC``."""
        view = memoryview(data).cast("B")
        size = view.nbytes
        while view:
            written = super().write(view)
            if not written:  # no progress and no error: the disk took nothing
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            view = view[written:]
        return size


class PartUpload(UploadFile):
    """An ``UploadFile`` over a ``PartFile``: closed in a worker thread, as Starlette closes a file
    on disk, but at once while its request is being cancelled (a server stopping, ``api.shutdown``).
    uvicorn does not wait for a cancelled request: FastAPI's awaited close of the form's files (a
    ``/v1/segment`` waiting for its job, an upload being checked) outlived the process, so the client
    got no answer instead of the JSON 503."""

    async def close(self) -> None:
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+; on 3.10 the awaited close, as before
        if cancelling is not None and cancelling():
            self.file.close()
        else:
            await super().close()


def received_path(upload: UploadFile) -> Path | None:
    """Where ``upload``'s bytes lie if this module received them (complete, not yet synced)."""
    return Path(upload.file.name) if isinstance(upload.file, PartFile) and not upload.file.closed else None


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


class _Part:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.disposition = b""
        self.name = ""
        self.data = bytearray()
        self.upload: UploadFile | None = None


class UploadsDirParser:
    """python-multipart callbacks building a ``FormData``: fields in memory (each at most
    ``max_part_size``), file parts written to ``folder`` (each at most ``max_file_bytes``: 413)."""

    def __init__(self, charset: str, folder: Path, max_file_bytes: int, max_files: float, max_fields: float,
                 max_part_size: int) -> None:
        self.charset, self.folder, self.max_file_bytes = charset, folder, max_file_bytes
        self.max_files, self.max_fields, self.max_part_size = max_files, max_fields, max_part_size
        self.items: list[tuple[str, str | UploadFile]] = []
        self.files: list[PartFile] = []
        self.pending: list[tuple[UploadFile, bytes]] = []  # written by ``parse``, off the event loop
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._counts = {"files": 0, "fields": 0}
        self._writing = threading.Lock()  # a write in a worker thread and ``close_all`` never overlap

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_name.lower()
        if name == b"content-disposition":
            self._part.disposition = self._header_value
        self._part.headers.append((name, self._header_value))
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        if b"name" not in options:
            raise MultiPartException('The Content-Disposition header field "name" must be provided.')
        self._part.name = _decode(options[b"name"], self.charset)
        kind, limit = ("files", self.max_files) if b"filename" in options else ("fields", self.max_fields)
        self._counts[kind] += 1
        if self._counts[kind] > limit:
            raise MultiPartException(f"Too many {kind}. Maximum number of {kind} is {limit}.")
        if kind == "files":
            path = self.folder / f"{PART_PREFIX}{uuid.uuid4()}"
            handle = PartFile(path, "x+")
            self.files.append(handle)
            self._part.upload = PartUpload(file=handle, size=0,  # type: ignore[arg-type]
                                           filename=_decode(options[b"filename"], self.charset),
                                           headers=Headers(raw=self._part.headers))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        upload = self._part.upload
        if upload is None:
            if len(self._part.data) + end - start > self.max_part_size:
                raise MultiPartException(f"Part exceeded maximum size of {self.max_part_size // 1024}KB.")
            self._part.data += data[start:end]
            return
        upload.size = (upload.size or 0) + end - start
        if upload.size > self.max_file_bytes:
            rejected = too_large(self.max_file_bytes)
            raise HTTPException(rejected.status_code, rejected.detail, headers={"Connection": "close"})
        self.pending.append((upload, data[start:end]))

    def on_part_end(self) -> None:
        upload = self._part.upload
        self.items.append((self._part.name, upload if upload is not None else _decode(self._part.data, self.charset)))

    def write_pending(self) -> None:
        """Write the file bytes parsed from one chunk of the body (in a worker thread)."""
        with self._writing:
            for upload, data in self.pending:
                if not upload.file.closed:  # a cancelled request closed it while this write waited
                    upload.file.write(data)
            self.pending.clear()

    def close_all(self) -> None:
        with self._writing:
            for handle in self.files:
                handle.close()


async def receive_form(headers: Headers, stream: AsyncIterator[bytes], folder: Path, max_file_bytes: int, *,
                       max_files: float = 1000, max_fields: float = 1000, max_part_size: int = 1024 * 1024) -> FormData:
    """Parse a ``multipart/form-data`` body from ``stream``, its file parts written to ``folder``,
    each rewound for reading. On any failure (a malformed body: ``MultiPartException``; a part over
    ``max_file_bytes``: 413; a full disk; the client gone; the request cancelled) every file part
    written so far is removed."""
    _, params = parse_options_header(headers.get("Content-Type", ""))
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    if b"boundary" not in params:
        raise MultiPartException("Missing boundary in multipart.")
    receiver = UploadsDirParser(charset, folder, max_file_bytes, max_files, max_fields, max_part_size)
    try:
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
        async for chunk in stream:
            parser.write(chunk)
            if receiver.pending:
                await run_in_threadpool(receiver.write_pending)
        parser.finalize()
        for handle in receiver.files:
            handle.seek(0)
    except BaseException as exc:
        if isinstance(exc, Exception):
            await run_in_threadpool(receiver.close_all)
        else:  # cancelled: a server stopping. At once, no await: uvicorn does not wait for a cancelled
            # request, and the process ended during an awaited clean-up: the part stayed, no 503 was sent
            receiver.close_all()
        if isinstance(exc, FormParserError):
            raise MultiPartException("Invalid multipart data.") from exc
        raise
    return FormData(receiver.items)


#: file parts a request may send: the routes take ``file`` and ``mask``, and two more are read so that a part sent
#: twice or misnamed is a 422 naming it. Each part is a file held open while the request lasts, and Starlette's
#: 1000 let one slow request of 1000 parts take a 1024-file limit: every other upload, the job table and
#: /healthz failed until it ended
MAX_FILE_PARTS = 4
#: form fields a request may send: the routes take seven (``refine``, ``profile``, ...); an unknown one is a 422
#: naming it, up to this many
MAX_FIELDS = 32


class UploadsDirRequest(Request):
    """A request whose multipart form is received by ``receive_form`` into the service's uploads
    folder (``Settings.uploads_dir``), never the system temp folder; other bodies as Starlette reads them."""

    async def form(self, *, max_files: float = MAX_FILE_PARTS, max_fields: float = MAX_FIELDS,  # type: ignore[override]
                   max_part_size: int = 1024 * 1024) -> FormData:
        if self._form is None:
            content_type, _ = parse_options_header(self.headers.get("Content-Type", ""))
            if content_type != b"multipart/form-data":
                return await super().form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
            settings = self.app.state.settings
            settings.uploads_dir.mkdir(parents=True, exist_ok=True)
            try:
                async with aclosing(self.stream()) as stream:
                    self._form = await receive_form(self.headers, stream, settings.uploads_dir,
                                                    settings.max_upload_bytes, max_files=max_files,
                                                    max_fields=max_fields, max_part_size=max_part_size)
            except MultiPartException as exc:  # as Starlette answers a body its parser refuses
                raise HTTPException(400, exc.message) from exc
        return self._form


class UploadsDirRoute(APIRoute):
    """The route class of the upload routers: their handler gets an ``UploadsDirRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def receiving_handler(request: Request) -> Response:
            return await handler(UploadsDirRequest(request.scope, request.receive))

        return receiving_handler
