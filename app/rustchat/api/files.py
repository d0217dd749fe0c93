"""File uploads and downloads.

`POST /api/v1/files?channel_id=<id>` takes the file as the raw request body: its Content-Type is
the declared type, its name comes from `?filename=` or a `Content-Disposition` header. The body
is streamed (through the body-limit counter, 50 MB by default) into a temporary file, then into
a PostgreSQL large object in one short transaction: never held whole in memory, and a slow
uploader never holds a database connection while it sends. Attach files to a post with
`file_ids` when creating it.

`GET /api/v1/files/{file_id}` streams the bytes to whoever may read the channel (the uploader only
until the file is attached to a post; nobody once that post is deleted), with no content
sniffing: the declared type is sent only when it is on a safe list, and only matching raster
images are shown inline; everything else is an attachment download.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from rustchat import filetypes, keys, metrics
from rustchat.api import body_limits
from rustchat.api.access import readable_channel, writable_channel
from rustchat.api.middleware import require_user
from rustchat.api.validation import path_id, query_id
from rustchat.errors import ApiError, bad_request, not_found
from rustchat.store import files

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_NAME = 255
DB_CHUNK = 256 * 1024
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def clean_filename(raw: str) -> str:
    """The last path component, without control/format characters (bidi overrides), ≤ 255 chars."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES).strip()
    if len(name) > MAX_NAME:
        root, ext = os.path.splitext(name)
        name = root[: MAX_NAME - len(ext)] + ext if 0 < len(ext) <= 32 else name[:MAX_NAME]
    if not name or set(name) == {"."}:
        raise bad_request("api.file.invalid_name", "The file name is empty or not usable")
    return name


def _filename(request: web.Request) -> str:
    raw = request.query.get("filename")
    if raw and len(raw) > MAX_NAME:
        # A header's name is shortened (clients send what the file is called); this one is chosen.
        raise bad_request("api.file.invalid_name", f"?filename= is longer than {MAX_NAME} characters")
    if not raw:
        header = request.headers.get("Content-Disposition")
        if header:
            _, params = parse_content_disposition(header)
            raw = content_disposition_filename(params, "filename")
    if not raw:
        raise bad_request("api.file.name_required",
                          "Name the file with ?filename= or a Content-Disposition header")
    return clean_filename(raw)


async def _spool(request: web.Request) -> tuple[IO[bytes], bytes, int]:
    """The body into an anonymous temporary file: (file at offset 0, first bytes, size)."""
    spool = await asyncio.to_thread(tempfile.TemporaryFile, prefix="rustchat-upload-")
    try:
        head = bytearray()
        size = 0
        async for data in body_limits.stream(request):
            if len(head) < filetypes.SNIFF_BYTES:
                head += data[: filetypes.SNIFF_BYTES - len(head)]
            await asyncio.to_thread(spool.write, data)
            size += len(data)
        await asyncio.to_thread(spool.seek, 0)
    except BaseException:
        spool.close()
        raise
    return spool, bytes(head), size


async def _chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while data := await asyncio.to_thread(spool.read, DB_CHUNK):
        yield data


@routes.post("/api/v1/files")
async def upload(request: web.Request) -> web.Response:
    user = require_user(request)
    db = request.app[keys.DB]
    channel_id = query_id(request, "channel_id")
    if channel_id is None:
        raise bad_request("api.file.channel_required", "Query parameter 'channel_id' is required")
    channel = await writable_channel(db, channel_id, user)
    name = _filename(request)
    header = request.headers.get("Content-Type")
    if header and header.split(";", 1)[0].strip().lower().startswith("multipart/"):
        raise ApiError(415, "api.file.multipart", "Send the file itself as the request body, not a multipart form")
    declared = filetypes.normalize_declared(header)
    spool, head, size = await _spool(request)
    try:
        row = await files.create(db, channel_id=channel["id"], user_id=user["id"], name=name,
                                 declared_type=declared, detected_type=filetypes.detect(head),
                                 chunks=_chunks(spool))
    finally:
        spool.close()
    metrics.FILES_UPLOADED.inc()
    metrics.FILE_UPLOAD_BYTES.inc(size)
    log.info("file %s stored: %d bytes, declared %s, detected %s", row["id"], size, declared, row["detected_type"])
    return web.json_response(files.public(row), status=201)


async def _readable_file(request: web.Request) -> dict[str, Any]:
    user = require_user(request)
    db = request.app[keys.DB]
    row = await files.get(db, path_id(request, "file_id", "file"))
    if row is None or row["post_deleted"]:
        raise not_found("file")
    if row["post_id"] is None and row["user_id"] != user["id"] and not user["is_admin"]:
        raise not_found("file")  # not shared yet
    try:
        await readable_channel(db, row["channel_id"], user)
    except ApiError as err:
        if err.status == 404:
            raise not_found("file") from None
        raise
    return row


def content_disposition(name: str, inline: bool) -> str:
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\%' else "_" for ch in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@routes.get("/api/v1/files/{file_id}")
async def download(request: web.Request) -> web.StreamResponse:
    row = await _readable_file(request)
    ctype, inline = filetypes.serving(row["declared_type"], row["detected_type"])
    response = web.StreamResponse(headers={
        "Content-Type": ctype,
        "Content-Disposition": content_disposition(row["name"], inline),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private",
    })
    response.content_length = row["size"]
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        async for chunk in files.read(request.app[keys.DB], row["lo_oid"], row["size"]):
            await response.write(chunk)
    except ConnectionError:
        raise  # the client went away
    except Exception:
        # The headers are out: the only honest signal left is a short body on a closed connection.
        log.exception("download of file %s failed part-way", row["id"])
        response.force_close()
        return response
    await response.write_eof()
    return response


@routes.get("/api/v1/files/{file_id}/info")
async def info(request: web.Request) -> web.Response:
    row = await _readable_file(request)
    return web.json_response(files.public(row))
