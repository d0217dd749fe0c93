"""A pool of 2 under load: the third request fails fast with 503 db.pool.timeout, then recovers."""

from __future__ import annotations

import asyncio

import aiohttp
import aiopg

from tests.support.client import Api


async def test_pool_of_two_times_out_and_recovers(start_server, new_database, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    db_url = new_database()
    srv = start_server(db_url, name="pool2", env={
        "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "2",
        "RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "0",
        "RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS": "1",
    })
    admin = await Api(http, srv.url).login("admin", "admin-password-123")
    # Every authenticated request reads `sessions`; holding an exclusive lock on it parks the
    # requests that got a connection, so the pool's two connections stay busy.
    async with aiopg.connect(db_url) as locker, locker.cursor() as cur:
        await cur.execute("BEGIN")
        await cur.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        tasks = [asyncio.create_task(admin.get("/api/v1/users/me")) for _ in range(5)]
        done, pending = await asyncio.wait(tasks, timeout=6)
        timed_out = [t.result() for t in done]
        assert len(timed_out) == 3 and len(pending) == 2
        for status, body in timed_out:
            assert status == 503
            assert body["id"] == "db.pool.timeout" and body["status_code"] == 503
        status, body = await Api(http, srv.url).get("/api/v1/health/live")
        assert status == 200  # the process itself stays responsive
        await cur.execute("COMMIT")
    finished = await asyncio.gather(*pending)
    assert [s for s, _ in finished] == [200, 200]
    statuses = [s for s, _ in await asyncio.gather(*(admin.get("/api/v1/users/me") for _ in range(6)))]
    assert statuses == [200] * 6
    assert "pool timed out" in srv.log()
