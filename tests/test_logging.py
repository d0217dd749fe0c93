"""Log filters (RUST_LOG syntax), JSON lines and request ids, on a real server process."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from rustchat.logconfig import LogFilterError, parse_filter
from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER


def test_filter_syntax() -> None:
    default, targets = parse_filter("warn,rustchat::realtime=debug,rustchat.db=error")
    assert default == logging.WARNING
    assert targets == {"rustchat.realtime": logging.DEBUG, "rustchat.db": logging.ERROR}
    with pytest.raises(LogFilterError):
        parse_filter("info,rustchat=chatty")


async def test_json_lines_with_request_ids_and_module_filter(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    srv = start_server(env={"RUSTCHAT_LOG_FORMAT": "json", "RUST_LOG": "info,rustchat::realtime=debug",
                            "RUSTCHAT_LOG": ""}, name="json-logs")
    admin = await Api(http, srv.url).login(ADMIN_USER, ADMIN_PASSWORD)
    ws = await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {admin.token}",
                                                    "X-Request-Id": "trace-me-123"})
    await ws.receive(timeout=5)
    await ws.close()
    async with http.get(srv.url + "/api/v1/health/live") as resp:
        generated = resp.headers["X-Request-Id"]
    assert generated and generated != "trace-me-123"
    records = []
    for line in srv.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # every log line is one JSON object
    opened = [r for r in records if "opened" in r["message"] and r["target"] == "rustchat.realtime.websocket"]
    assert opened and opened[0]["request_id"] == "trace-me-123" and opened[0]["level"] == "debug"
    assert not [r for r in records if r["level"] == "debug" and not r["target"].startswith("rustchat.realtime")]
