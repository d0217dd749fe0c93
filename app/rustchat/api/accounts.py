"""Login, logout, users."""

from __future__ import annotations

from aiohttp import web

from rustchat import keys
from rustchat.api.client_address import client_address
from rustchat.api.middleware import TOKEN, require_admin, require_user
from rustchat.api.validation import (
    Body,
    IdsBody,
    Text,
    path_id,
    query_int,
    read_body,
    read_json_value,
    validate,
)
from rustchat.auth import login_limits, passwords, tokens
from rustchat.errors import ApiError, not_found
from rustchat.realtime import revocation
from rustchat.store import users

routes = web.RouteTableDef()

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"


class LoginBody(Body):
    login_id: Text(1, 254)
    password: Text(1, 256)


class CreateUserBody(Body):
    username: Text(1, 64, USERNAME_PATTERN)
    email: Text(3, 254, EMAIL_PATTERN)
    password: Text(passwords.MIN_PASSWORD_LENGTH, 256)
    is_admin: bool = False


def _limits(request: web.Request) -> login_limits.LoginLimits:
    s = request.app[keys.SETTINGS]
    return login_limits.LoginLimits(
        s.login_max_failures_per_account, s.login_max_failures_per_address, s.login_failure_window_secs
    )


@routes.post("/api/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    db = request.app[keys.DB]
    account = body.login_id.lower()
    address = client_address(request)
    limits = _limits(request)
    wait = await login_limits.retry_after(db, limits, account, address)
    if wait is not None:
        raise ApiError(
            429, "api.login.too_many_attempts", f"Too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    user = await users.for_login(db, body.login_id)
    if not await passwords.verify_password(user["password_hash"] if user else None, body.password):
        await login_limits.record_failure(db, limits, account, address)
        raise ApiError(401, "api.login.invalid_credentials", "Invalid login or password")
    await login_limits.clear_account(db, account)
    token = await tokens.issue(db, user["id"], request.app[keys.SETTINGS].token_ttl_secs)
    return web.json_response({"token": token, "user": users.public(user)}, headers={"Cache-Control": "no-store"})


@routes.post("/api/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    require_user(request)
    token = request[TOKEN]
    await tokens.revoke(request.app[keys.DB], token)
    # Sockets opened with this token stop receiving at once, on every process.
    await revocation.revoke(request.app, tokens.digest(token))
    return web.json_response({"status": "OK"})


@routes.post("/api/v1/users")
async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, CreateUserBody)
    pw_hash = await passwords.hash_password(body.password)
    row = await users.create(request.app[keys.DB], body.username, body.email, pw_hash, is_admin=body.is_admin)
    return web.json_response(users.public(row), status=201)


@routes.get("/api/v1/users/me")
async def me(request: web.Request) -> web.Response:
    return web.json_response(users.public(require_user(request)))


@routes.get("/api/v1/users")
async def list_users(request: web.Request) -> web.Response:
    require_user(request)
    page = query_int(request, "page", 0, 0, 100000)
    per_page = query_int(request, "per_page", 60, 1, 200)
    rows = await users.list_page(request.app[keys.DB], page, per_page)
    return web.json_response([users.public(r) for r in rows])


@routes.post("/api/v1/users/ids")
async def users_by_ids(request: web.Request) -> web.Response:
    """Up to 200 users at once (a client naming the authors on its screen), in the order asked."""
    require_user(request)
    ids = validate(IdsBody, await read_json_value(request)).root
    rows = await users.by_ids(request.app[keys.DB], ids) if ids else []
    return web.json_response([users.public(r) for r in rows])


@routes.get("/api/v1/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    require_user(request)
    row = await users.get(request.app[keys.DB], path_id(request, "user_id", "user"))
    if row is None:
        raise not_found("user")
    return web.json_response(users.public(row))
