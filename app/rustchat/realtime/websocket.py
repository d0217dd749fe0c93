"""`GET /api/v1/websocket`: authentication, hello, resume, client actions.

Frames the server sends are produced by the hub (events) or here (hello, replies); all of them
go through the session's socket writer (realtime.outbox), so this handler's only job on the read
side is to parse client actions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from rustchat import __version__, keys, metrics
from rustchat.api.middleware import TOKEN, TOKEN_REJECTED, USER
from rustchat.auth import tokens
from rustchat.db.pool import DatabaseUnavailable
from rustchat.errors import ApiError
from rustchat.ids import ID_RE
from rustchat.realtime import events, resume
from rustchat.realtime.events import Broadcast, Event, encode
from rustchat.realtime.outbox import SocketWriter
from rustchat.realtime.session import Session
from rustchat.store import channels, teams

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

LIMITER: web.AppKey[Any] = web.AppKey("connection_limiter")
CHALLENGE_TIMEOUT = 10.0
RECORD_WAIT_TRIES = 15  # 3 s
_background: set[asyncio.Task] = set()
TYPING_MIN_INTERVAL = 1.0

CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_INTERNAL = 1011
CLOSE_GOING_AWAY = 1001
CLOSE_REPLACED = 4000
CLOSE_TOO_MANY = 4029


def _default_port(scheme: str) -> str:
    return {"http": "80", "https": "443", "ws": "80", "wss": "443"}.get(scheme, "")


def _hostport(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    if ":" not in netloc.rsplit("]", 1)[-1]:
        netloc = f"{netloc}:{_default_port(scheme)}"
    return netloc


def origin_allowed(request: web.Request) -> bool:
    """Same-origin (the Host the browser connected to), the public URL, or an allowed origin.

    Browsers always send Origin on WebSocket upgrades, so this is what stops another site's page
    from opening a socket with a user's token (cross-site WebSocket hijacking).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser; it authenticates with its token like any API client
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    settings = request.app[keys.SETTINGS]
    canonical = f"{parts.scheme}://{parts.netloc}".lower()
    if canonical in settings.allowed_origins:
        return True
    if settings.public_url:
        pub = urlsplit(settings.public_url)
        if canonical == f"{pub.scheme}://{pub.netloc}".lower():
            return True
    host = request.headers.get("Host", "")
    # The scheme is not compared: behind a TLS-terminating proxy the app sees http.
    return bool(host) and parts.netloc.split(":")[0].lower() == host.split(":")[0].lower() and (
        _hostport(parts.netloc, parts.scheme) == _hostport(host, parts.scheme)
        or _hostport(parts.netloc, parts.scheme) == _hostport(host, request.scheme)
    )


def _reply(seq: Any, ok: bool = True, *, data: dict | None = None, error: tuple[str, str] | None = None) -> bytes:
    out: dict[str, Any] = {"status": "OK" if ok else "FAIL", "seq_reply": seq if isinstance(seq, int) else None}
    if data is not None:
        out["data"] = data
    if error is not None:
        out["error"] = {"id": error[0], "message": error[1]}
    return encode(out)


def _hello(app: web.Application, session: Session) -> bytes:
    return encode({
        "event": events.HELLO,
        "seq": 0,
        "data": {"connection_id": session.id, "node_id": app[keys.NODE_ID], "server_version": __version__},
        "broadcast": {"channel_id": "", "team_id": "", "user_id": session.user_id},
    })


def _resume_params(request: web.Request) -> tuple[str | None, int | None]:
    conn_id = request.query.get("connection_id") or None
    if conn_id is not None and not ID_RE.match(conn_id):
        conn_id = None  # not one of ours: a new connection, as for one that expired
    raw = request.query.get("sequence_number")
    try:
        seq = int(raw) if raw is not None else None
    except ValueError:
        seq = None
    return conn_id, seq


