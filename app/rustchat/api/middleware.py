"""Request middlewares: request id, JSON errors, bearer authentication."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from rustchat import keys
from rustchat.auth import tokens
from rustchat.db.pool import DatabaseUnavailable, PoolTimeout
from rustchat.errors import ApiError
from rustchat.logconfig import request_id

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

USER = "user"
TOKEN = "token"
TOKEN_REJECTED = "token_rejected"  # a bearer token was sent and is unknown, expired or revoked


def json_error(err: ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


_HTTP_IDS = {
    404: ("api.not_found", "No such route"),
    405: ("api.method_not_allowed", "Method not allowed on this route"),
    413: ("api.body_too_large", "Request body too large"),
}


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() and " " not in incoming else secrets.token_hex(8)
    token = request_id.set(rid)
    try:
        response = await handler(request)
    finally:
        request_id.reset(token)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return json_error(err)
    except PoolTimeout:
        log.warning("request %s %s failed: database pool timed out", request.method, request.path)
        return json_error(
            ApiError(503, "db.pool.timeout", "The database is busy; try again shortly", headers={"Retry-After": "1"})
        )
    except DatabaseUnavailable as exc:
        log.error("request %s %s failed: database unavailable: %s", request.method, request.path, exc)
        return json_error(
            ApiError(503, "db.unavailable", "The database is unavailable", headers={"Retry-After": "5"})
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error_id, message = _HTTP_IDS.get(exc.status, (f"api.http_{exc.status}", exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_error(ApiError(exc.status, error_id, message, headers=headers))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(ApiError(500, "api.internal_error", "Internal server error"))


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = bearer_token(request)
    if token is not None:
        user = await tokens.resolve(request.app[keys.DB], token)
        if user is None:
            # Refused where a user is required (require_user); routes anyone may use (health,
            # login, the web client) answer as to no token at all: a load balancer's probe or a
            # login form with a stale token is not unauthorized.
            request[TOKEN_REJECTED] = True
        else:
            request[USER] = user
            request[TOKEN] = token
    return await handler(request)


def require_user(request: web.Request) -> dict:
    user = request.get(USER)
    if user is None:
        if request.get(TOKEN_REJECTED):
            raise ApiError(401, "api.unauthorized", "Invalid or expired token")
        raise ApiError(401, "api.unauthorized", "Authentication required: send Authorization: Bearer <token>")
    return user


def require_admin(request: web.Request) -> dict:
    user = require_user(request)
    if not user["is_admin"]:
        raise ApiError(403, "api.forbidden", "System administrator permission required")
    return user
