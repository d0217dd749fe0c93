"""The rendered files, checked by the programs that will read them.

nginx, PostgreSQL and Redis load their rendered configs for real (briefly, in scratch
directories, on loopback and free ports, stopped by PID); gunicorn loads its config and the app
entry point; systemd-analyze verifies the unit. Missing tools fail with the apt-get line to run.
"""

from __future__ import annotations

import asyncio
import configparser
import getpass
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from rustchat.appliance.render import render_all, render_host
from tests.appliance.support import (
    chown_tree,
    free_port,
    gunicorn_settings,
    pg_bindir,
    require_tool,
    scratch_dir,
    topology,
    unprivileged_user,
)


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# nginx


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[Path, Path]]:
    openssl = require_tool("openssl", "openssl")
    with scratch_dir() as d:
        cert, key = d / "cert.pem", d / "key.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=rustchat-test", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        yield cert, key


def _nginx_conf(directory: Path, site: str) -> Path:
    """A minimal nginx.conf around the rendered site, with every writable path in `directory`."""
    (directory / "site.conf").write_text(site)
    conf = directory / "nginx.conf"
    conf.write_text(f"""daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
worker_processes 1;
events {{}}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
""")
    return conf


@pytest.mark.parametrize("variant", ["self-signed", "given-cert", "plain-http", "ip-hash"])
def test_nginx_accepts_the_rendered_site(certs: tuple[Path, Path], variant: str) -> None:
    nginx = require_tool("nginx", "nginx")
    cert, key = certs
    extra: dict[str, Any] = {
        "self-signed": {"nginx_tls_selfsigned_cert": str(cert), "nginx_tls_selfsigned_key": str(key)},
        "given-cert": {"nginx_tls_cert": str(cert), "nginx_tls_key": str(key)},
        "plain-http": {"nginx_tls": False},
        "ip-hash": {"nginx_ip_hash": True, "nginx_tls_cert": str(cert), "nginx_tls_key": str(key)},
    }[variant]
    site = render_host(topology(app_nodes=4, **extra), "lb1")["/etc/nginx/conf.d/rustchat.conf"].content
    with scratch_dir() as d:
        conf = _nginx_conf(d, site)
        proc = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(d), "-e", str(d / "error.log")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"nginx -t rejected the rendered site:\n{proc.stderr}\n{site}"