async def _challenge(ws: web.WebSocketResponse, app: web.Application) -> tuple[dict, str, Any] | None:
    try:
        msg = await asyncio.wait_for(ws.receive(), CHALLENGE_TIMEOUT)
    except TimeoutError:
        await ws.close(code=CLOSE_POLICY, message=b"authentication required")
        return None
    if msg.type != WSMsgType.TEXT:
        await ws.close(code=CLOSE_POLICY, message=b"authentication required")
        return None
    try:
        req = json.loads(msg.data)
        seq = req.get("seq")
        token = req["data"]["token"] if req.get("action") == "authentication_challenge" else None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        req, seq, token = None, None, None
    if not isinstance(seq, int) or isinstance(seq, bool):
        seq = None  # echoed in the reply: only what was valid
    if not isinstance(token, str):
        await ws.send_str(_reply(seq, False, error=("api.websocket.auth_required", "Send authentication_challenge first")).decode())
        await ws.close(code=CLOSE_POLICY, message=b"authentication required")
        return None
    user = await tokens.resolve(app[keys.DB], token)
    if user is None:
        await ws.send_str(_reply(seq, False, error=("api.unauthorized", "Invalid or expired token")).decode())
        await ws.close(code=CLOSE_POLICY, message=b"invalid token")
        return None
    return user, token, seq


class _Claim:
    """The outcome of matching a connect to a session: resumed or new, and what to send first."""

    def __init__(self, session: Session, resumed: bool, missed: list[bytes], needs_load: bool) -> None:
        self.session = session
        self.resumed = resumed
        self.missed = missed
        self.needs_load = needs_load


def _find_resumable(hub, user_id: str, conn_id: str | None, last_seq: int | None) -> _Claim | None:  # noqa: ANN001
    if conn_id is None or last_seq is None:
        return None
    session = hub.sessions.get(conn_id)
    if session is None or session.user_id != user_id:
        return None
    missed = session.missed_since(last_seq)
    if missed is None:
        return None
    return _Claim(session, True, missed, False)


async def _resume_record(app: web.Application, conn_id: str) -> dict | None:
    """The saved state of a connection that closed on some node (cluster mode only)."""
    redis = app[keys.REDIS]
    me = app[keys.NODE_ID]

    def pending(record: dict | None) -> bool:
        # The old node saves the record just after its socket closed (a fast reconnect may beat
        # it); a record still marked taken by another node means that node has not saved yet.
        if record is None:
            return conn_id not in app[keys.HUB].sessions
        return bool(record.get("taken")) and record.get("node") != me

    record = await resume.load(redis, conn_id)
    for _ in range(RECORD_WAIT_TRIES):
        if not pending(record):
            break
        await asyncio.sleep(0.2)
        record = await resume.load(redis, conn_id)
    return record


async def _resume_elsewhere(app: web.Application, user: dict, token: str, record: dict, last_seq: int) -> _Claim | None:
    """Rebuild a connection that lived on another node from the cluster's replay log."""
    hub = app[keys.HUB]
    session = hub.new_session(user["id"], tokens.digest(token), session_id=record["_id"])
    session.hold()
    try:
        current = (set(await channels.channel_ids_for_user(app[keys.DB], user["id"])),
                   set(await teams.team_ids_for_user(app[keys.DB], user["id"])))
        hub.loaded(session, *current)
        replayed = await resume.replay(app[keys.REDIS], record, last_seq, current)
    except BaseException:
        hub.remove(session)
        raise
    if replayed is None:
        hub.remove(session)
        return None
    await resume.mark_taken(app[keys.REDIS], session.id, app[keys.NODE_ID], app[keys.SETTINGS].ws_resume_window_secs)
    missed = session.restore(int(record["seq"]), replayed)
    log.info("session %s resumed from node %s: %d events replayed", session.id, record["node"], len(missed))
    return _Claim(session, True, missed, False)


