"""The test harness's throwaway PostgreSQL and Redis: start, stop, kill, restart, fresh databases."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psycopg2
import pytest
import redis

from rustchat.db import embedded
from tests.support.services import PostgresInstance, RedisInstance, free_port, fresh_database


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresInstance]:
    with PostgresInstance() as instance:
        yield instance


def _scalar(url: str, query: str) -> object:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_postgres_stop_kill_restart(pg: PostgresInstance) -> None:
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    _scalar(pg.url, "CREATE TABLE IF NOT EXISTS survives (v int); INSERT INTO survives VALUES (1)")

    pg.stop()
    assert not _port_open(pg.port)
    with pytest.raises(psycopg2.OperationalError):
        _scalar(pg.url, "SELECT 1")
    pg.start()
    assert _scalar(pg.url, "SELECT count(*) FROM survives") == 1

    pid = embedded.postmaster_pid(pg.pgdata)
    pg.kill()
    assert not embedded.process_alive(pid)
    assert not _port_open(pg.port)
    pg.restart()  # crash recovery
    assert _scalar(pg.url, "SELECT count(*) FROM survives") == 1
    assert _scalar(pg.url, "SHOW fsync") == "off"


def test_create_database(pg: PostgresInstance) -> None:
    url = pg.create_database("harness_named")
    assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/harness_named"
    assert _scalar(url, "SELECT current_database()") == "harness_named"


def test_fresh_database_is_created_and_dropped(pg: PostgresInstance) -> None:
    url, drop = fresh_database(pg.url, prefix="harness")
    name = url.rsplit("/", 1)[1]
    assert name.startswith("harness_")
    holder = psycopg2.connect(url)  # DROP ... WITH (FORCE) must not wait for it
    try:
        assert _scalar(url, "SELECT current_database()") == name
        drop()
    finally:
        holder.close()
    assert _scalar(pg.url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == 0  # noqa: S608
    drop()  # idempotent


def test_postgres_close_removes_everything() -> None:
    instance = PostgresInstance()
    instance.start()
    pid = embedded.postmaster_pid(instance.pgdata)
    instance.close()
    assert not instance.dir.exists()
    assert not embedded.process_alive(pid)


def test_redis_stop_kill_restart_keep_the_port() -> None:
    with RedisInstance("--maxmemory", "16mb") as rd:
        client = redis.Redis.from_url(rd.url, socket_timeout=5)
        assert client.ping()
        assert client.config_get("maxmemory")["maxmemory"] == str(16 * 1024 * 1024)
        client.set("k", "v")
        port = rd.port

        rd.stop()
        assert not _port_open(port)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        rd.start()
        assert rd.port == port and client.ping()
        assert client.get("k") is None  # no persistence: a restart starts empty

        rd.kill()
        assert rd.proc is None and not _port_open(port)
        rd.restart()
        assert client.ping()
        client.close()
        directory = rd.dir
    assert not directory.exists()
