"""Content types of uploads: what the first bytes say, and what is safe to serve back.

Detection is a short table of magic numbers (no libmagic): enough to tell the common image,
document, archive and media formats apart, to recognise markup that would be dangerous served as
its own type, and to call valid UTF-8 without control characters plain text.
"""

from __future__ import annotations

import re

OCTET_STREAM = "application/octet-stream"

# How many leading bytes detection looks at.
SNIFF_BYTES = 4096

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BM", "image/bmp"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
)

_MARKUP = (
    (re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<svg[\s>]", re.I | re.S), "image/svg+xml"),
    (re.compile(rb"^\s*(<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]|<script[\s>]|<iframe[\s>])", re.I), "text/html"),
    (re.compile(rb"^\s*<\?xml[\s?]", re.I), "application/xml"),
)

_TEXT_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")

# Served with their own Content-Type (always with nosniff); anything else is application/octet-stream.
SAFE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
    "application/pdf", "application/zip", "application/gzip", "application/json",
    "text/plain", "text/csv",
    "audio/mpeg", "audio/ogg", "audio/flac", "audio/wav", "video/mp4", "video/webm",
})
# Shown inline (in the browser) rather than downloaded: raster images, and only when the bytes
# agree with the declared type.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_TOKEN = r"[a-z0-9!#$&^_.+-]{1,127}"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}$")


def detect(head: bytes) -> str:
    """The content type the first bytes of a file show (SNIFF_BYTES or the whole file if shorter)."""
    for magic, ctype in _MAGIC:
        if head.startswith(magic):
            return ctype
    if len(head) >= 12 and head[:4] == b"RIFF":
        kind = head[8:12]
        if kind == b"WEBP":
            return "image/webp"
        if kind == b"WAVE":
            return "audio/wav"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/mp4"
    body = head.removeprefix(b"\xef\xbb\xbf")
    for pattern, ctype in _MARKUP:
        if pattern.match(body):
            return ctype
    if head and _is_text(body, complete=len(head) < SNIFF_BYTES):
        return "text/plain"
    return OCTET_STREAM


def _is_text(data: bytes, *, complete: bool) -> bool:
    if _TEXT_CONTROL.search(data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut by the sniff window is still text.
        return not complete and err.start >= len(data) - 3 and err.reason == "unexpected end of data"
    return True


def normalize_declared(header: str | None) -> str:
    """The media type of a Content-Type header, lower-cased without parameters; junk → octet-stream."""
    if not header:
        return OCTET_STREAM
    value = header.split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.match(value) else OCTET_STREAM


def serving(declared: str, detected: str) -> tuple[str, bool]:
    """(Content-Type to send, whether to show it inline) for a stored file."""
    ctype = declared if declared in SAFE_TYPES else OCTET_STREAM
    inline = declared in INLINE_TYPES and detected == declared
    if ctype == "text/plain" or ctype == "text/csv":
        ctype += "; charset=utf-8"
    return ctype, inline