async def _claim(request: web.Request, user: dict, token: str) -> _Claim | None:
    """Resume or create a session within the user's connection limit; None when over it."""
    app = request.app
    hub = app[keys.HUB]
    limiter = app[LIMITER]
    limit = app[keys.SITE].max_simultaneous_connections
    conn_id, last_seq = _resume_params(request)
    record = None
    if conn_id and last_seq is not None and app[keys.CLUSTER] is not None:
        record = await _resume_record(app, conn_id)
    # A local session is authoritative unless another node has taken the connection over since.
    local_ok = record is None or record.get("node") == app[keys.NODE_ID]
    claim = _find_resumable(hub, user["id"], conn_id, last_seq) if local_ok else None
    if claim is None and record and not record.get("taken") and record.get("user_id") == user["id"]:
        if not await limiter.acquire(user["id"], conn_id, limit):
            return None
        record["_id"] = conn_id
        claim = await _resume_elsewhere(app, user, token, record, last_seq)
        if claim is None:
            await limiter.release(user["id"], conn_id)
        else:
            return claim
    if claim is not None:
        if claim.session.attached:
            return claim  # the same connection on a new socket: no new slot
        if not await limiter.acquire(user["id"], claim.session.id, limit):
            return None
        return claim
    session = hub.new_session(user["id"], tokens.digest(token))
    if not await limiter.acquire(user["id"], session.id, limit):
        hub.remove(session)
        return None
    return _Claim(session, False, [], True)


def _limit_error(request: web.Request) -> ApiError:
    limit = request.app[keys.SITE].max_simultaneous_connections
    return ApiError(
        429, "api.websocket.too_many_connections",
        f"Too many simultaneous connections: the limit is {limit} per user",
        details={"max_simultaneous_connections": limit},
    )


@routes.get("/api/v1/websocket")
async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[keys.SETTINGS]
    hub = app[keys.HUB]
    if not origin_allowed(request):
        raise ApiError(403, "api.websocket.origin_forbidden", "WebSocket origin not allowed")
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_ping_interval_secs,
        receive_timeout=settings.ws_idle_timeout_secs,
        compress=settings.ws_compression,
        max_msg_size=settings.ws_max_frame_bytes,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "api.websocket.upgrade_required", "This endpoint only accepts WebSocket upgrades")

    if request.get(TOKEN_REJECTED):
        raise ApiError(401, "api.unauthorized", "Invalid or expired token")
    user, token, challenge_seq = request.get(USER), request.get(TOKEN), None
    claim = None
    if user is not None:
        claim = await _claim(request, user, token)
        if claim is None:
            raise _limit_error(request)
    try:
        stream = await ws.prepare(request)
        if claim is None:
            auth = await _challenge(ws, app)
            if auth is None:
                return ws
            user, token, challenge_seq = auth
            claim = await _claim(request, user, token)
            if claim is None:
                err = _limit_error(request)
                await ws.send_str(_reply(challenge_seq, False, error=(err.error_id, err.message)).decode())
                await ws.close(code=CLOSE_TOO_MANY, message=b"too many connections")
                return ws
        session = claim.session
        if claim.needs_load:
            try:
                hub.loaded(
                    session,
                    await channels.channel_ids_for_user(app[keys.DB], user["id"]),
                    await teams.team_ids_for_user(app[keys.DB], user["id"]),
                )
            except DatabaseUnavailable as exc:
                # The upgrade is done: no JSON error can follow, only a close code.
                log.warning("closing new WebSocket of user %s: database unavailable: %s", user["id"], exc)
                await ws.close(code=CLOSE_INTERNAL, message=b"database unavailable")
                return ws
        elif session.attached:
            old = session.detach()
            if old is not None:
                asyncio.get_running_loop().create_task(old.close(code=CLOSE_REPLACED, message=b"resumed elsewhere"))
        backlog = ([_reply(challenge_seq)] if challenge_seq is not None else []) + [_hello(app, session)] + claim.missed
        session.attach(SocketWriter(ws, request, stream, hub.outbox, max_pending=session.send_queue,
                                    on_overflow=session.overflowed), backlog)
        log.debug("session %s of user %s %s", session.id, user["id"], "resumed" if claim.resumed else "opened")
        await _read_loop(request, ws, session, user)
    finally:
        if claim is not None:
            session = claim.session
            # Unless a newer socket has taken this session over, it is detached (kept for the
            # resume window) and its slot under the connection limit is given back.
            if session.ws is ws or session.ws is None:
                session.detach()
                await app[LIMITER].release(session.user_id, session.id)
                _save_for_resume(app, session)
    return ws


