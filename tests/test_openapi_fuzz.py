"""Generated inputs against the published API description: bad input never becomes a 500.

schemathesis reads `GET /api/v1/openapi.json` from a running server and, for every operation,
sends a deterministic coverage pass (boundary values, each required field missing, wrong types,
unknown fields, undocumented methods) and hypothesis fuzzing with valid and invalid data (positive
and negative modes; strings may hold NUL). Each response must:

- never be a 5xx;
- use a status code that the spec documents for that operation (and match its schema; errors
  the spec's `Error`);
- when it is a 4xx, be a JSON body `{"id", "message", "status_code"}` with `status_code` equal to
  the HTTP status;
- reject the request when schemathesis made it invalid (negative data is never accepted);
- without a token, be a 401 on every protected operation.

Generated ids are often swapped for real ones (a team, channel, post, user and reaction created up
front), so requests get past the 404 for an unknown id and exercise body validation and the
handlers behind it. Further tests send what generators do not: raw bytes (invalid UTF-8, truncated
and deeply nested JSON, 1e999, integers past Python's 4300-digit limit, oversize bodies) to every
operation that takes a body, and odd path segments (NUL, invalid UTF-8, encoded slashes, 4k chars)
in every path parameter.

The fuzzing runs against a server and database of its own, so the junk it creates (users, teams,
site configuration changes such as a connection limit of 1, failed logins counted per address)
cannot leak into the other tests of the session. Its admin token is never revoked: the logout
operation is always called with a freshly issued token of a throw-away user. Generation is
derandomized with a fixed seed and takes no feedback from responses, so a run repeats exactly.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import zlib
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.server import ADMIN_PASSWORD, ADMIN_USER

SEED = 20240611
MAX_EXAMPLES = 30  # per operation and generation mode, in the fuzzing phase
TIMEOUT = 15
LOGOUT = "/api/v1/auth/logout"
ID_RE = re.compile(r"[a-z0-9]{26}")  # fullmatch: the server's ^...$ also lets a trailing newline through


def error_body_check(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is `{"id", "message", "status_code"}` with status_code equal to the HTTP status."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    missing = {"id", "message", "status_code"} - set(body)
    assert not missing, f"{response.status_code} body lacks {sorted(missing)}: {body!r}"
    assert isinstance(body["id"], str) and body["id"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["status_code"] == response.status_code, f"status_code {body['status_code']} != HTTP {response.status_code}"
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, error_body_check]


# -- a server of its own, and the real objects whose ids the fuzzing borrows ---------------------------
class World:
    """Real ids on the fuzz server, plus helpers that restore what destructive calls remove."""

    VICTIM_PASSWORD = "victim-password-123"
    EMOJI = "thumbsup"

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.cases: dict[str, int] = {}  # generated cases seen per operation
        admin = self._login(ADMIN_USER, ADMIN_PASSWORD)
        self.token = admin["token"]
        self.admin_id = admin["user"]["id"]
        self.victim_name = "victim" + secrets.token_hex(4)
        self.victim_id = self.call("POST", "/api/v1/users", {
            "username": self.victim_name, "email": f"{self.victim_name}@example.com",
            "password": self.VICTIM_PASSWORD}, expect=201)["id"]
        self.team_id = self.call("POST", "/api/v1/teams", {"name": "fuzz" + secrets.token_hex(4),
                                                             "display_name": "Fuzz"}, expect=201)["id"]
        self.channel_id = self.call("POST", "/api/v1/channels", {
            "team_id": self.team_id, "name": "fuzz", "display_name": "Fuzz", "type": "public"}, expect=201)["id"]
        self.post_id = self.new_post()
        self.call("POST", f"/api/v1/channels/{self.channel_id}/posts", {"message": "reply", "root_id": self.post_id},
                  expect=201)
        self.restore_memberships()
        self.restore_reaction()

    def _login(self, login_id: str, password: str) -> dict[str, Any]:
        resp = self.http.post(self.url + "/api/v1/auth/login", json={"login_id": login_id, "password": password},
                              timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def call(self, method: str, path: str, body: Any = None, *, expect: int | tuple[int, ...]) -> Any:
        resp = self.http.request(method, self.url + path, json=body, timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {self.token}"})
        allowed = (expect,) if isinstance(expect, int) else expect
        assert resp.status_code in allowed, (method, path, resp.status_code, resp.text)
        return resp.json()

    def new_post(self) -> str:
        return self.call("POST", f"/api/v1/channels/{self.channel_id}/posts", {"message": "fuzz target"},
                         expect=201)["id"]

    def restore_memberships(self) -> None:
        self.call("POST", f"/api/v1/teams/{self.team_id}/members", {"user_id": self.victim_id}, expect=(200, 201))
        self.call("POST", f"/api/v1/channels/{self.channel_id}/members", {"user_id": self.victim_id},
                  expect=(200, 201))

    def restore_reaction(self) -> None:
        self.call("POST", f"/api/v1/posts/{self.post_id}/reactions", {"emoji_name": self.EMOJI}, expect=(200, 201))

    def throwaway_token(self) -> str:
        """A fresh token of a non-admin user, for the logout operation to revoke."""
        return self._login(self.victim_name, self.VICTIM_PASSWORD)["token"]

    def path_value(self, method: str, path: str, name: str) -> str | None:
        """A real value for one path parameter (None when there is none of that kind), after undoing
        what earlier destructive calls removed."""
        if name == "post_id" and method == "delete" and path == "/api/v1/posts/{post_id}":
            return self.new_post()  # each delete gets a post of its own
        if name == "user_id" and method == "delete":
            self.restore_memberships()
        if name == "emoji_name":
            self.restore_reaction()
        return {"team_id": self.team_id, "channel_id": self.channel_id, "post_id": self.post_id,
                "user_id": self.victim_id, "emoji_name": self.EMOJI}.get(name)

    def body_value(self, name: str) -> str | None:
        return {"team_id": self.team_id, "user_id": self.victim_id, "root_id": self.post_id}.get(name)


@pytest.fixture(scope="module")
def fuzz_server(start_server):  # noqa: ANN001, ANN201
    # Generated logins fail by the hundred from 127.0.0.1; keep the per-address lockout out of the way
    # so the fixture's own logins (throw-away tokens for logout) keep working.
    return start_server(name="fuzz", env={
        "RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ADDRESS": "1000000",
        "RUSTCHAT_AUTH__MAX_FAILED_LOGINS_PER_ACCOUNT": "1000000",
    })


@pytest.fixture(scope="module")
def world(fuzz_server) -> World:  # noqa: ANN001
    return World(fuzz_server.url)


def _config() -> Any:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "cache": {"enabled": False},
        "generation": {
            "mode": "all",  # positive and negative data
            "max-examples": MAX_EXAMPLES,
            "allow-x00": True,
            "with-security-parameters": False,  # the test sets Authorization itself
            "database": "none",
        },
        # No feedback from responses into generation: the ids in them differ on every run, and the
        # generated requests must not, so that a failure reproduces.
        "phases": {
            "stateful": {"enabled": False},
            "coverage": {"extra-data-sources": {"responses": False}},
            "fuzzing": {"extra-data-sources": {"responses": False}, "error-feedback": {"enabled": False}},
        },
    })


@pytest.fixture(scope="module")
def api_schema(fuzz_server, world):  # noqa: ANN001, ANN201
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/api/v1/openapi.json", config=_config(),
                                           timeout=TIMEOUT)
    schema.config.update(base_url=fuzz_server.url)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis' lazy (`from_fixture`) runner reads and rewrites `node._nodeid` to label each
    # operation's subtest; pytest 9.2 keeps the node id elsewhere and no longer has that attribute.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _case_seed(case: Any) -> int:
    """A stable number from the generated case, to make this test's own choices reproducible."""
    body = None if isinstance(case.body, NotSet) else case.body
    text = repr((case.method, case.operation.path, case.path_parameters, case.query, body))
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def _use_real_ids(case: Any, world: World, rng: random.Random) -> None:
    """Swap generated ids for real ones: often for ids, sometimes for the emoji name.

    Only values that are valid as generated are swapped (for valid ones), so a negative case stays
    exactly as invalid as schemathesis made it and its checks keep judging it correctly.
    """
    op = case.operation
    if case.path_parameters:
        params = dict(case.path_parameters)
        for name, value in params.items():
            if name.endswith("_id"):
                if _is_valid_id(value) and rng.random() < 0.7:
                    params[name] = world.path_value(op.method, op.path, name) or value
            elif isinstance(value, str) and len(value) <= 64 and rng.random() < 0.3:
                params[name] = world.path_value(op.method, op.path, name) or value
        case.path_parameters = params
    if isinstance(case.body, dict) and rng.random() < 0.6:
        case.body = {k: world.body_value(k) if _is_valid_id(v) and world.body_value(k) else v
                     for k, v in case.body.items()}
    elif isinstance(case.body, list) and case.body and all(map(_is_valid_id, case.body)) and rng.random() < 0.5:
        case.body = [world.admin_id, world.victim_id]


