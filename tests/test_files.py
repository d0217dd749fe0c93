"""File uploads into PostgreSQL large objects, attachment to posts, and who may download them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.client import Api
from tests.support.server import ServerProcess

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)
HTML = b"<!DOCTYPE html><html><script>alert(1)</script></html>"


@pytest.fixture(scope="module")
async def world(admin: Api) -> dict:
    """A team with a private channel (alice, bob), a public channel (alice only), and carol, who is
    in the team but in neither channel."""
    alice, bob, carol, mallory = [await admin.new_user() for _ in range(4)]
    team = await admin.new_team(alice, bob, carol)
    private = await alice.new_channel(team, "private", bob)
    public = await alice.new_channel(team, "public")
    return {"alice": alice, "bob": bob, "carol": carol, "mallory": mallory, "team": team,
            "private": private, "public": public}


async def upload(api: Api, channel_id: str, data: bytes | AsyncIterator[bytes], *, name: str | None = "f.bin",
                 ctype: str = "application/octet-stream", headers: dict[str, str] | None = None) -> tuple[int, dict]:
    query = f"?channel_id={channel_id}" + (f"&filename={quote(name)}" if name else "")
    return await api.request("POST", "/api/v1/files" + query, data=data,
                             headers={"Content-Type": ctype, **(headers or {})})


async def download(api: Api, file_id: str) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with api.session.get(f"{api.base}/api/v1/files/{file_id}", headers=api._headers()) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_upload_records_types_and_size_and_downloads_the_same_bytes(world: dict) -> None:
    alice = world["alice"]
    status, meta = await upload(alice, world["private"]["id"], PNG, name="pic.png", ctype="image/png")
    assert status == 201, meta
    assert meta["declared_type"] == "image/png" and meta["detected_type"] == "image/png"
    assert meta["size"] == len(PNG) and meta["name"] == "pic.png" and meta["post_id"] is None
    assert meta["channel_id"] == world["private"]["id"] and meta["user_id"] == alice.user["id"]
    status, headers, data = await download(alice, meta["id"])
    assert status == 200 and data == PNG
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"].startswith("inline;")  # a raster image that is what it says
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Length"] == str(len(PNG))
    assert headers["Cache-Control"] == "private"
    status, info = await alice.get(f"/api/v1/files/{meta['id']}/info")
    assert status == 200 and info == meta


async def test_a_streamed_upload_round_trips_intact(world: dict) -> None:
    """A chunked 6 MB upload (no Content-Length), read back through the chunked large-object reads."""
    blob = os.urandom(6 * 1024 * 1024 + 123)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), 100_000):
            yield blob[i:i + 100_000]

    status, meta = await upload(world["alice"], world["private"]["id"], body(), name="blob.bin")
    assert status == 201, meta
    assert meta["size"] == len(blob) and meta["detected_type"] == "application/octet-stream"
    status, _, data = await download(world["alice"], meta["id"])
    assert status == 200 and hashlib.sha256(data).digest() == hashlib.sha256(blob).digest()


async def test_dangerous_content_is_never_served_as_itself(world: dict) -> None:
    alice, ch = world["alice"], world["private"]["id"]
    # HTML declared as HTML: stored as declared, served as an opaque download.
    status, meta = await upload(alice, ch, HTML, name="page.html", ctype="text/html; charset=utf-8")
    assert status == 201 and meta["declared_type"] == "text/html" and meta["detected_type"] == "text/html"
    status, headers, data = await download(alice, meta["id"])
    assert status == 200 and data == HTML
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    # HTML declared as a PNG: the type is on the safe list, but the bytes disagree: not inline.
    status, meta = await upload(alice, ch, HTML, name="fake.png", ctype="image/png")
    assert status == 201 and meta["detected_type"] == "text/html"
    _, headers, _ = await download(alice, meta["id"])
    assert headers["Content-Type"] == "image/png" and headers["Content-Disposition"].startswith("attachment;")
    # SVG can carry script: never its own type.
    status, meta = await upload(alice, ch, b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>',
                                name="x.svg", ctype="image/svg+xml")
    assert meta["detected_type"] == "image/svg+xml"
    _, headers, _ = await download(alice, meta["id"])
    assert headers["Content-Type"] == "application/octet-stream"


async def test_names_from_content_disposition_and_unicode(world: dict) -> None:
    alice = world["alice"]
    status, meta = await upload(alice, world["private"]["id"], b"hello\n", name=None, ctype="text/plain",
                                headers={"Content-Disposition": "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%9C%93.txt"})
    assert status == 201, meta
    assert meta["name"] == "résumé ✓.txt" and meta["detected_type"] == "text/plain"
    _, headers, _ = await download(alice, meta["id"])
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    disposition = headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%9C%93.txt" in disposition
    # Path components and control/bidi characters are dropped from names.
    status, meta = await upload(alice, world["private"]["id"], b"x", name="../../etc/pass\u202ewd\x01.txt")
    assert status == 201 and meta["name"] == "passwd.txt"


async def test_bad_uploads_are_4xx(world: dict) -> None:
    alice, ch = world["alice"], world["private"]["id"]
    status, body = await alice.request("POST", "/api/v1/files?filename=x", data=b"x")
    assert status == 400 and body["id"] == "api.file.channel_required"
    status, body = await upload(alice, ch, b"x", name=None)
    assert status == 400 and body["id"] == "api.file.name_required"
    status, body = await upload(alice, ch, b"x", name="..")
    assert status == 400 and body["id"] == "api.file.invalid_name"
    status, body = await upload(alice, ch, b"x", name="n" * 256)
    assert status == 400 and body["id"] == "api.file.invalid_name"
    # A name from Content-Disposition is shortened instead, keeping its extension.
    status, meta = await upload(alice, ch, b"x", name=None, headers={"Content-Disposition": f'attachment; filename="{"n" * 300}.pdf"'})
    assert status == 201 and meta["name"] == "n" * 251 + ".pdf"
    status, body = await upload(alice, ch, b"--b\r\n", ctype="multipart/form-data; boundary=b")
    assert status == 415 and body["id"] == "api.file.multipart"
    status, body = await upload(alice, "0" * 26, b"x")
    assert status == 404
    status, body = await alice.get(f"/api/v1/files/{'0' * 26}")
    assert status == 404 and body["id"] == "file.not_found"
    status, meta = await upload(alice, ch, b"", name="empty.txt")
    assert status == 201 and meta["size"] == 0
    status, _, data = await download(alice, meta["id"])
    assert status == 200 and data == b""


async def test_who_may_upload(world: dict, anon: Api) -> None:
    status, body = await upload(anon, world["private"]["id"], b"x")
    assert status == 401
    # Not in the private channel: it does not exist for them.
    for who in ("carol", "mallory"):
        status, body = await upload(world[who], world["private"]["id"], b"x")
        assert status == 404, (who, body)
    # A public channel carol can read but has not joined: she may not write to it.
    status, body = await upload(world["carol"], world["public"]["id"], b"x")
    assert status == 403 and body["id"] == "api.channel.not_member"


async def test_who_may_download(world: dict, anon: Api) -> None:
    alice, bob = world["alice"], world["bob"]
    _, meta = await upload(alice, world["private"]["id"], PNG, name="shared.png", ctype="image/png")
    fid = meta["id"]
    # Until it is attached to a post only the uploader sees it.
    for api in (bob, world["carol"], world["mallory"]):
        assert (await download(api, fid))[0] == 404
    status, post = await alice.post(f"/api/v1/channels/{world['private']['id']}/posts",
                                    {"message": "a picture", "file_ids": [fid]})
    assert status == 201 and post["file_ids"] == [fid]
    status, _, data = await download(bob, fid)
    assert status == 200 and data == PNG
    status, info = await bob.get(f"/api/v1/files/{fid}/info")
    assert status == 200 and info["post_id"] == post["id"]
    # Outside the channel the file does not exist, for the bytes and the metadata alike.
    for who in ("carol", "mallory"):
        assert (await download(world[who], fid))[0] == 404
        status, body = await world[who].get(f"/api/v1/files/{fid}/info")
        assert status == 404 and body["id"] == "file.not_found"
    assert (await download(anon, fid))[0] == 401
    # Once the post is deleted, its files go with it.
    assert (await alice.delete(f"/api/v1/posts/{post['id']}"))[0] == 200
    assert (await download(bob, fid))[0] == 404
    assert (await download(alice, fid))[0] == 404


async def test_attaching_files_to_posts(world: dict) -> None:
    alice, bob = world["alice"], world["bob"]
    ch = world["private"]["id"]
    ids = [(await upload(alice, ch, f"file {i}".encode(), name=f"{i}.txt"))[1]["id"] for i in range(3)]
    status, post = await alice.post(f"/api/v1/channels/{ch}/posts", {"message": "three files", "file_ids": ids})
    assert status == 201 and post["file_ids"] == ids
    status, fetched = await bob.get(f"/api/v1/posts/{post['id']}")
    assert fetched["file_ids"] == ids
    status, page = await bob.get(f"/api/v1/channels/{ch}/posts?limit=5")
    assert next(p for p in page["posts"] if p["id"] == post["id"])["file_ids"] == ids
    # A post without files says so.
    status, plain = await alice.post(f"/api/v1/channels/{ch}/posts", {"message": "no files"})
    assert status == 201 and plain["file_ids"] == []

    async def refused(api: Api, file_ids: list[str], channel: str = ch) -> dict:
        before = (await api.get(f"/api/v1/channels/{channel}/posts?limit=1"))[1]["posts"]
        status, body = await api.post(f"/api/v1/channels/{channel}/posts", {"message": "x", "file_ids": file_ids})
        assert status == 400, body
        after = (await api.get(f"/api/v1/channels/{channel}/posts?limit=1"))[1]["posts"]
        assert after == before  # no post was created
        return body

    # Already attached.
    assert (await refused(alice, [ids[0]]))["id"] == "api.post.invalid_files"
    # Somebody else's upload (bob's, in the same channel).
    _, bobs = await upload(bob, ch, b"bob's", name="b.txt")
    assert (await refused(alice, [bobs["id"]]))["id"] == "api.post.invalid_files"
    # An upload to another channel.
    _, elsewhere = await upload(alice, world["public"]["id"], b"public", name="p.txt")
    assert (await refused(alice, [elsewhere["id"]]))["id"] == "api.post.invalid_files"
    # One good and one bad: all or nothing, the good one stays free.
    _, fresh = await upload(alice, ch, b"fresh", name="fresh.txt")
    await refused(alice, [fresh["id"], ids[1]])
    assert (await alice.get(f"/api/v1/files/{fresh['id']}/info"))[1]["post_id"] is None
    # Duplicates, too many, malformed.
    assert (await refused(alice, [fresh["id"], fresh["id"]]))["id"] == "api.post.invalid_files"
    assert (await refused(alice, [fresh["id"]] * 11))["id"] == "api.invalid_body"
    assert (await refused(alice, ["nope"]))["id"] == "api.invalid_body"
    # The free one still attaches, exactly once.
    status, post = await alice.post(f"/api/v1/channels/{ch}/posts", {"message": "ok", "file_ids": [fresh["id"]]})
    assert status == 201 and post["file_ids"] == [fresh["id"]]


async def test_a_file_is_attached_to_one_post_only_under_a_race(world: dict) -> None:
    alice, ch = world["alice"], world["private"]["id"]
    _, meta = await upload(alice, ch, b"contested", name="c.txt")
    results = await asyncio.gather(*(alice.post(f"/api/v1/channels/{ch}/posts",
                                                {"message": f"race {i}", "file_ids": [meta["id"]]}) for i in range(8)))
    assert sorted(s for s, _ in results) == [201] + [400] * 7


async def test_uploads_are_served_by_every_process(start_server, database_url: str, server: ServerProcess,
                                                   world: dict, http: aiohttp.ClientSession) -> None:
    """The bytes live in PostgreSQL, so another server process on the same database serves them."""
    other = start_server(database_url, name="files-other")
    alice = world["alice"]
    _, meta = await upload(alice, world["private"]["id"], PNG, name="any.png", ctype="image/png")
    elsewhere = Api(http, other.url, alice.token)
    status, _, data = await download(elsewhere, meta["id"])
    assert status == 200 and data == PNG
