"""The HTTP API over real sockets against a real server process and PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER


def assert_error(status: int, body: dict, expected_status: int, error_id: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body) >= {"id", "message", "status_code"}, body
    assert body["status_code"] == expected_status
    if error_id:
        assert body["id"] == error_id, body


# -- accounts ------------------------------------------------------------------------------------
async def test_login_by_username_or_email_and_me(anon: Api, admin: Api) -> None:
    status, me = await admin.get("/api/v1/users/me")
    assert status == 200 and me["username"] == ADMIN_USER and me["is_admin"] is True
    by_email = await anon.login(me["email"].upper(), ADMIN_PASSWORD)
    assert by_email.user["id"] == me["id"]
    assert "password" not in str(by_email.user) and "hash" not in str(by_email.user)


async def test_wrong_password_and_unknown_user_look_the_same(anon: Api) -> None:
    s1, b1 = await anon.post("/api/v1/auth/login", {"login_id": ADMIN_USER, "password": "wrong-password"})
    s2, b2 = await anon.post("/api/v1/auth/login", {"login_id": "nobody-here", "password": "wrong-password"})
    assert_error(s1, b1, 401, "api.login.invalid_credentials")
    assert (s2, b2) == (s1, b1)


async def test_logout_revokes_token(admin: Api, anon: Api) -> None:
    user = await admin.new_user()
    assert (await user.get("/api/v1/users/me"))[0] == 200
    assert (await user.post("/api/v1/auth/logout"))[0] == 200
    status, body = await user.get("/api/v1/users/me")
    assert_error(status, body, 401, "api.unauthorized")


async def test_routes_require_authentication(anon: Api) -> None:
    for method, path in [("GET", "/api/v1/users/me"), ("POST", "/api/v1/teams"), ("GET", "/api/v1/teams"),
                         ("POST", "/api/v1/channels"), ("GET", "/api/v1/admin/config")]:
        status, body = await anon.request(method, path, json_body={})
        assert_error(status, body, 401)


async def test_only_admin_creates_users_and_reads_config(admin: Api) -> None:
    user = await admin.new_user()
    status, body = await user.post("/api/v1/users", {"username": "x1234", "email": "x1234@e.com", "password": "password-123"})
    assert_error(status, body, 403, "api.forbidden")
    status, body = await user.get("/api/v1/admin/config")
    assert_error(status, body, 403)


async def test_user_creation_validation(admin: Api) -> None:
    user = await admin.new_user()
    name = user.user["username"]
    status, body = await admin.post("/api/v1/users", {"username": name, "email": "other@e.com", "password": "password-123"})
    assert_error(status, body, 409, "user.username_taken")
    status, body = await admin.post("/api/v1/users", {"username": "ok_name", "email": "not-an-email", "password": "password-123"})
    assert_error(status, body, 400, "api.invalid_body")
    assert "email" in body["message"]
    status, body = await admin.post("/api/v1/users", {"username": "short_pw", "email": "s@e.com", "password": "short"})
    assert_error(status, body, 400, "api.invalid_body")
    status, body = await admin.post("/api/v1/users", {"username": "extra", "email": "e@e.com", "password": "password-123", "role": "x"})
    assert_error(status, body, 400, "api.invalid_body")
    assert "role" in body["message"]


# -- teams and channels --------------------------------------------------------------------------
async def test_team_membership_rules(admin: Api) -> None:
    alice, bob, carol = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    status, body = await bob.post(f"/api/v1/teams/{team['id']}/members", {"user_id": carol.user["id"]})
    assert_error(status, body, 403)  # bob is a member, not a team admin
    status, body = await carol.get(f"/api/v1/teams/{team['id']}")
    assert_error(status, body, 403, "api.team.not_member")
    status, members = await alice.get(f"/api/v1/teams/{team['id']}/members")
    assert status == 200 and {m["user_id"] for m in members} == {alice.user["id"], bob.user["id"]}
    status, body = await alice.post(f"/api/v1/teams/{team['id']}/members", {"user_id": "0" * 26})
    assert_error(status, body, 400, "api.user.unknown")
    status, body = await alice.post("/api/v1/teams", {"name": team["name"], "display_name": "dup"})
    assert_error(status, body, 409, "team.name_taken")


async def test_private_channel_is_invisible_to_non_members(admin: Api) -> None:
    alice, bob, eve = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob, eve)
    private = await alice.new_channel(team, "private", bob)
    cid = private["id"]
    status, body = await eve.get(f"/api/v1/channels/{cid}")
    assert_error(status, body, 404, "channel.not_found")
    status, body = await eve.get(f"/api/v1/channels/{cid}/posts")
    assert_error(status, body, 404)
    status, body = await eve.post(f"/api/v1/channels/{cid}/posts", {"message": "let me in"})
    assert_error(status, body, 404)
    status, body = await eve.post(f"/api/v1/channels/{cid}/members", {"user_id": eve.user["id"]})
    assert_error(status, body, 404)
    status, post = await bob.post(f"/api/v1/channels/{cid}/posts", {"message": "secret"})
    assert status == 201
    status, body = await eve.get(f"/api/v1/posts/{post['id']}")
    assert_error(status, body, 404, "post.not_found")
    status, body = await eve.post(f"/api/v1/posts/{post['id']}/reactions", {"emoji_name": "eyes"})
    assert_error(status, body, 404)
    status, listing = await eve.get(f"/api/v1/teams/{team['id']}/channels")
    assert cid not in {c["id"] for c in listing}
    status, listing = await bob.get(f"/api/v1/teams/{team['id']}/channels")
    assert cid in {c["id"] for c in listing}


async def test_public_channel_join_read_and_post_rules(admin: Api) -> None:
    alice, bob, outsider = await admin.new_user(), await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    public = await alice.new_channel(team, "public")
    cid = public["id"]
    assert (await alice.post(f"/api/v1/channels/{cid}/posts", {"message": "hi"}))[0] == 201
    status, page = await bob.get(f"/api/v1/channels/{cid}/posts")
    assert status == 200 and page["posts"][0]["message"] == "hi"  # team members read public channels
    status, body = await bob.post(f"/api/v1/channels/{cid}/posts", {"message": "me too"})
    assert_error(status, body, 403, "api.channel.not_member")
    status, _ = await bob.post(f"/api/v1/channels/{cid}/members", {"user_id": bob.user["id"]})
    assert status == 201
    assert (await bob.post(f"/api/v1/channels/{cid}/posts", {"message": "me too"}))[0] == 201
    status, body = await outsider.get(f"/api/v1/channels/{cid}/posts")
    assert_error(status, body, 404)
    status, body = await alice.post(f"/api/v1/channels/{cid}/members", {"user_id": outsider.user["id"]})
    assert_error(status, body, 400, "api.channel.not_team_member")
    # leaving, and removal rules
    status, body = await bob.delete(f"/api/v1/channels/{cid}/members/{alice.user['id']}")
    assert_error(status, body, 403)
    assert (await bob.delete(f"/api/v1/channels/{cid}/members/{bob.user['id']}"))[0] == 200
    status, body = await bob.delete(f"/api/v1/channels/{cid}/members/{bob.user['id']}")
    assert_error(status, body, 404)


async def test_direct_messages(admin: Api) -> None:
    alice, bob, eve = await admin.new_user(), await admin.new_user(), await admin.new_user()
    status, dm = await alice.post("/api/v1/channels/direct", [alice.user["id"], bob.user["id"]])
    assert status == 201 and dm["type"] == "direct" and dm["team_id"] is None
    status, again = await bob.post("/api/v1/channels/direct", [bob.user["id"], alice.user["id"]])
    assert status == 200 and again["id"] == dm["id"]
    status, body = await eve.post("/api/v1/channels/direct", [alice.user["id"], bob.user["id"]])
    assert_error(status, body, 403)
    assert (await bob.post(f"/api/v1/channels/{dm['id']}/posts", {"message": "psst"}))[0] == 201
    status, body = await eve.get(f"/api/v1/channels/{dm['id']}/posts")
    assert_error(status, body, 404)
    for bad in ([alice.user["id"]], [alice.user["id"], "nope"], {"a": 1}, [alice.user["id"], bob.user["id"], eve.user["id"]]):
        status, body = await alice.post("/api/v1/channels/direct", bad)
        assert_error(status, body, 400)


# -- posts ---------------------------------------------------------------------------------------
async def test_posts_threads_edit_delete_reactions(admin: Api) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    status, root = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "root"})
    assert status == 201
    assert set(root) >= {"id", "channel_id", "user_id", "root_id", "message", "create_at", "update_at", "delete_at"}
    assert root["root_id"] == "" and root["delete_at"] == 0
    status, reply = await bob.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "reply", "root_id": root["id"]})
    assert status == 201 and reply["root_id"] == root["id"]
    status, body = await bob.post(f"/api/v1/channels/{ch['id']}/posts", {"message": "nested", "root_id": reply["id"]})
    assert_error(status, body, 400, "api.post.invalid_root")
    status, thread = await bob.get(f"/api/v1/posts/{reply['id']}/thread")
    assert [p["id"] for p in thread["posts"]] == [root["id"], reply["id"]]

    status, body = await bob.put(f"/api/v1/posts/{root['id']}", {"message": "hijack"})
    assert_error(status, body, 403)
    status, edited = await alice.put(f"/api/v1/posts/{root['id']}", {"message": "root (edited)"})
    assert status == 200 and edited["message"] == "root (edited)" and edited["update_at"] >= root["update_at"]
    status, edited_by_admin = await admin.put(f"/api/v1/posts/{reply['id']}", {"message": "moderated"})
    assert status == 200

    status, r = await bob.post(f"/api/v1/posts/{root['id']}/reactions", {"emoji_name": "thumbsup"})
    assert status == 201 and r["emoji_name"] == "thumbsup"
    status, r2 = await bob.post(f"/api/v1/posts/{root['id']}/reactions", {"emoji_name": "thumbsup"})
    assert status == 200  # idempotent
    status, body = await bob.post(f"/api/v1/posts/{root['id']}/reactions", {"emoji_name": "<script>"})
    assert_error(status, body, 400)
    status, reactions = await alice.get(f"/api/v1/posts/{root['id']}/reactions")
    assert [x["emoji_name"] for x in reactions] == ["thumbsup"]
    assert (await bob.delete(f"/api/v1/posts/{root['id']}/reactions/thumbsup"))[0] == 200
    status, body = await bob.delete(f"/api/v1/posts/{root['id']}/reactions/thumbsup")
    assert_error(status, body, 404)

    status, body = await bob.delete(f"/api/v1/posts/{root['id']}")
    assert_error(status, body, 403)
    status, deleted = await alice.delete(f"/api/v1/posts/{root['id']}")
    assert status == 200 and deleted["delete_at"] > 0 and deleted["message"] == ""
    status, body = await alice.get(f"/api/v1/posts/{root['id']}")
    assert_error(status, body, 404)
    status, body = await alice.put(f"/api/v1/posts/{root['id']}", {"message": "undead"})
    assert_error(status, body, 404)


async def test_paging_before_since_limit(admin: Api) -> None:
    alice = await admin.new_user()
    team = await alice.new_team()
    ch = await alice.new_channel(team)
    ids = []
    for i in range(7):
        status, p = await alice.post(f"/api/v1/channels/{ch['id']}/posts", {"message": f"m{i}"})
        ids.append(p["id"])
        await asyncio.sleep(0.002)
    status, page = await alice.get(f"/api/v1/channels/{ch['id']}/posts?limit=3")
    assert [p["id"] for p in page["posts"]] == ids[::-1][:3] and page["has_more"] is True
    status, page2 = await alice.get(f"/api/v1/channels/{ch['id']}/posts?limit=3&before={page['posts'][-1]['id']}")
    assert [p["id"] for p in page2["posts"]] == ids[::-1][3:6] and page2["has_more"] is True
    status, page3 = await alice.get(f"/api/v1/channels/{ch['id']}/posts?limit=3&before={ids[1]}")
    assert [p["id"] for p in page3["posts"]] == [ids[0]] and page3["has_more"] is False
    _, third = await alice.get(f"/api/v1/posts/{ids[3]}")
    await alice.put(f"/api/v1/posts/{ids[1]}", {"message": "edited"})
    await alice.delete(f"/api/v1/posts/{ids[2]}")
    status, changed = await alice.get(f"/api/v1/channels/{ch['id']}/posts?since={third['create_at']}")
    got = {p["id"]: p for p in changed["posts"]}
    assert ids[1] in got and ids[2] in got and got[ids[2]]["delete_at"] > 0
    for query in ("limit=0", "limit=201", "limit=x", "since=-1", "before=zz", f"since=1&before={ids[0]}"):
        status, body = await alice.get(f"/api/v1/channels/{ch['id']}/posts?{query}")
        assert_error(status, body, 400, "api.invalid_query")


# -- bad input -----------------------------------------------------------------------------------
async def test_bad_bodies_are_4xx_with_json(admin: Api) -> None:
    team = await admin.new_team()
    ch = await admin.new_channel(team)
    path = f"/api/v1/channels/{ch['id']}/posts"
    cases = [
        (b"{not json", "api.invalid_json"),
        (b"\xff\xfe{}", "api.invalid_utf8"),
        (b"", "api.empty_body"),
        (b'{"message": 5}', "api.invalid_body"),
        (b'{"message": ""}', "api.invalid_body"),
        (b'{"message": "x", "extra": 1}', "api.invalid_body"),
        (b'{"message": "nul\\u0000byte"}', "api.invalid_body"),
        (b'{"message": "lone \\ud800 surrogate"}', "api.invalid_body"),
        (b'{"message": "' + b"x" * 17000 + b'"}', "api.invalid_body"),
        (b'[1, 2]', "api.invalid_body"),
        (b'{"message": "x", "root_id": "not-an-id"}', "api.invalid_body"),
        (b'{"message": "x", "root_id": "' + b"0" * 26 + b'"}', "api.post.invalid_root"),
    ]
    for raw, error_id in cases:
        status, body = await admin.request("POST", path, data=raw, headers={"Content-Type": "application/json"})
        assert_error(status, body, 400, error_id)
    status, body = await admin.request("POST", path, data=b"message=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(status, body, 415)
    status, page = await admin.get(path)
    assert page["posts"] == []  # nothing half-written


async def test_unknown_ids_and_routes(admin: Api) -> None:
    for path, error_id in [("/api/v1/channels/" + "a" * 26, "channel.not_found"),
                           ("/api/v1/channels/not-an-id", "channel.not_found"),
                           ("/api/v1/posts/" + "b" * 26, "post.not_found"),
                           ("/api/v1/teams/" + "c" * 26, "team.not_found"),
                           ("/api/v1/users/" + "d" * 26, "user.not_found"),
                           ("/api/v1/nothing-here", "api.not_found")]:
        status, body = await admin.get(path)
        assert_error(status, body, 404, error_id)
    status, body = await admin.request("PATCH", "/api/v1/users/me")
    assert_error(status, body, 405, "api.method_not_allowed")


async def test_admin_site_config(admin: Api) -> None:
    status, cfg = await admin.get("/api/v1/admin/config")
    assert status == 200 and "max_simultaneous_connections" in cfg["site"]
    for bad in ({"max_simultaneous_connections": 0}, {"max_simultaneous_connections": "5"}, {"unknown": 1}):
        status, body = await admin.put("/api/v1/admin/config/site", bad)
        assert_error(status, body, 400, "api.invalid_body")
    status, cfg = await admin.put("/api/v1/admin/config/site", {"site_name": "Our chat"})
    assert status == 200 and cfg["site"]["site_name"] == "Our chat"
    assert cfg["site"]["max_simultaneous_connections"] >= 1  # untouched keys survive


async def test_health_reports_database_and_connections(anon: Api) -> None:
    status, body = await anon.get("/api/v1/health")
    assert status == 200 and body["status"] == "ok"
    assert body["database"]["ok"] is True and body["redis"] is None
    assert set(body["connections"]) == {"local", "cluster"}
    assert body["nodes"][0]["node_id"] == body["node_id"]
    assert (await anon.get("/api/v1/health/live"))[0] == 200
    assert (await anon.get("/api/v1/health/ready"))[0] == 200


async def test_listing_routes(admin: Api) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    status, listing = await bob.get("/api/v1/users?per_page=200")
    assert status == 200 and alice.user["id"] in {u["id"] for u in listing}
    status, one = await bob.get(f"/api/v1/users/{alice.user['id']}")
    assert status == 200 and one["username"] == alice.user["username"] and "password_hash" not in one
    status, mine = await bob.get("/api/v1/users/me/channels")
    assert status == 200 and ch["id"] in {c["id"] for c in mine}
    status, teams = await bob.get("/api/v1/teams")
    assert status == 200 and [t["id"] for t in teams] == [team["id"]]
    status, members = await bob.get(f"/api/v1/channels/{ch['id']}/members")
    assert status == 200 and {m["user_id"] for m in members} == {alice.user["id"], bob.user["id"]}


async def test_leaving_a_team_leaves_its_channels(admin: Api) -> None:
    alice, bob = await admin.new_user(), await admin.new_user()
    team = await alice.new_team(bob)
    ch = await alice.new_channel(team, "private", bob)
    status, body = await bob.delete(f"/api/v1/teams/{team['id']}/members/{bob.user['id']}")
    assert status == 200
    status, body = await bob.get(f"/api/v1/channels/{ch['id']}/posts")
    assert_error(status, body, 404)
    status, body = await bob.get(f"/api/v1/teams/{team['id']}")
    assert_error(status, body, 403)