@pytest.mark.usefixtures("_schemathesis_node_id")
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_never_500(case, world: World) -> None:  # noqa: ANN001
    op = case.operation
    # Choices of this test's own (token or none, real ids or generated ones) come from the case and
    # how many cases of this operation came before it: reproducible, and varied even for
    # operations whose every case looks the same (no parameters, no body).
    world.cases[op.label] = n = world.cases.get(op.label, 0) + 1
    rng = random.Random(_case_seed(case) ^ n)
    anonymous = n % 8 == 5
    _use_real_ids(case, world, rng)
    headers = {}
    if not anonymous:
        token = world.throwaway_token() if op.path == LOGOUT else world.token
        headers["Authorization"] = f"Bearer {token}"
    response = case.call(headers=headers, timeout=TIMEOUT)
    case.validate_response(response, checks=CHECKS, headers=headers)
    # Without a token every protected operation is a 401 (a malformed path id may be a 404 first, as
    # it names nothing); not so for the undocumented methods schemathesis also tries on each path.
    well_formed_ids = all(_is_valid_id(v) for k, v in case.path_parameters.items() if k.endswith("_id"))
    if anonymous and op.definition.raw.get("security") and case.method.lower() == op.method and well_formed_ids:
        assert response.status_code == 401, (case.method, op.path, response.status_code, response.text)


