"""Shared fixtures: a real PostgreSQL, real server processes, real HTTP and WebSocket clients.

PostgreSQL comes from RUSTCHAT_TEST_DATABASE_URL when set (CI points it at the machine's server);
otherwise the suite starts a throwaway instance of its own. Either way every test session works
in a database of its own, dropped at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from tests.support.services import PostgresInstance, RedisInstance, fresh_database


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("RUSTCHAT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    instance = PostgresInstance()
    instance.start()
    try:
        yield instance.url
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def new_database(pg_admin_url: str) -> Iterator:
    """Factory: a fresh database URL, dropped at the end of the session."""
    drops = []

    def make() -> str:
        url, drop = fresh_database(pg_admin_url)
        drops.append(drop)
        return url

    yield make
    for drop in drops:
        drop()


@pytest.fixture(scope="session")
def database_url(new_database) -> str:  # noqa: ANN001
    return new_database()


@pytest.fixture(scope="module")
def start_server(new_database) -> Iterator:  # noqa: ANN001
    """Factory for extra server processes, stopped at the end of the test module so a long session
    does not hold on to every server's database connections."""
    started: list[ServerProcess] = []

    def start(database_url: str | None = None, **kw) -> ServerProcess:  # noqa: ANN003
        proc = ServerProcess(database_url or new_database(), **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, name="main")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
async def admin(http: aiohttp.ClientSession, server: ServerProcess) -> Api:
    return await Api(http, server.url).login(ADMIN_USER, ADMIN_PASSWORD)


@pytest.fixture
async def anon(http: aiohttp.ClientSession, server: ServerProcess) -> Api:
    return Api(http, server.url)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisInstance]:
    """A Redis of the module's own, which its tests may stop and restart."""
    instance = RedisInstance()
    instance.start()
    yield instance
    instance.stop()
