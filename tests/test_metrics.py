"""`GET /metrics`: request histogram by route template, connection and pool gauges, acquire timeouts;
under gunicorn, complete across the workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import aiopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Api
from tests.support.server import ServerProcess
from tests.support.services import RedisInstance

HTTP_COUNT = "rustchat_http_request_duration_seconds_count"


async def scrape(http: aiohttp.ClientSession, srv: ServerProcess) -> list[tuple[str, dict[str, str], float]]:
    async with http.get(srv.url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def values(samples: list, name: str) -> list[tuple[dict[str, str], float]]:
    return [(lab, v) for n, lab, v in samples if n == name]


async def eventually(check: Callable, timeout: float = 10.0):  # noqa: ANN201
    """Poll an async check until it returns something truthy (the gauges are sampled every second)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_metrics_of_one_process(start_server, new_database, http: aiohttp.ClientSession) -> None:  # noqa: ANN001
    db_url = new_database()
    srv = start_server(db_url, name="metrics-single", env={
        "RUSTCHAT_DB_POOL__MAX_CONNECTIONS": "2", "RUSTCHAT_DB_POOL__MIN_CONNECTIONS": "0",
        "RUSTCHAT_DB_POOL__ACQUIRE_TIMEOUT_SECS": "1"})
    admin = await Api(http, srv.url).login("admin", "admin-password-123")
    for _ in range(20):
        assert (await admin.get("/api/v1/users/me"))[0] == 200
    team = await admin.new_team()
    assert (await admin.get(f"/api/v1/teams/{team['id']}"))[0] == 200
    assert (await admin.get("/no/such/route"))[0] == 404
    samples = await scrape(http, srv)
    assert total(samples, HTTP_COUNT, route="/api/v1/users/me", method="GET", status="200") >= 20
    # The route template, never the concrete path.
    assert total(samples, HTTP_COUNT, route="/api/v1/teams/{team_id}", method="GET", status="200") >= 1
    assert not any(team["id"] in lab.get("route", "") for _, lab, _ in samples)
    assert total(samples, HTTP_COUNT, route="unmatched", status="404") >= 1
    assert total(samples, HTTP_COUNT, route="/metrics") == 0
    assert total(samples, "rustchat_db_pool_max") == 2
    assert 0 <= total(samples, "rustchat_db_pool_saturation") <= 1

    # WebSocket connections of this process, sampled when scraped.
    sockets = [await admin.ws(srv.ws_url) for _ in range(3)]
    samples = await scrape(http, srv)
    assert total(samples, "rustchat_ws_connections") == 3
    assert [v for _, v in values(samples, "rustchat_ws_process_connections")] == [3]
    assert total(samples, HTTP_COUNT, route="/api/v1/websocket") == 0  # upgrades are not latencies
    for s in sockets:
        await s.close()
    assert await eventually(lambda: _ws_total(http, srv, 0))

    # A pool of 2 held by requests parked on a lock: full saturation, then acquire timeouts.
    async with aiopg.connect(db_url) as locker, locker.cursor() as cur:
        await cur.execute("BEGIN")
        await cur.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        tasks = [asyncio.create_task(admin.get("/api/v1/users/me")) for _ in range(4)]
        await asyncio.sleep(0.3)
        samples = await scrape(http, srv)
        assert total(samples, "rustchat_db_pool_in_use") == 2
        assert total(samples, "rustchat_db_pool_saturation") == 1.0
        assert total(samples, "rustchat_db_pool_waiting") == 2
        done, _ = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result()[0] for t in done] == [503] * len(done)
        await asyncio.sleep(0.3)
        samples = await scrape(http, srv)
        assert total(samples, "rustchat_db_pool_acquire_timeouts_total") == 2
        assert total(samples, HTTP_COUNT, route="/api/v1/users/me", status="503") == 2
        await cur.execute("COMMIT")
    assert sorted(s for s, _ in await asyncio.gather(*tasks)) == [200, 200, 503, 503]