# -- raw bytes that no JSON generator produces ----------------------------------------------------------
HUGE_INT = "9" * 5000  # past Python's 4300-digit int conversion limit
DEEP = 100_000
# A valid value for each body field, so that one odd field at a time is what the server sees.
_VALID = {"login_id": "nobody", "password": "password-123", "username": "rawbytes", "email": "raw@example.com",
          "is_admin": False, "name": "rawbytes", "display_name": "Raw", "type": "public", "purpose": "",
          "message": "hello", "emoji_name": "smile", "max_simultaneous_connections": 100, "site_name": "RustChat"}
# JSON text for odd values: bare numbers Python's json module accepts, strings PostgreSQL cannot store.
_ODD_VALUES = {"1e999": "1e999", "-1e999": "-1e999", "NaN": "NaN", "Infinity": "Infinity",
               "huge int": HUGE_INT, "huge negative int": "-" + HUGE_INT, "1.5": "1.5", "-0": "-0",
               "lone surrogate": '"\\ud800"', "NUL": '"a\\u0000b"', "deep list": "[" * 500 + "]" * 500,
               "object": '{"a": 1}', "null": "null", "true": "true", "long string": json.dumps("x" * 100_000)}


def _valid_body(body_schema: dict[str, Any], world: World, *, only_required: bool) -> Any:
    if body_schema.get("type") == "array":
        return [world.admin_id, world.victim_id]
    names = body_schema.get("required", []) if only_required else body_schema.get("properties", {})
    # Fields with no valid value here (root_id, or one added since) are left out: all are optional.
    return {k: world.body_value(k) or _VALID[k] for k in names
            if k != "root_id" and (world.body_value(k) or k in _VALID)}


