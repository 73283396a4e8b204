"""``Cache-Control`` of every answer: only a succeeded job's result files may be stored, privately.

Without it, browsers and proxies fell back on heuristics: a job's status JSON (``queued`` a
second ago) or an error could be reused by a cache, and a shared cache in front of a keyed
server could hand a result to a client without the key. So every answer is ``no-store``
unless its route says otherwise; a result file never changes once its job succeeded (the
attempt's outputs are published in one rename, and job ids are uuid4s, never reused), so the
client may keep it a year without asking again, but only in its own cache (``private``): a
shared cache would also keep serving it after ``DELETE`` or retention removed the job, and
would ignore the API key. ``Vary: X-API-Key`` keeps a browser from showing one key's copy to
a page using another key; ``Vary: Accept-Encoding`` names the gzip negotiation of a type the
gzip layer compresses. The route sets the whole ``Vary``, on the 200, the 206 and the 304 alike
(RFC 9110 15.4.5: a 304 sends the ``Vary`` its 200 would; a cache replaces the stored one with it),
rather than leave ``Accept-Encoding`` to the gzip layer, which adds it only to bodies it sees.
"""
from __future__ import annotations

from starlette.datastructures import MutableHeaders

from api.compression import may_compress
from api.response_headers import ResponseHeadersMiddleware

#: what every answer but a result file gets: job status, lists, errors, /healthz
NO_STORE = "no-store"
#: how long a client may keep a result file without revalidating (the ETag still answers 304)
RESULT_MAX_AGE_S = 365 * 86400
RESULT_CACHE_CONTROL = f"private, max-age={RESULT_MAX_AGE_S}, immutable"


def result_cache_headers(keyed: bool, media_type: str) -> dict[str, str]:
    """The caching headers of a succeeded job's result file or tile of ``media_type`` (its 200, 206
    and 304): ``Cache-Control``, and ``Vary`` naming what else than the URL selects the answer."""
    headers = {"Cache-Control": RESULT_CACHE_CONTROL}
    vary = [name for name, varies in (("X-API-Key", keyed), ("Accept-Encoding", may_compress(media_type))) if varies]
    if vary:
        headers["Vary"] = ", ".join(vary)
    return headers


class NoStoreByDefault(ResponseHeadersMiddleware):
    """``Cache-Control: no-store`` on every HTTP answer that does not set its own, including the
    refusals of the gates around the routes (401, 413, 429)."""

    def edit(self, headers: MutableHeaders) -> None:
        if "cache-control" not in headers:
            headers["Cache-Control"] = NO_STORE
