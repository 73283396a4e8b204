"""Service settings: one frozen dataclass, read from ``GEOSEG_*`` environment variables.

`geoseg serve` turns its command-line options into these variables, so the app
factory can be started by uvicorn from an import string (no ``geoseg -> api``
import) and every worker sees the same configuration.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from api.client_keys import ClientKeys, parse_client_keys, read_client_keys

DEFAULT_RUNNER = "api.pipeline_runner:run_pipeline"

T = TypeVar("T", int, float)


def _env_number(name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
    """``parse`` of the variable ``name``; ``default`` when it is unset or blank, and a one-line
    ``ValueError`` naming the variable when it is not ``kind``."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not {kind}") from exc


def _client_keys_from_env() -> ClientKeys:
    """The clients' keys of ``GEOSEG_API_KEYS_FILE``; set but empty is an error, not an open server (a compose
    file's unset ``${KEYS_FILE}`` started one over every partner's jobs)."""
    path = os.environ.get("GEOSEG_API_KEYS_FILE")
    if path is None:
        return ()
    if not path.strip():
        raise ValueError("GEOSEG_API_KEYS_FILE is set but empty: name the clients' keys file, or unset it")
    return read_client_keys(Path(path))


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def _env_flag(name: str, default: bool) -> bool:
    """A yes/no variable: 1, true, yes, on or 0, false, no, off (any case); ``default`` when unset or blank.
    Why: ``GEOSEG_STANDBY=on`` (or a typo) was taken for off without a word."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={os.environ[name]!r} is not a yes/no value (1, true, yes, on / 0, false, no, off)")


#: a web origin: scheme://host[:port], as a browser sends it in ``Origin``
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+")
#: an origin standing for a host's subdomains (preview deploys): scheme://*.host[:port]
_SUBDOMAINS = re.compile(r"[a-z][a-z0-9+.-]*://\*\.[^/\s?#*]+")


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told; limits guard the machine against hostile uploads."""

    data_dir: Path = Path("geoseg-data")
    #: the operator's key: it opens every job (``GEOSEG_API_KEY``)
    api_key: str | None = field(default=None, repr=False)
    #: the clients' own keys, (name, key) pairs (``GEOSEG_API_KEYS_FILE``, ``api.client_keys``): each
    #: client sees only the jobs its key submitted
    client_keys: ClientKeys = field(default=(), repr=False)
    workers: int = 1
    max_upload_bytes: int = 2 * 1024**3
    max_side: int = 100_000
    max_pixels: int = 1_000_000_000
    sync_max_pixels: int = 4_000_000
    sync_timeout_s: float = 300.0
    #: seconds without a byte of an upload still coming before it is answered 408 and its part removed
    #: (0: no limit)
    upload_idle_s: float = 60.0
    max_attempts: int = 3
    heartbeat_s: float = 2.0
    stale_after_s: float = 120.0
    #: one attempt running longer is killed and the job failed (0: no limit); a heartbeat only
    #: proves the process lives, not that it advances
    job_timeout_s: float = 86400.0
    #: hours a job is kept once it ended (succeeded or failed), then removed with its files by
    #: the supervisor; 0 keeps every job until it is DELETEd (nothing accepted vanishes unasked)
    retention_hours: float = 0.0
    #: most jobs waiting in the queue (0: no limit); a submission beyond it gets 429
    max_queued: int = 100
    poll_s: float = 0.2
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    runner: str = DEFAULT_RUNNER
    #: a folder of the operator's own models (``geoseg train`` cards and weights) jobs may name;
    #: None: the shipped models only
    models_dir: Path | None = None
    standby: bool = False  # measured: no throughput gain on 2 cores, +360 MiB idle

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.models_dir is not None:
            object.__setattr__(self, "models_dir", Path(self.models_dir))
        if self.api_key is not None and (self.api_key != self.api_key.strip() or not self.api_key.isprintable()):
            # HTTP strips a header value's ends: "secret\n" (a secret file written with echo) refused every client
            raise ValueError("api_key (GEOSEG_API_KEY) begins or ends with a space or line break, or holds a control "
                             "character: no client can send it in a header (e.g. a secret file written with echo: "
                             "use printf)")
        if self.api_key == "":  # a keyed server (the gate, 401s) that let a request without the header in
            raise ValueError("api_key (GEOSEG_API_KEY) is empty: unset it for an open server, or give a key")
        # settings made in code skip the file's reader: the same checks (duplicates gave a job a wrong owner)
        parsed = parse_client_keys("\n".join(f"{name} {key}" for name, key in self.client_keys), "client_keys")
        if len(parsed) != len(self.client_keys):  # a name starting with '#' read as a comment: one server open
            raise ValueError("client_keys: a client's name must start with a letter or digit")
        object.__setattr__(self, "client_keys", parsed)
        if self.api_key is not None and any(key == self.api_key for _, key in self.client_keys):
            raise ValueError("GEOSEG_API_KEY is a client's key too (GEOSEG_API_KEYS_FILE): the operator's key "
                             "opens every job and must be its own")
        for origin in self.cors_origins:
            if origin in ("*", "null") or (_ORIGIN.fullmatch(origin) and "*" not in origin):  # null: a page from a file
                continue
            if not _SUBDOMAINS.fullmatch(origin):
                # "https://a.example/" never matched: a browser sends its origin without a path; nor did
                # "https://app-*.example" (a wildcard stands only for the leading labels of a host)
                raise ValueError(f"cors_origins (GEOSEG_CORS_ORIGINS): {origin!r} is not an origin, "
                                 f"scheme://host[:port] without a path or a trailing '/', or scheme://*.host[:port] "
                                 f"for its subdomains")
        if self.workers < 1:
            raise ValueError("workers (GEOSEG_WORKERS) must be >= 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts (GEOSEG_MAX_ATTEMPTS) must be >= 1")
        if min(self.max_upload_bytes, self.max_side, self.max_pixels, self.sync_max_pixels) < 1:
            raise ValueError("size limits (GEOSEG_MAX_UPLOAD_MB, GEOSEG_MAX_SIDE, GEOSEG_MAX_PIXELS, "
                             "GEOSEG_SYNC_MAX_PIXELS) must be positive")
        # NaN passes every comparison below (a NaN job timeout never fired, a negative sync timeout
        # answered every /v1/segment with a 202): each duration must be a finite number first
        for name, var in (("sync_timeout_s", "GEOSEG_SYNC_TIMEOUT_S"), ("heartbeat_s", "GEOSEG_HEARTBEAT_S"),
                          ("stale_after_s", "GEOSEG_STALE_AFTER_S"), ("job_timeout_s", "GEOSEG_JOB_TIMEOUT_S"),
                          ("upload_idle_s", "GEOSEG_UPLOAD_IDLE_S")):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} ({var}) must be a finite number of seconds")
        if self.sync_timeout_s <= 0 or self.heartbeat_s <= 0:
            raise ValueError("sync_timeout_s (GEOSEG_SYNC_TIMEOUT_S) and heartbeat_s (GEOSEG_HEARTBEAT_S) "
                             "must be > 0")
        if self.upload_idle_s < 0:
            raise ValueError("upload_idle_s (GEOSEG_UPLOAD_IDLE_S) must be >= 0 (0: no limit)")
        if self.job_timeout_s < 0:
            raise ValueError("job_timeout_s (GEOSEG_JOB_TIMEOUT_S) must be >= 0 (0: no limit)")
        if self.max_queued < 0:
            raise ValueError("max_queued (GEOSEG_MAX_QUEUED) must be >= 0 (0: no limit)")
        if not (math.isfinite(self.retention_hours) and self.retention_hours >= 0):
            raise ValueError("retention_hours (GEOSEG_RETENTION_HOURS) must be a number >= 0 "
                             "(0: keep finished jobs until they are deleted)")
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError("stale_after_s (GEOSEG_STALE_AFTER_S) must exceed heartbeat_s "
                             "(GEOSEG_HEARTBEAT_S)")

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        """Read ``GEOSEG_*`` variables; keyword overrides win (used by tests and the CLI)."""
        d = cls()
        cors = os.environ.get("GEOSEG_CORS_ORIGINS", "")
        settings = cls(
            data_dir=Path(os.environ.get("GEOSEG_SERVICE_DIR", str(d.data_dir))),
            api_key=os.environ.get("GEOSEG_API_KEY") or None,
            client_keys=_client_keys_from_env(),
            workers=_env_int("GEOSEG_WORKERS", d.workers),
            max_upload_bytes=_env_int("GEOSEG_MAX_UPLOAD_MB", d.max_upload_bytes // 1024**2) * 1024**2,
            max_side=_env_int("GEOSEG_MAX_SIDE", d.max_side),
            max_pixels=_env_int("GEOSEG_MAX_PIXELS", d.max_pixels),
            sync_max_pixels=_env_int("GEOSEG_SYNC_MAX_PIXELS", d.sync_max_pixels),
            sync_timeout_s=_env_float("GEOSEG_SYNC_TIMEOUT_S", d.sync_timeout_s),
            upload_idle_s=_env_float("GEOSEG_UPLOAD_IDLE_S", d.upload_idle_s),
            max_attempts=_env_int("GEOSEG_MAX_ATTEMPTS", d.max_attempts),
            heartbeat_s=_env_float("GEOSEG_HEARTBEAT_S", d.heartbeat_s),
            stale_after_s=_env_float("GEOSEG_STALE_AFTER_S", d.stale_after_s),
            job_timeout_s=_env_float("GEOSEG_JOB_TIMEOUT_S", d.job_timeout_s),
            retention_hours=_env_float("GEOSEG_RETENTION_HOURS", d.retention_hours),
            max_queued=_env_int("GEOSEG_MAX_QUEUED", d.max_queued),
            cors_origins=tuple(o.strip() for o in cors.split(",") if o.strip()),
            runner=os.environ.get("GEOSEG_RUNNER", d.runner),
            models_dir=Path(os.environ["GEOSEG_MODELS_DIR"]) if os.environ.get("GEOSEG_MODELS_DIR") else None,
            standby=_env_flag("GEOSEG_STANDBY", d.standby),
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def keyed(self) -> bool:
        """Whether ``/v1`` needs a key (the operator's or a client's)."""
        return self.api_key is not None or bool(self.client_keys)

    def key_of(self, client: str | None) -> str | None:
        """The key that signs ``client``'s jobs' tile URLs: its own, else the operator's (None: the operator;
        a client removed from the file: its jobs stay the operator's, whose maps drew none of their tiles)."""
        return dict(self.client_keys).get(client, self.api_key) if client is not None else self.api_key

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