def _raw_payloads(body_schema: dict[str, Any], world: World) -> list[tuple[str, bytes, str, tuple[int, ...]]]:
    """(name, body, content type, acceptable statuses) for one operation's request body."""
    json_type = "application/json"
    bad = (400,)
    out: list[tuple[str, bytes, str, tuple[int, ...]]] = [
        ("empty body", b"", json_type, bad),
        ("whitespace", b" \r\n\t", json_type, bad),
        ("invalid UTF-8", b'{"message": "\xff\xfe\xfd"}', json_type, bad),
        ("lone continuation byte", b"\x80", json_type, bad),
        ("UTF-8 truncated mid character", b'{"message": "\xe2\x82', json_type, bad),
        ("overlong UTF-8 NUL", b'{"message": "\xc0\x80"}', json_type, bad),
        ("UTF-16 with BOM", '{"message": "x"}'.encode("utf-16"), json_type, bad),
        ("UTF-8 BOM", b'\xef\xbb\xbf{"message": "x"}', json_type, bad),
        ("raw NUL", b"\x00", json_type, bad),
        ("truncated JSON", b'{"message": "hel', json_type, bad),
        ("truncated object", b'{"a": 1,', json_type, bad),
        ("trailing garbage", b'{"a": 1} x', json_type, bad),
        (f"{DEEP} [", b"[" * DEEP, json_type, bad),
        (f"{DEEP} nested arrays, closed", b"[" * DEEP + b"]" * DEEP, json_type, bad),
        (f"{DEEP} nested objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, json_type, bad),
        # Within even a small per-route body limit, still far past the parser's recursion limit.
        ("10000 [", b"[" * 10_000, json_type, bad),
        ("10000 nested objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, json_type, bad),
        ("bare 1e999", b"1e999", json_type, bad),
        ("bare huge int", HUGE_INT.encode(), json_type, bad),
        ("bare NaN", b"NaN", json_type, bad),
        ("null", b"null", json_type, bad),
        ("string", b'"x"', json_type, bad),
        ("number", b"0", json_type, bad),
        ("text/plain", b"hello", "text/plain", (400, 415)),
        ("latin-1 declared", '{"message": "caf\xe9"}'.encode("latin-1"), "application/json; charset=latin-1", bad),
        ("over 1 MiB", b'{"message": "' + b"a" * (1024 * 1024 + 1) + b'"}', json_type, (413,)),
    ]
    if body_schema.get("type") == "array":  # a list of user ids (direct channels)
        for odd, text in _ODD_VALUES.items():
            out.append((f"[{odd}, id]", f'[{text}, "{world.victim_id}"]'.encode(), json_type, bad))
        return out
    props = body_schema.get("properties", {})
    base = _valid_body(body_schema, world, only_required=False)
    for name, prop in props.items():
        for odd, text in _ODD_VALUES.items():
            if text in ("null", "true") and f'"type": "{"null" if text == "null" else "boolean"}"' in json.dumps(prop):
                continue  # a valid value for this field
            doc = json.dumps({**base, name: "@@ODD@@"}).replace('"@@ODD@@"', text)
            out.append((f"{name}={odd}", doc.encode(), json_type, bad))
    out.append(("unknown field", json.dumps({**base, "\ud800": 1}).encode(), json_type, bad))
    out.append(("duplicate keys", b"{" + b'"a": 1, ' * 1000 + b'"a": 2}', json_type, bad))
    return out


def _check_error(resp: Any, allowed: tuple[int, ...]) -> str | None:
    """Why this response is not an acceptable JSON error, or None when it is."""
    if resp.status_code not in allowed:
        return f"status {resp.status_code}, expected {allowed}: {resp.text[:300]}"
    try:
        body = resp.json()
    except ValueError:
        return f"{resp.status_code} body is not JSON: {resp.text[:300]!r}"
    if not isinstance(body, dict) or not {"id", "message", "status_code"} <= set(body):
        return f"{resp.status_code} body is not an error object: {resp.text[:300]}"
    if body["status_code"] != resp.status_code:
        return f"status_code {body['status_code']} != HTTP {resp.status_code}"
    return None


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in spec["paths"].items() for method, op in item.items()]


def _real_path(world: World, method: str, path: str) -> str:
    for name in re.findall(r"{(\w+)}", path):
        path = path.replace("{" + name + "}", world.path_value(method, path, name) or "0" * 26)
    return path


def test_raw_bytes_bodies_are_4xx_json_errors(fuzz_server, world: World) -> None:  # noqa: ANN001
    spec = requests.get(fuzz_server.url + "/api/v1/openapi.json", timeout=TIMEOUT).json()
    failures, sent = [], 0
    with_body = [(m, p, op) for m, p, op in _operations(spec) if "requestBody" in op]
    assert len(with_body) >= 10, [f"{m} {p}" for m, p, _ in with_body]
    for method, path, op in with_body:
        body_schema = op["requestBody"]["content"]["application/json"]["schema"]
        documented = {int(s) for s in op["responses"]}
        for name, payload, ctype, allowed in _raw_payloads(body_schema, world):
            url = fuzz_server.url + _real_path(world, method, path)
            resp = world.http.request(method.upper(), url, data=payload, timeout=TIMEOUT, headers={
                "Authorization": f"Bearer {world.token}", "Content-Type": ctype})
            sent += 1
            if len(payload) > 16 * 1024:
                allowed = (*allowed, 413)  # a route may cap bodies well below the 1 MiB default
            problem = _check_error(resp, allowed)
            if problem is None and resp.status_code not in documented:
                problem = f"status {resp.status_code} is not documented ({sorted(documented)})"
            if problem:
                failures.append(f"{method.upper()} {path} [{name}]: {problem}")
    assert not failures, f"{len(failures)} of {sent} raw requests failed:\n" + "\n".join(failures)


# -- path parameters the generators do not produce ------------------------------------------------------
_ODD_SEGMENTS = {
    "NUL": "%00", "NUL in id": "a" * 25 + "%00", "id with trailing newline": "a" * 26 + "%0A",
    "invalid UTF-8": "%FF%FE", "lone surrogate (CESU)": "%ED%A0%80", "overlong": "%C0%80",
    "4k chars": "a" * 4000, "unicode": "%E2%9C%93" * 30, "upper-case id": "A" * 26,
    "encoded slash": "a%2Fb", "space": "%20", "percent": "%25", "semicolon": "%3B", "query": "%3Fa",
}


def test_odd_path_parameters_are_4xx_json_errors(fuzz_server, world: World) -> None:  # noqa: ANN001
    spec = requests.get(fuzz_server.url + "/api/v1/openapi.json", timeout=TIMEOUT).json()
    failures, sent = [], 0
    for method, path, op in _operations(spec):
        names = re.findall(r"{(\w+)}", path)
        if not names:
            continue
        documented = {int(s) for s in op["responses"]}
        body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        body = _valid_body(body_schema, world, only_required=True) if body_schema else None
        for odd_name in names:
            for label, segment in _ODD_SEGMENTS.items():
                real = _real_path(world, method, path.replace("{" + odd_name + "}", "@@ODD@@"))
                url = fuzz_server.url + real.replace("@@ODD@@", segment)
                resp = world.http.request(method.upper(), url, json=body, timeout=TIMEOUT,
                                          headers={"Authorization": f"Bearer {world.token}"})
                sent += 1
                problem = _check_error(resp, tuple(s for s in documented if s >= 400) + (404,))
                if problem:
                    failures.append(f"{method.upper()} {path} [{odd_name}={label}]: {problem}")
    assert not failures, f"{len(failures)} of {sent} requests failed:\n" + "\n".join(failures)


def test_request_line_over_the_http_limit_is_400(fuzz_server, world: World) -> None:  # noqa: ANN001
    # Past aiohttp's 8190-byte request line the HTTP parser itself answers, before any middleware:
    # a 400, though in text/plain rather than the API's JSON error. Never a 5xx.
    resp = world.http.get(f"{fuzz_server.url}/api/v1/posts/{'a' * 10_000}", timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {world.token}"})
    assert resp.status_code == 400, (resp.status_code, resp.text[:200])
