"""Health and readiness when PostgreSQL goes away and comes back (a throwaway server we can stop)."""

from __future__ import annotations

import aiohttp

from tests.support.client import Api
from tests.support.services import PostgresInstance, fresh_database
from tests.support.wait import wait_for


async def test_database_down_then_back(start_server, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    pg = PostgresInstance()
    pg.start()
    try:
        url, _drop = fresh_database(pg.url)
        srv = start_server(url, name="health-db", env={"RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS": "1"})
        api = Api(http, srv.url)
        status, body = await api.get("/api/v1/health")
        assert status == 200 and body["status"] == "ok" and body["database"]["ok"] is True

        pg.stop()
        status, body = await api.get("/api/v1/health")
        assert status == 503 and body["status"] == "degraded" and body["database"]["ok"] is False
        assert "database unreachable" in body["problems"]
        status, ready = await api.get("/api/v1/health/ready")
        assert status == 503 and "database unreachable" in ready["problems"]
        assert (await api.get("/api/v1/health/live"))[0] == 200
        status, err = await api.post("/api/v1/auth/login", {"login_id": "admin", "password": "x" * 10})
        assert status == 503 and err["id"] in ("db.unavailable", "db.pool.timeout")

        pg.start()
        await wait_for(lambda: _ready(api), timeout=30)
        status, body = await api.get("/api/v1/health")
        assert status == 200 and body["database"]["ok"] is True
        await api.login("admin", "admin-password-123")  # serving again, no restart
    finally:
        pg.close()


async def _ready(api: Api) -> bool:
    return (await api.get("/api/v1/health/ready"))[0] == 200
