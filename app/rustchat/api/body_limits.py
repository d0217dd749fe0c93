"""Request body limits per route category, enforced before the body is read past the limit.

| category | default | routes |
|---|---|---|
| small  | 64 KB  | auth, user status, health, and every simple query (GET, HEAD, OPTIONS, DELETE) |
| medium | 1 MB   | posts, users, channels, teams, webhooks, admin config — any other route |
| large  | 50 MB  | file uploads (`/api/v1/files`) and imports (`/api/v1/imports`) |

(`RUSTCHAT_BODY_LIMIT__SMALL` / `__MEDIUM` / `__LARGE` change them; the appliance's nginx uses the same
categories with limits at or above these, so the app stays the authority.)

A request over its limit is answered with 413 `api.body_too_large` and `Connection: close`:

* a declared `Content-Length` over the limit is refused before the handler runs, without reading
  any of the body;
* a chunked body is cut off once more than the limit has arrived: `request.read()` (and so every
  JSON body) stops there because the middleware lowers aiohttp's `client_max_size` to the route's
  limit, and handlers that stream (uploads) read through `stream()`, which counts as it goes.

aiohttp keeps at most its read buffer (READ_BUFSIZE, plus one socket read) of an unread body in
memory and pauses the socket beyond that, so an oversized upload costs the server a flat amount of
memory however big it is. The connection is closed after the 413, so the rest of the body is never taken for a
next request. Routes of the large category must stream their body (`stream()`), never
`request.read()` it whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from aiohttp import web

from rustchat import keys, metrics
from rustchat.api.middleware import Handler, json_error
from rustchat.config import Settings
from rustchat.errors import ApiError

SMALL, MEDIUM, LARGE = "small", "medium", "large"

# The limit that applies to this request (bytes), for handlers that stream.
LIMIT = "rustchat.body_limit"

# aiohttp's per-connection read buffer for request bodies (its `read_bufsize`, default 64 KB; the
# socket is paused at twice this). With many large uploads at once, what each connection holds
# is this plus one socket read (256 KB), so a small value keeps memory flat; JSON bodies are
# unaffected (request.read() raises the buffer to the route's limit).
READ_BUFSIZE = 16 * 1024
# Pieces handed to streaming handlers (uploads).
STREAM_CHUNK = 64 * 1024

_LARGE_PREFIXES = ("/api/v1/files", "/api/v1/imports")
_SMALL_PREFIXES = ("/api/v1/auth/", "/api/v1/health")
_STATUS = re.compile(r"^/api/v1/users/([^/]+/status|status/ids)$")
# Simple queries carry no body worth the name.
_QUERY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def category(method: str, path: str) -> str:
    if method.upper() in _QUERY_METHODS:
        return SMALL
    if path.startswith(_SMALL_PREFIXES) or _STATUS.match(path):
        return SMALL
    if any(path == p or path.startswith(p + "/") for p in _LARGE_PREFIXES):
        return LARGE
    return MEDIUM


def limit_of(request: web.Request, kind: str) -> int:
    settings = request.app[keys.SETTINGS]
    return {SMALL: settings.body_limit_small, MEDIUM: settings.body_limit_medium,
            LARGE: settings.body_limit_large}[kind]


def largest(settings: Settings) -> int:
    """aiohttp's application-wide client_max_size: the middleware lowers it per request."""
    return max(settings.body_limit_small, settings.body_limit_medium, settings.body_limit_large)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "api.body_too_large",
                    f"Request body too large: the limit for this route is {limit} bytes")


def _refuse(kind: str, limit: int) -> web.Response:
    metrics.BODY_TOO_LARGE.labels(kind).inc()
    response = json_error(too_large(limit))
    # The unread rest of the body must not be parsed as a next request: close the connection.
    response.force_close()
    return response


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = category(request.method, request.path)
    limit = limit_of(request, kind)
    declared = request.content_length
    if declared is not None and declared > limit:
        return _refuse(kind, limit)
    request[LIMIT] = limit
    # aiohttp's own read()/json()/post()/multipart() stop once more than this has arrived.
    request._client_max_size = limit  # no public per-request setter
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _refuse(kind, limit)
    except ApiError as err:
        if err.status == 413:
            return _refuse(kind, limit)
        raise


async def stream(request: web.Request, chunk_size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """The request body in pieces of at most `chunk_size` bytes, as it arrives.

    Raises the 413 ApiError as soon as more than the route's limit has arrived; nothing beyond one
    piece and aiohttp's read buffer is ever held.
    """
    limit = request.get(LIMIT, request.client_max_size)
    received = 0
    async for data in request.content.iter_chunked(chunk_size):
        received += len(data)
        if received > limit:
            raise too_large(limit)
        yield data