async def _ws_total(http: aiohttp.ClientSession, srv: ServerProcess, expected: float) -> bool:
    return total(await scrape(http, srv), "rustchat_ws_connections") == expected


# -- gunicorn: one /metrics for all workers --------------------------------------------------------------
def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(p) for p in children}


@pytest.fixture(scope="module")
def redis_server():  # noqa: ANN201
    instance = RedisInstance()
    instance.start()
    yield instance
    instance.stop()


async def test_metrics_sum_every_gunicorn_worker(start_server, new_database, redis_server, tmp_path: Path) -> None:  # noqa: ANN001
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    # Left over from an earlier run: unreadable as metrics, so /metrics would fail if it were kept.
    (metrics_dir / "counter_999999.db").write_bytes(b"not a metrics file")
    srv = start_server(new_database(), name="metrics-gunicorn", gunicorn_workers=2,
                       gunicorn_args=["-c", "python:rustchat.gunicorn_hooks"],
                       env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "RUSTCHAT_REDIS_URL": redis_server.url})
    assert not (metrics_dir / "counter_999999.db").exists()
    workers = await asyncio.to_thread(lambda: _wait_for_workers(srv.pid, 2))
    # A new connection per request, so the requests spread over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        admin = await Api(http, srv.url).login("admin", "admin-password-123")
        # Health names the process that answered: go on until both workers have served requests.
        served: Counter[str] = Counter()
        while sum(served.values()) < 40 or len(served) < 2:
            status, body = await admin.get("/api/v1/health")
            assert status == 200, body
            served[body["node_id"]] += 1
            assert sum(served.values()) < 1000, "requests never reached the second worker"
        n = sum(served.values())

        async def both_workers_reported() -> list | None:
            samples = await scrape(http, srv)
            pids = {int(lab["pid"]) for lab, _ in values(samples, "rustchat_db_pool_max")}
            return samples if pids == workers else None

        samples = await eventually(both_workers_reported)
        assert samples, f"per-process gauges should name both workers {workers}"
        # Neither worker alone served n requests: the count is the sum over both.
        assert max(served.values()) < n
        assert total(samples, HTTP_COUNT, route="/api/v1/health", method="GET", status="200") >= n
        assert {int(lab["pid"]) for lab, _ in values(samples, "rustchat_db_pool_saturation")} == workers

        # WebSocket connections: the node's total over the workers, and one series per worker.
        sockets = [await admin.ws(srv.ws_url) for _ in range(4)]  # within the per-user limit (5)

        async def ws_counted() -> list | None:
            samples = await scrape(http, srv)
            return samples if total(samples, "rustchat_ws_connections") == 4 else None

        samples = await eventually(ws_counted)
        assert samples, "rustchat_ws_connections should sum the sockets of both workers"
        per_process = values(samples, "rustchat_ws_process_connections")
        assert sum(v for _, v in per_process) == 4
        assert {int(lab["pid"]) for lab, _ in per_process} <= workers
        for s in sockets:
            await s.close()

        # A worker dies: gunicorn replaces it, its live gauges go, its counts stay.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        replaced = await asyncio.to_thread(lambda: _wait_for_workers(srv.pid, 2, without=victim))

        async def only_live_workers() -> list | None:
            samples = await scrape(http, srv)
            pids = {int(lab["pid"]) for lab, _ in values(samples, "rustchat_db_pool_max")}
            return samples if pids == replaced else None

        samples = await eventually(only_live_workers, timeout=20)
        assert samples, f"after the kill the per-process gauges should name only {replaced}"
        assert total(samples, HTTP_COUNT, route="/api/v1/health", method="GET", status="200") >= n


def _wait_for_workers(master: int, count: int, *, without: int | None = None, timeout: float = 30.0) -> set[int]:
    """The master's worker pids once there are `count` of them (excluding `without`)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(master) - {without}
        if len(pids) == count:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn has workers {pids}, expected {count}")
        time.sleep(0.1)