async def saves_finished(timeout: float) -> None:
    """Let resume records of just-closed sockets reach Redis before the cluster link stops."""
    if _background:
        await asyncio.wait(list(_background), timeout=timeout)


def _save_for_resume(app: web.Application, session: Session) -> None:
    link = app[keys.CLUSTER]
    if link is None or app[keys.REDIS] is None or session.id not in app[keys.HUB].sessions:
        return
    snap = resume.snapshot(session, link)
    task = asyncio.get_running_loop().create_task(
        resume.save(app[keys.REDIS], link, snap, app[keys.NODE_ID], app[keys.SETTINGS].ws_resume_window_secs)
    )
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _read_loop(request: web.Request, ws: web.WebSocketResponse, session: Session, user: dict) -> None:
    typing_at: dict[str, float] = {}
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _handle_action(request, session, user, msg.data, typing_at)
            elif msg.type == WSMsgType.BINARY:
                await ws.close(code=CLOSE_UNSUPPORTED, message=b"binary frames are not supported")
                return
            elif msg.type == WSMsgType.ERROR:
                log.debug("session %s socket error: %s", session.id, ws.exception())
                return
    except TimeoutError:
        # Nothing at all, not even a pong, for RUSTCHAT_WS__IDLE_TIMEOUT_SECS.
        log.debug("session %s idle for %.0f s: closing", session.id, request.app[keys.SETTINGS].ws_idle_timeout_secs)
        await ws.close(code=CLOSE_GOING_AWAY, message=b"idle timeout")


def _handle_action(request: web.Request, session: Session, user: dict, text: str, typing_at: dict[str, float]) -> None:
    try:
        req = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested thousands deep
        _refuse(session, None, "api.websocket.invalid_json", "Frame is not valid JSON")
        return
    if not isinstance(req, dict):
        _refuse(session, None, "api.websocket.invalid_message", "Frame must be a JSON object")
        return
    seq = req.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        _refuse(session, None, "api.websocket.invalid_seq", "'seq' must be an integer")
        return
    action = req.get("action")
    data = req.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _refuse(session, seq, "api.websocket.invalid_data", "'data' must be an object")
        return
    if action == "ping":
        session.send_control(_reply(seq, data={"text": "pong", "version": __version__, "node_id": request.app[keys.NODE_ID]}))
    elif action == "authentication_challenge":
        session.send_control(_reply(seq))
    elif action == "user_typing":
        channel_id = data.get("channel_id")
        parent_id = data.get("parent_id", "")
        if not isinstance(channel_id, str) or channel_id not in session.channels:
            _refuse(session, seq, "api.websocket.not_member", "Not a member of that channel")
            return
        # An id or nothing: anything else (a lone surrogate, say) would reach every member's socket.
        if not isinstance(parent_id, str) or (parent_id and not ID_RE.match(parent_id)):
            _refuse(session, seq, "api.websocket.invalid_data", "'parent_id' must be a post id")
            return
        session.send_control(_reply(seq))
        now = time.monotonic()
        if now - typing_at.get(channel_id, 0.0) < TYPING_MIN_INTERVAL:
            return  # typing is advisory; a client that repeats it faster gains nothing
        typing_at[channel_id] = now
        request.app[keys.PUBLISHER].publish(
            Event(events.TYPING, {"user_id": user["id"], "parent_id": parent_id},
                  Broadcast(channel_id=channel_id, omit_user_id=user["id"]))
        )
    else:
        _refuse(session, seq, "api.websocket.unknown_action", f"Unknown action {str(action)[:64]!r}")


def _refuse(session: Session, seq: Any, error_id: str, message: str) -> None:
    """Answer a frame that is refused at the edge, and count it by why."""
    metrics.WS_INVALID_FRAMES.labels(error_id.rsplit(".", 1)[-1]).inc()
    session.send_control(_reply(seq, False, error=(error_id, message)))
