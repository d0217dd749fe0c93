"""Request parsing: every body and query parameter is checked before anything touches the database.

Bodies are pydantic models in strict mode with unknown fields forbidden, so a wrong type or a
typo'd field is a 400 that names the field instead of a silently ignored value or a 500.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
)

from rustchat.errors import ApiError, bad_request, not_found
from rustchat.ids import ID_RE


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8: refuse both
    # here so they become a 400 rather than a database error.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def Text(min_length: int = 0, max_length: int = 1024, pattern: str | None = None) -> Any:  # noqa: N802
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern),
        AfterValidator(_storable),
    ]


Id = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{26}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


MAX_IDS = 200


class IdsBody(RootModel[Annotated[list[Id], Field(max_length=MAX_IDS)]]):
    """A JSON array of up to 200 ids (the batch look-ups)."""

    model_config = {"strict": True}


M = TypeVar("M", bound=BaseModel)


def _describe(err: ValidationError) -> tuple[str, list[dict[str, str]]]:
    problems = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append({"field": loc, "problem": msg})
    first = problems[0]
    return f"Invalid request body: {first['field']}: {first['problem']}", problems


def parse_json_bytes(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("api.invalid_utf8", "Request body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        # ValueError beyond JSONDecodeError: an integer longer than Python's int conversion limit
        # (4300 digits) is refused by json.loads with a plain ValueError.
        raise bad_request("api.invalid_json", "Request body is not valid JSON") from None


def validate(model: type[M], obj: Any) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        message, problems = _describe(err)
        raise ApiError(400, "api.invalid_body", message, details={"problems": problems}) from None


async def read_body(request: web.Request, model: type[M]) -> M:
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", ""):
        raise ApiError(415, "api.unsupported_media_type", "Request body must be application/json")
    raw = await request.read()
    if not raw:
        raise bad_request("api.empty_body", "Request body is required")
    return validate(model, parse_json_bytes(raw))


async def read_json_value(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise bad_request("api.empty_body", "Request body is required")
    return parse_json_bytes(raw)


def path_id(request: web.Request, name: str, what: str) -> str:
    """A path id that cannot exist is a 404 for that resource, never a query with junk in it."""
    value = request.match_info[name]
    if not ID_RE.match(value):
        raise not_found(what)
    return value


def query_int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("api.invalid_query", f"Query parameter {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise bad_request("api.invalid_query", f"Query parameter {name!r} must be between {lo} and {hi}")
    return value


def query_id(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not ID_RE.match(raw):
        raise bad_request("api.invalid_query", f"Query parameter {name!r} is not a valid id")
    return raw
