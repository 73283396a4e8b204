"""The clients' own API keys (``GEOSEG_API_KEYS_FILE``): one line per client, ``NAME KEY``.

Why: with one key for every partner, any key holder listed, read and deleted every job. A client
whose key is in this file sees only the jobs its key submitted; ``GEOSEG_API_KEY``, if set too, is
the operator's key, which sees them all. Keys are compared in constant time and never logged or
echoed in an error (a line is named by its number).
"""
from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

#: a client's name: what the job table and the server's log (``job ID queued for client NAME``) record; at most
#: 23 characters, under ``MIN_KEY_LENGTH``: a key written first is never taken for a name
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,22}")
#: shortest key accepted: a guessable key is a shared one (``openssl rand -hex 12`` gives 24)
MIN_KEY_LENGTH = 24

ClientKeys = tuple[tuple[str, str], ...]


def parse_client_keys(text: str, source: str = "GEOSEG_API_KEYS_FILE") -> ClientKeys:
    """``(name, key)`` pairs of ``text``: ``NAME KEY`` a line, blank lines and ``#`` comments skipped (a
    third word starting with ``#`` too); ``ValueError`` naming ``source`` and the line for a malformed
    line, a name or key given twice, or a key under ``MIN_KEY_LENGTH`` characters or outside visible
    ASCII (a header cannot carry it). A malformed line's words are never quoted: written key first, its
    first word is a key."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip().lstrip("\ufeff")  # PowerShell 5's UTF-8 begins with a byte-order mark
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        fields = line.split()
        if len(fields) > 2 and fields[2].startswith("#"):  # alice KEY  # main office
            fields = fields[:2]
        if len(fields) != 2:
            raise ValueError(f"{where}: expected 'NAME KEY' (two words), found {len(fields)} word(s)")
        name, key = fields
        if not CLIENT_NAME.fullmatch(name):
            raise ValueError(f"{where}: the first word is no client name, 1-23 letters, digits, '_', '.', '@' or "
                             f"'-' starting with a letter or digit (the name comes first: NAME KEY)")
        if len(key) < MIN_KEY_LENGTH or not all("\x21" <= c <= "\x7e" for c in key):
            raise ValueError(f"{where}: the key (the second word) must be at least {MIN_KEY_LENGTH} visible ASCII "
                             f"characters (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe())'`)")
        if any(name == other for other, _ in pairs):
            raise ValueError(f"{where}: client {name!r} is named twice")
        if any(key == other for _, other in pairs):
            raise ValueError(f"{where}: the key of {name!r} is another client's too: each client needs its own")
        pairs.append((name, key))
    return tuple(pairs)


def read_client_keys(path: Path) -> ClientKeys:
    """``parse_client_keys`` of the file at ``path``; ``ValueError`` when it cannot be read or lists no key
    (a server meant to be keyed must not start open)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"GEOSEG_API_KEYS_FILE={str(path)!r} cannot be read: {exc}") from exc
    pairs = parse_client_keys(text, f"GEOSEG_API_KEYS_FILE {path}")
    if not pairs:
        raise ValueError(f"GEOSEG_API_KEYS_FILE={str(path)!r} lists no client ('NAME KEY' a line)")
    info = Path(path).stat()
    # the keys of every partner, readable by other users; not by a group of this process's own (a Kubernetes
    # Secret mounted 0440 with the pod's fsGroup, which cannot be chmod'ed): its members run as this server
    own_group = info.st_gid in {os.getgid(), *os.getgroups()}
    if info.st_mode & stat.S_IRWXO or (info.st_mode & stat.S_IRWXG and not own_group):
        logging.getLogger("geoseg.api").warning(
            "GEOSEG_API_KEYS_FILE %s can be read by other users (mode %o): chmod 600 it", path,
            stat.S_IMODE(info.st_mode))
    return pairs
