"""The small API the web client relies on (read state, batch look-ups) and the pages it is served
as, against a real server process and PostgreSQL."""

from __future__ import annotations

import re

import aiohttp

from tests.support.client import Api
from tests.support.server import ServerProcess
from tests.test_api import assert_error


async def test_unread_counts_posts_by_others_until_viewed(admin: Api) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    channel = await alice.new_channel(team, "private", bob)
    path = f"/api/v1/channels/{channel['id']}/posts"
    for i in range(3):
        assert (await bob.post(path, {"message": f"from bob {i}"}))[0] == 201
    assert (await alice.post(path, {"message": "alice's own"}))[0] == 201
    status, gone = await bob.post(path, {"message": "deleted soon"})
    assert (await bob.delete(f"/api/v1/posts/{gone['id']}"))[0] == 200

    async def unread(api: Api) -> int:
        status, states = await api.get("/api/v1/users/me/channel_members")
        assert status == 200
        (state,) = [s for s in states if s["channel_id"] == channel["id"]]
        assert set(state) >= {"channel_id", "user_id", "last_viewed_at", "last_post_at", "unread_count"}
        return state["unread_count"]

    assert await unread(alice) == 3  # not her own post, not the deleted one
    assert await unread(bob) == 1
    status, body = await alice.post("/api/v1/channels/members/me/view", {"channel_id": channel["id"]})
    assert status == 200 and body["channel_id"] == channel["id"] and body["last_viewed_at"] > 0
    assert await unread(alice) == 0
    await bob.post(path, {"message": "one more"})
    assert await unread(alice) == 1


async def test_unread_count_stops_at_the_cap(admin: Api) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    channel = await alice.new_channel(team, "public", bob)
    for i in range(101):
        assert (await bob.post(f"/api/v1/channels/{channel['id']}/posts", {"message": f"m{i}"}))[0] == 201
    _, states = await alice.get("/api/v1/users/me/channel_members")
    assert [s["unread_count"] for s in states if s["channel_id"] == channel["id"]] == [100]


async def test_view_needs_membership(admin: Api) -> None:
    alice, bob, carol = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    public = await alice.new_channel(team, "public")
    private = await alice.new_channel(team, "private")
    status, body = await bob.post("/api/v1/channels/members/me/view", {"channel_id": public["id"]})
    assert_error(status, body, 403, "api.channel.not_member")  # can read it, is not in it
    status, body = await bob.post("/api/v1/channels/members/me/view", {"channel_id": private["id"]})
    assert_error(status, body, 404, "channel.not_found")
    status, body = await carol.post("/api/v1/channels/members/me/view", {"channel_id": public["id"]})
    assert_error(status, body, 404, "channel.not_found")
    status, body = await bob.post("/api/v1/channels/members/me/view", {"channel_id": "nope"})
    assert_error(status, body, 400, "api.invalid_body")


async def test_viewing_tells_the_users_other_connections(admin: Api, server: ServerProcess) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    channel = await alice.new_channel(team, "public", bob)
    sock = await alice.ws(server.ws_url)
    other = await bob.ws(server.ws_url)
    try:
        status, _ = await alice.post("/api/v1/channels/members/me/view", {"channel_id": channel["id"]})
        assert status == 200
        event = await sock.next_event(name="channel_viewed")
        assert event["data"]["channel_id"] == channel["id"] and event["data"]["last_viewed_at"] > 0
        assert [e for e in await other.events_for(0.3) if e["event"] == "channel_viewed"] == []
    finally:
        await sock.close()
        await other.close()


async def test_users_by_ids_in_the_order_asked(admin: Api) -> None:
    a, b = await admin.new_user(), await admin.new_user()
    missing = "0" * 26
    status, found = await a.post("/api/v1/users/ids", [b.user["id"], missing, a.user["id"], b.user["id"]])
    assert status == 200
    assert [u["id"] for u in found] == [b.user["id"], a.user["id"]]
    assert all("password" not in str(u) for u in found)
    assert (await a.post("/api/v1/users/ids", []))[1] == []
    status, body = await a.post("/api/v1/users/ids", ["Not-An-Id"])
    assert_error(status, body, 400, "api.invalid_body")
    status, body = await a.post("/api/v1/users/ids", [missing] * 201)
    assert_error(status, body, 400, "api.invalid_body")


async def test_reactions_of_many_posts_only_where_readable(admin: Api) -> None:
    alice, bob, outsider = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    open_ch = await alice.new_channel(team, "public", bob)
    secret = await alice.new_channel(team, "private")
    _, p1 = await alice.post(f"/api/v1/channels/{open_ch['id']}/posts", {"message": "one"})
    _, p2 = await alice.post(f"/api/v1/channels/{open_ch['id']}/posts", {"message": "two"})
    _, hidden = await alice.post(f"/api/v1/channels/{secret['id']}/posts", {"message": "secret"})
    for emoji in ("tada", "+1"):
        assert (await bob.post(f"/api/v1/posts/{p1['id']}/reactions", {"emoji_name": emoji}))[0] == 201
    assert (await alice.post(f"/api/v1/posts/{hidden['id']}/reactions", {"emoji_name": "eyes"}))[0] == 201

    status, found = await bob.post("/api/v1/posts/ids/reactions", [p1["id"], p2["id"], hidden["id"]])
    assert status == 200
    assert set(found) == {p1["id"], p2["id"]}  # the private channel's post is not Bob's to see
    assert [r["emoji_name"] for r in found[p1["id"]]] == ["tada", "+1"]
    assert found[p2["id"]] == []
    assert (await outsider.post("/api/v1/posts/ids/reactions", [p1["id"]]))[1] == {}
    status, mine = await alice.post("/api/v1/posts/ids/reactions", [hidden["id"]])
    assert [r["emoji_name"] for r in mine[hidden["id"]]] == ["eyes"]
    # The single-post route is still reachable past the batch route registered before it.
    assert (await bob.get(f"/api/v1/posts/{p1['id']}/reactions"))[0] == 200


async def test_client_page_has_a_strict_policy_and_no_inline_script(http: aiohttp.ClientSession,
                                                                   server: ServerProcess) -> None:
    async with http.get(server.url + "/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        csp = resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        html = await resp.text()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and body.strip() == "" for attrs, body in scripts)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)  # no inline event handlers
    assert not re.search(r"<[^>]+\sstyle\s*=", html)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert len(assets) >= 3
    for url in assets:
        async with http.get(server.url + url) as resp:
            assert resp.status == 200, url
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "immutable" in resp.headers["Cache-Control"]  # versioned: cached for good


async def test_static_files_stay_inside_their_folder(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    async with http.get(server.url + "/static/js/app.js") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/javascript")
        assert resp.headers["Cache-Control"] == "no-cache"  # unversioned: revalidated
    for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/js/../../pages.py",
                 "/static/..%2fstatic.py", "/static/", "/static/js/nothing.js", "/static/js"):
        async with http.get(server.url + path) as resp:
            assert resp.status == 404, path
            body = await resp.json()
            assert body["status_code"] == 404 and body["id"], path
