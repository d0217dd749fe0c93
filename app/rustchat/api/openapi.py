"""`GET /api/v1/openapi.json`: the HTTP API described from the same pydantic models that validate it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from rustchat import __version__
from rustchat.api.accounts import CreateUserBody, LoginBody
from rustchat.api.admin import SiteBody
from rustchat.api.channels import CreateChannelBody, DirectBody
from rustchat.api.posts import CreatePostBody, EditPostBody, ReactionBody
from rustchat.api.read_state import ViewBody
from rustchat.api.status import StatusIdsBody
from rustchat.api.teams import CreateTeamBody, MemberBody
from rustchat.api.validation import IdsBody

routes = web.RouteTableDef()

ID = {"type": "string", "pattern": "^[a-z0-9]{26}$"}
ERROR = {
    "type": "object",
    "required": ["id", "message", "status_code"],
    "properties": {"id": {"type": "string"}, "message": {"type": "string"}, "status_code": {"type": "integer"},
                   "details": {"type": "object"}},
}

# (method, path, summary, request body model, success status, error statuses, query parameters)
Op = tuple[str, str, str, type[BaseModel] | None, int, tuple[int, ...], tuple[dict[str, Any], ...]]
# allowEmptyValue: the server takes `?limit=` (empty) as if the parameter were absent.
_Q_LIMIT = {"name": "limit", "in": "query", "allowEmptyValue": True, "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
_Q_SINCE = {"name": "since", "in": "query", "allowEmptyValue": True, "schema": {"type": "integer", "minimum": 0}}
_Q_BEFORE = {"name": "before", "in": "query", "allowEmptyValue": True, "schema": ID}
_Q_PAGE = {"name": "page", "in": "query", "allowEmptyValue": True, "schema": {"type": "integer", "minimum": 0, "maximum": 100000}}
_Q_PER_PAGE = {"name": "per_page", "in": "query", "allowEmptyValue": True, "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
_Q_CHANNEL_ID = {"name": "channel_id", "in": "query", "required": True, "schema": ID}
_Q_FILENAME = {"name": "filename", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 255}}

OPERATIONS: tuple[Op, ...] = (
    ("post", "/api/v1/auth/login", "Log in by username or email", LoginBody, 200, (400, 401, 429), ()),
    ("post", "/api/v1/auth/logout", "Revoke the token used", None, 200, (401,), ()),
    ("post", "/api/v1/users", "Create a user (admin)", CreateUserBody, 201, (400, 401, 403, 409), ()),
    ("get", "/api/v1/users", "List users", None, 200, (400, 401), (_Q_PAGE, _Q_PER_PAGE)),
    ("get", "/api/v1/users/me", "The caller", None, 200, (401,), ()),
    ("post", "/api/v1/users/ids", "Up to 200 users by id, in the order asked", IdsBody, 200, (400, 401), ()),
    ("get", "/api/v1/users/{user_id}", "A user", None, 200, (401, 404), ()),
    ("get", "/api/v1/users/{user_id}/status", "A user's presence (online/offline)", None, 200, (401, 404), ()),
    ("post", "/api/v1/users/status/ids", "Presence of up to 200 users", StatusIdsBody, 200, (400, 401), ()),
    ("post", "/api/v1/admin/connections/enforce-limit", "Close this process's connections over the limit (admin)",
     None, 200, (401, 403), ()),
    ("get", "/api/v1/users/me/channels", "The caller's channels", None, 200, (401,), ()),
    ("get", "/api/v1/users/me/channel_members", "The caller's memberships with unread counts", None, 200, (401,), ()),
    ("post", "/api/v1/channels/members/me/view", "Mark a channel read", ViewBody, 200, (400, 401, 403, 404), ()),
    ("post", "/api/v1/teams", "Create a team", CreateTeamBody, 201, (400, 401, 409), ()),
    ("get", "/api/v1/teams", "The caller's teams", None, 200, (401,), ()),
    ("get", "/api/v1/teams/{team_id}", "A team", None, 200, (401, 403, 404), ()),
    ("get", "/api/v1/teams/{team_id}/members", "A team's members", None, 200, (401, 403, 404), ()),
    ("get", "/api/v1/teams/{team_id}/channels", "Channels of a team visible to the caller", None, 200, (401, 403, 404), ()),
    ("post", "/api/v1/teams/{team_id}/members", "Add a team member", MemberBody, 201, (400, 401, 403, 404), ()),
    ("delete", "/api/v1/teams/{team_id}/members/{user_id}", "Remove a team member", None, 200, (401, 403, 404), ()),
    ("post", "/api/v1/channels", "Create a channel", CreateChannelBody, 201, (400, 401, 403, 404, 409), ()),
    ("post", "/api/v1/channels/direct", "Open a direct message channel", DirectBody, 201, (400, 401, 403), ()),
    ("get", "/api/v1/channels/{channel_id}", "A channel", None, 200, (401, 404), ()),
    ("get", "/api/v1/channels/{channel_id}/members", "A channel's members", None, 200, (401, 404), ()),
    ("post", "/api/v1/channels/{channel_id}/members", "Add a channel member", MemberBody, 201, (400, 401, 403, 404), ()),
    ("delete", "/api/v1/channels/{channel_id}/members/{user_id}", "Remove a channel member", None, 200, (400, 401, 403, 404), ()),
    ("post", "/api/v1/channels/{channel_id}/posts", "Post in a channel", CreatePostBody, 201, (400, 401, 403, 404), ()),
    ("get", "/api/v1/channels/{channel_id}/posts", "A page of posts, newest first", None, 200, (400, 401, 404),
     (_Q_SINCE, _Q_BEFORE, _Q_LIMIT)),
    ("get", "/api/v1/posts/{post_id}", "A post", None, 200, (401, 404), ()),
    ("put", "/api/v1/posts/{post_id}", "Edit a post (author or admin)", EditPostBody, 200, (400, 401, 403, 404), ()),
    ("delete", "/api/v1/posts/{post_id}", "Delete a post (author or admin)", None, 200, (401, 403, 404), ()),
    ("get", "/api/v1/posts/{post_id}/thread", "A thread", None, 200, (401, 404), ()),
    ("get", "/api/v1/posts/{post_id}/reactions", "A post's reactions", None, 200, (401, 404), ()),
    ("post", "/api/v1/posts/ids/reactions", "Reactions of up to 200 posts (unreadable ones left out)", IdsBody, 200,
     (400, 401), ()),
    ("post", "/api/v1/posts/{post_id}/reactions", "React to a post", ReactionBody, 201, (400, 401, 403, 404), ()),
    ("delete", "/api/v1/posts/{post_id}/reactions/{emoji_name}", "Remove a reaction", None, 200, (401, 403, 404), ()),
    ("get", "/api/v1/admin/config", "Server configuration (admin)", None, 200, (401, 403), ()),
    ("put", "/api/v1/admin/config/site", "Change server configuration (admin)", SiteBody, 200, (400, 401, 403), ()),
    ("get", "/api/v1/health", "Health: database, Redis, connections, cluster nodes", None, 200, (503,), ()),
    ("get", "/api/v1/health/live", "Liveness", None, 200, (), ()),
    ("get", "/api/v1/health/ready", "Readiness", None, 200, (503,), ()),
    ("post", "/api/v1/files", "Upload a file: the raw request body, its Content-Type the declared type, named by "
     "?filename= or Content-Disposition; up to 50 MB", None, 201, (400, 401, 403, 404, 413, 415),
     (_Q_CHANNEL_ID, _Q_FILENAME)),
    ("get", "/api/v1/files/{file_id}", "Download a file (attachment unless a safe image; nosniff)", None, 200,
     (401, 404), ()),
    ("get", "/api/v1/files/{file_id}/info", "A file's metadata", None, 200, (401, 404), ()),
)
# Responses that are the file itself rather than JSON.
_BINARY_OK = {("get", "/api/v1/files/{file_id}")}

_STATUS_TEXT = {200: "OK", 201: "Created", 400: "Bad request", 401: "Not authenticated", 403: "Forbidden",
                404: "Not found", 409: "Conflict", 413: "Body too large", 415: "Unsupported media type",
                429: "Too many requests", 503: "Unavailable"}
_PUBLIC = {"/api/v1/auth/login", "/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready"}
# Idempotent adds: 201 when created, 200 when the membership, reaction or direct channel already existed.
_ALSO_200 = {("post", "/api/v1/teams/{team_id}/members"), ("post", "/api/v1/channels/{channel_id}/members"),
             ("post", "/api/v1/channels/direct"), ("post", "/api/v1/posts/{post_id}/reactions")}


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, ok, errors, query in OPERATIONS:
        params = [{"name": p.strip("{}"), "in": "path", "required": True,
                   "schema": {"type": "string", "maxLength": 64} if p == "{emoji_name}" else ID}
                  for p in path.split("/") if p.startswith("{")]
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.removeprefix('/api/v1/').replace('/', '_').replace('{', '').replace('}', '')}",
            "parameters": params + list(query),
            "responses": {str(ok): {"description": _STATUS_TEXT[ok], "content": {"application/json": {"schema": {}}}}},
        }
        if (method, path) in _BINARY_OK:
            op["responses"][str(ok)]["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        if (method, path) in _ALSO_200:
            op["responses"]["200"] = {"description": "Already existed", "content": {"application/json": {"schema": {}}}}
        for status in sorted({*errors, 413, 415} if body else set(errors)):
            op["responses"][str(status)] = {"description": _STATUS_TEXT[status],
                                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body.model_json_schema()}}}
        if path not in _PUBLIC:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "RustChat API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_SPEC: dict[str, Any] | None = None


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    global _SPEC
    if _SPEC is None:
        _SPEC = build()
    return web.json_response(_SPEC)
