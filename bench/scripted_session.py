"""The issue's acceptance session, measured: `rustchat serve` on its embedded database, then log in
as admin, create two users, a team, a private channel with one of them, post; report how long the
`posted` event took to reach the member's WebSocket and confirm the other user got nothing.

    .venv/bin/python -m bench.scripted_session            # starts its own server on port 3000
    .venv/bin/python -m bench.scripted_session --url http://localhost:3000 --password ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp


async def session(base: str, admin_password: str, rounds: int) -> None:
    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, token: str | None, body: object = None) -> dict:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, base + path, json=body, headers=headers) as resp:
                data = await resp.json()
                assert resp.status < 300, (path, resp.status, data)
                return data

        admin = (await call("POST", "/api/v1/auth/login", None, {"login_id": "admin", "password": admin_password}))["token"]
        users = []
        for _ in range(2):
            name = "u" + secrets.token_hex(4)
            await call("POST", "/api/v1/users", admin, {"username": name, "email": f"{name}@example.com", "password": "password-123"})
            users.append(await call("POST", "/api/v1/auth/login", None, {"login_id": name, "password": "password-123"}))
        member, other = users
        team = await call("POST", "/api/v1/teams", admin, {"name": "t" + secrets.token_hex(4), "display_name": "Team"})
        for u in users:
            await call("POST", f"/api/v1/teams/{team['id']}/members", admin, {"user_id": u["user"]["id"]})
        channel = await call("POST", "/api/v1/channels", admin, {"team_id": team["id"], "name": "private", "display_name": "Private", "type": "private"})
        await call("POST", f"/api/v1/channels/{channel['id']}/members", admin, {"user_id": member["user"]["id"]})
        ws_url = base.replace("http", "ws", 1) + "/api/v1/websocket"
        ws_member = await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {member['token']}"})
        ws_other = await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {other['token']}"})
        await ws_member.receive_json()
        await ws_other.receive_json()
        latencies = []
        for i in range(rounds):
            start = time.perf_counter()
            await call("POST", f"/api/v1/channels/{channel['id']}/posts", admin, {"message": f"hello {i}"})
            while True:
                msg = await ws_member.receive_json(timeout=5)
                if msg.get("event") == "posted":
                    latencies.append((time.perf_counter() - start) * 1000)
                    break
        leaked = []
        try:
            while True:
                msg = await ws_other.receive_json(timeout=0.5)
                if msg.get("event") == "posted":
                    leaked.append(msg)
        except TimeoutError:
            pass
        latencies.sort()
        print(f"posted delivered to the member: {rounds} posts, request sent -> event received: "
              f"first {latencies[0]:.1f} ms, median {statistics.median(latencies):.1f} ms, "
              f"p99 {latencies[max(0, int(len(latencies) * 0.99) - 1)]:.1f} ms, max {latencies[-1]:.1f} ms")
        print(f"posted events received by the non-member: {len(leaked)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--password", help="the admin's password (with --url)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    if args.url:
        asyncio.run(session(args.url.rstrip("/"), args.password, args.rounds))
        return 0
    data_dir = Path(tempfile.mkdtemp(prefix="rustchat-session-", dir="/tmp"))
    data_dir.chmod(0o755)
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "RUSTCHAT_DATA_DIR": str(data_dir / "data"), "RUSTCHAT_SERVER__PORT": str(args.port),
           "RUSTCHAT_ADMIN_USER": "admin", "RUSTCHAT_ADMIN_PASSWORD": password, "RUSTCHAT_LOG": "warn"}
    env.pop("RUSTCHAT_DATABASE_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "rustchat", "serve"], env=env)
    try:
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/api/v1/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        asyncio.run(session(base, password, args.rounds))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