def _read_log(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _async_wait_for_port(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}: {_read_log(log)}")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"nginx did not listen on {port}")


async def _upstream(port: int) -> web.AppRunner:
    """Stands in for the app nodes: echoes what nginx forwarded, never limits bodies itself."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"headers": dict(request.headers), "length": len(body), "path": request.path})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"headers": dict(request.headers)})
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application(client_max_size=200 * 1024 * 1024)
    app.router.add_get("/api/v1/websocket", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_nginx_serves_the_rendered_site(certs: tuple[Path, Path]) -> None:
    """Run nginx on the rendered site: redirect, forwarded headers, JSON 413s, WebSocket upgrade."""
    nginx = require_tool("nginx", "nginx")
    cert, key = certs
    http_port, https_port, app_port = free_port(), free_port(), free_port()
    topo = topology(app_nodes=1, nginx_http_port=http_port, nginx_https_port=https_port,
                    nginx_tls_cert=str(cert), nginx_tls_key=str(key), rustchat_port=app_port)
    topo["groups"]["app"] = {"app1": "127.0.0.1"}
    site = render_host(topo, "lb1")["/etc/nginx/conf.d/rustchat.conf"].content
    runner = await _upstream(app_port)
    with scratch_dir() as d:
        conf = _nginx_conf(d, site)
        proc = await asyncio.create_subprocess_exec(nginx, "-c", str(conf), "-p", str(d), "-e", str(d / "error.log"),
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await _async_wait_for_port(https_port, proc, d / "error.log")
            base = f"https://127.0.0.1:{https_port}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
                async with http.get(f"http://127.0.0.1:{http_port}/api/v1/health?x=1", allow_redirects=False) as r:
                    assert r.status == 301
                    assert r.headers["Location"] == f"https://127.0.0.1:{https_port}/api/v1/health?x=1"

                async with http.get(f"{base}/api/v1/users/me", headers={"X-Forwarded-For": "6.6.6.6"}) as r:
                    assert r.status == 200
                    assert r.headers["Server"] == "nginx"  # server_tokens off: no version
                    seen = (await r.json())["headers"]
                assert seen["X-Forwarded-For"] == "127.0.0.1"  # the client's claim is not passed on
                assert seen["X-Real-IP"] == "127.0.0.1"
                assert seen["X-Forwarded-Proto"] == "https"
                assert seen["Host"] == "127.0.0.1"
                assert "Upgrade" not in seen and seen.get("Connection", "") == ""  # keeps upstream keepalive

                for path, limit in (("/api/v1/auth/login", 64 * 1024), ("/api/v1/channels/c/posts", 1024 * 1024),
                                    ("/api/v1/files", 50 * 1024 * 1024)):
                    async with http.post(base + path, data=b"x" * limit) as r:
                        assert r.status == 200, path
                        assert (await r.json())["length"] == limit
                    if limit < 50 * 1024 * 1024:
                        async with http.post(base + path, data=b"x" * (limit + 1)) as r:
                            assert r.status == 413, path
                            assert r.content_type == "application/json"
                            assert await r.json() == {"id": "api.body_too_large", "message": "Request body too large",
                                                      "status_code": 413}

                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 403

                async with http.ws_connect(f"wss://127.0.0.1:{https_port}/api/v1/websocket?connection_id=c1") as ws:
                    seen = (await ws.receive_json(timeout=5))["headers"]
                    assert seen["Upgrade"].lower() == "websocket"
                    assert seen["Connection"].lower() == "upgrade"
                    assert seen["X-Forwarded-Proto"] == "https"
                    await ws.send_str("hi")
                    assert (await ws.receive(timeout=5)).data == "echo:hi"
        finally:
            if proc.returncode is None:
                proc.terminate()  # by PID: the nginx master this test started
                await asyncio.wait_for(proc.wait(), 15)
            await runner.cleanup()
        errors = _read_log(d / "error.log")
        assert "[emerg]" not in errors and "[crit]" not in errors, errors


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[tuple[Path, dict[str, str], str | None]]:
    """A scratch data directory made by initdb, with the rendered fragment and pg_hba.conf in place."""
    bindir = pg_bindir()
    user = unprivileged_user()
    files = render_host(topology(app_nodes=3, rustchat_preset="medium", postgresql_ram_mb=2048), "db1")
    with scratch_dir(user) as d:
        data = d / "data"
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "peer", "--no-sync"],
                       check=True, capture_output=True, user=user, cwd=d)
        (data / "conf.d").mkdir()
        (data / "conf.d" / "rustchat.conf").write_text(files["/etc/postgresql/15/main/conf.d/rustchat.conf"].content)
        (data / "pg_hba.conf").write_text(files["/etc/postgresql/15/main/pg_hba.conf"].content)
        with (data / "postgresql.conf").open("a") as fh:
            fh.write("\ninclude_dir = 'conf.d'  # as Debian's postgresql.conf does\n")
        if user:
            chown_tree(d, user)
        yield data, {p: f.content for p, f in files.items()}, user


def _postgres_c(data: Path, user: str | None, name: str) -> str:
    proc = subprocess.run([str(pg_bindir() / "postgres"), "-C", name, "-D", str(data)],
                          capture_output=True, text=True, user=user, cwd=data)
    assert proc.returncode == 0, f"postgres -C {name} failed: {proc.stderr}"
    return proc.stdout.strip()


def test_postgres_reads_the_rendered_settings(pg_cluster: tuple[Path, dict[str, str], str | None]) -> None:
    data, files, user = pg_cluster
    conf = files["/etc/postgresql/15/main/conf.d/rustchat.conf"]
    rendered = dict(re.findall(r"^(\w+) = '?([^'\n]*)'?$", conf, re.MULTILINE))
    assert _postgres_c(data, user, "max_connections") == rendered["max_connections"] == "200"
    assert _postgres_c(data, user, "superuser_reserved_connections") == "3"
    assert _postgres_c(data, user, "listen_addresses") == "localhost,10.0.0.5"
    assert _postgres_c(data, user, "password_encryption") == "scram-sha-256"
    # postgres -C prints memory in its base unit: 8 kB pages for shared_buffers, kB for work_mem.
    assert int(_postgres_c(data, user, "shared_buffers")) * 8 == int(rendered["shared_buffers"].removesuffix("MB")) * 1024
    assert _postgres_c(data, user, "work_mem") == rendered["work_mem"].removesuffix("kB")
    assert int(_postgres_c(data, user, "maintenance_work_mem")) == int(rendered["maintenance_work_mem"].removesuffix("MB")) * 1024


def test_postgres_starts_with_the_rendered_hba(pg_cluster: tuple[Path, dict[str, str], str | None]) -> None:
    """The postmaster refuses to start on an invalid pg_hba.conf; then read back what it loaded."""
    data, _files, user = pg_cluster
    bindir = pg_bindir()
    sock = data.parent
    port = free_port()
    # Loopback-free: the rendered listen_addresses names a private address this machine lacks.
    proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
                             "-c", "listen_addresses=", "-c", "fsync=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, user=user, cwd=data)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([str(bindir / "pg_isready"), "-h", str(sock), "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert proc.poll() is None, f"postgres did not start on the rendered config:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "postgres did not become ready"
            time.sleep(0.1)
        if (user or getpass.getuser()) != "postgres":
            return  # only the OS user postgres is admitted by peer; starting proved the file parses
        query = ("SELECT type, database, user_name, address, auth_method, error FROM pg_hba_file_rules "
                 "ORDER BY line_number")
        out = subprocess.run([str(bindir / "psql"), "-h", str(sock), "-p", str(port), "-U", "postgres", "-d",
                              "postgres", "-XAt", "-F", "|", "-c", query, "-c", "SHOW max_connections"],
                             capture_output=True, text=True, user=user, cwd=data, check=True).stdout.splitlines()
        assert out == [
            "local|{all}|{postgres}||peer|",
            "host|{rustchat}|{rustchat}|10.0.1.1|scram-sha-256|",
            "host|{rustchat}|{rustchat}|10.0.1.2|scram-sha-256|",
            "host|{rustchat}|{rustchat}|10.0.1.3|scram-sha-256|",
            "200",
        ]
    finally:
        _stop(proc)


# ---------------------------------------------------------------------------------------------
# Redis


@pytest.mark.parametrize("persistence", ["none", "rdb", "aof"])
def test_redis_loads_the_rendered_config(persistence: str) -> None:
    redis_server = require_tool("redis-server", "redis-server")
    topo = topology(app_nodes=3, rustchat_preset="medium", redis_persistence=persistence)
    conf = render_host(topo, "cache1")["/etc/redis/redis.conf"].content
    password = topo["vars"]["redis_requirepass"]
    port = free_port()
    with scratch_dir() as d:
        (d / "redis.conf").write_text(conf)
        # Loopback and a scratch dir instead of the private address and Debian's paths.
        proc = subprocess.Popen([redis_server, str(d / "redis.conf"), "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", str(d), "--pidfile", str(d / "redis.pid"), "--logfile", "",
                                 "--supervised", "no"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_port(port, proc, "redis-server")
            # Without the password: refused (a raw socket, as redis-py would retry with backoff).
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(b"PING\r\n")
                assert raw.recv(200).startswith(b"-NOAUTH")
            client = redis.Redis(host="127.0.0.1", port=port, password=password, decode_responses=True)
            assert client.ping() is True
            cfg = client.config_get("*")
            assert cfg["client-output-buffer-limit"].split("pubsub ")[1] == f"{32 * 2**20} {8 * 2**20} 30"
            assert int(cfg["maxmemory"]) == 2**30
            assert cfg["maxmemory-policy"] == "noeviction"
            assert cfg["protected-mode"] == "yes"
            assert cfg["save"] == {"none": "", "rdb": "900 1 300 100 60 10000", "aof": ""}[persistence]
            assert cfg["appendonly"] == ("yes" if persistence == "aof" else "no")
            assert cfg["tcp-keepalive"] == "60"
            client.close()
        finally:
            _stop(proc)


# ---------------------------------------------------------------------------------------------
# gunicorn and systemd


def test_gunicorn_loads_the_rendered_config(tmp_path: Path) -> None:
    files = render_host(topology(app_nodes=2, rustchat_workers=3), "app2")
    text = files["/etc/rustchat/gunicorn.conf.py"].content
    values = gunicorn_settings(text)
    assert values["bind"] == ["10.0.1.2:3000"]
    assert values["workers"] == 3
    assert values["worker_class"] == "rustchat.worker.Worker"
    assert values["wsgi_app"] == "rustchat.server:gunicorn_app"
    assert values["graceful_timeout"] * 0.95 > 10  # the app's drain time
    assert values["keepalive"] > 60  # nginx's upstream keepalive_timeout
    assert callable(values["child_exit"])

    from gunicorn.config import Config

    cfg = Config()
    for key, value in values.items():
        if key in cfg.settings:
            cfg.set(key, value)  # gunicorn's own validators
    assert cfg.worker_class.__name__ == "Worker"  # the class imports
    assert cfg.workers == 3 and cfg.address == [("10.0.1.2", 3000)]

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(text)
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.run([str(gunicorn), "--check-config", "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, f"gunicorn --check-config (imports rustchat.server:gunicorn_app):\n{proc.stderr}"


HARDENING = {
    "User": "rustchat",
    "EnvironmentFile": "/etc/rustchat/rustchat.env",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "NoNewPrivileges": "true",
    "LimitNOFILE": "65536",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
}


def test_systemd_unit(tmp_path: Path) -> None:
    # The real virtualenv, so systemd-analyze finds an executable ExecStart.
    files = render_host(topology(rustchat_venv=sys.prefix, rustchat_graceful_timeout=40), "app1")
    unit_text = files["/etc/systemd/system/rustchat.service"].content
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(unit_text)
    service = parser["Service"]
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["ExecStart"] == f"{sys.prefix}/bin/gunicorn -c /etc/rustchat/gunicorn.conf.py"
    assert "/run/rustchat" in service["ReadWritePaths"] and "/var/lib/rustchat" in service["ReadWritePaths"]
    assert service["RuntimeDirectory"] == "rustchat rustchat/prometheus"
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 40  # above graceful_timeout
    assert int(service["RestartSec"].removesuffix("s")) >= 1
    assert int(parser["Unit"]["StartLimitBurst"]) >= 1 and int(parser["Unit"]["StartLimitIntervalSec"]) > 0

    analyze = require_tool("systemd-analyze", "systemd")
    unit = tmp_path / "rustchat.service"
    unit.write_text(unit_text)
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    complaints = [line for line in proc.stderr.splitlines() if "rustchat" in line]
    assert proc.returncode == 0 and not complaints, "\n".join(complaints) or proc.stderr


def test_every_rendered_file_is_checked_here() -> None:
    """A new template must come with a tool check in this module."""
    rendered = render_all(topology(app_nodes=1))
    paths = {p for files in rendered.values() for p in files}
    assert paths == {
        "/etc/nginx/conf.d/rustchat.conf",
        "/etc/postgresql/15/main/conf.d/rustchat.conf",
        "/etc/postgresql/15/main/pg_hba.conf",
        "/etc/redis/redis.conf",
        "/etc/rustchat/gunicorn.conf.py",
        "/etc/rustchat/rustchat.env",  # checked by the app's own parser in test_render.py
        "/etc/systemd/system/rustchat.service",
    }
