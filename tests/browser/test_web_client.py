"""The web client end to end: two users in two browsers on two server processes joined through
Redis, chatting in real time; safe rendering; attachments; a restarted node; the connection
limit; keyboard use, labels, the phone layout; and the screenshots in the README."""

from __future__ import annotations

import re
import struct
import zlib

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import (
    PHONE,
    Cluster,
    file_bytes,
    login,
    post_item,
    screenshot_dir,
    unique,
)
from tests.support.client import Api
from tests.support.wait import wait_for
from tests.test_connection_limits import connect


@pytest.fixture(scope="module")
async def alice(cluster: Cluster, open_page):  # noqa: ANN001, ANN201
    """Alice on node A."""
    return await open_page(cluster.a, "alice")


@pytest.fixture(scope="module")
async def bob(cluster: Cluster, open_page):  # noqa: ANN001, ANN201
    """Bob on node B."""
    return await open_page(cluster.b, "bob")


async def send(page: Page, text: str, where: str = "#channel-pane") -> None:
    box = page.locator(f"{where} textarea.composer-input")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


def png(width: int = 48, height: int = 32) -> bytes:
    """A real PNG (an orange gradient), made here rather than shipped."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width)
                                     for v in (200, 80 + 170 * x // width, 14 + 200 * y // height))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def test_two_users_on_two_nodes_chat_in_real_time(cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    a_node = await alice.page.evaluate("window.rustchat.nodeId")
    b_node = await bob.page.evaluate("window.rustchat.nodeId")
    assert a_node and b_node and a_node != b_node  # two processes, joined only through Redis

    await expect(alice.page.locator("#channel-title")).to_have_text("# General")
    hello = unique("hello from **A**")
    await alice.page.locator("#channel-pane textarea.composer-input").fill(hello)
    await expect(bob.page.locator("#typing")).to_have_text("alice is typing…")
    await alice.page.locator("#channel-pane textarea.composer-input").press("Enter")
    on_bob = post_item(bob.page, hello.replace("**", ""))
    await expect(on_bob).to_have_count(1)
    await expect(on_bob.locator(".post-body strong")).to_have_text("A")
    await expect(on_bob.locator(".author")).to_have_text("alice")
    await expect(bob.page.locator("#typing")).to_have_text("")

    # Presence: each sees the other online.
    await expect(on_bob.locator(".presence")).to_have_attribute("data-status", "online")
    reply = unique("bob answers")
    await send(bob.page, reply)
    await expect(post_item(alice.page, reply).locator(".presence")).to_have_attribute("data-status", "online")

    # A thread: Bob replies to Alice's post, Alice opens the thread from the reply count.
    await on_bob.get_by_role("button", name="Reply in thread").click()
    in_thread = unique("in the thread")
    await send(bob.page, in_thread, "#thread-pane")
    await expect(post_item(bob.page, in_thread, "#thread-list")).to_have_count(1)
    on_alice = post_item(alice.page, hello.replace("**", ""))
    await on_alice.get_by_role("button", name="1 reply: open thread").click()
    await expect(post_item(alice.page, in_thread, "#thread-list")).to_have_count(1)
    await alice.page.get_by_role("button", name="Close thread").click()
    await bob.page.get_by_role("button", name="Close thread").click()

    # A reaction from Bob reaches Alice.
    await on_bob.get_by_role("button", name="Add reaction").click()
    await on_bob.get_by_role("button", name="React with tada").click()
    chip = on_alice.locator("button.reaction[data-emoji=tada]")
    await expect(chip).to_have_text("🎉 1")
    await expect(chip).to_have_attribute("aria-pressed", "false")
    await chip.click()  # Alice adds hers
    await expect(on_bob.locator("button.reaction[data-emoji=tada]")).to_have_text("🎉 2")

    # Alice edits, then deletes; Bob sees both.
    edited = unique("edited on A")
    await on_alice.hover()
    await on_alice.get_by_role("button", name="Edit message").click()
    editor = alice.page.get_by_role("textbox", name="Edited message")
    await editor.fill(edited)
    await editor.press("Enter")
    on_bob = post_item(bob.page, edited)
    await expect(on_bob).to_have_count(1)
    await expect(on_bob.locator(".edited")).to_have_text("(edited)")
    on_alice = post_item(alice.page, edited)
    await on_alice.hover()
    await on_alice.get_by_role("button", name="Delete message").click()
    await alice.page.get_by_role("button", name="Yes, delete message").click()
    await expect(post_item(bob.page, edited)).to_have_count(0)
    await expect(bob.page.locator("#post-list li.post.deleted")).to_have_count(1)
    alice.assert_clean()
    bob.assert_clean()


async def test_unread_markers_follow_posts_in_other_channels(cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    alice_api, bob_api = cluster.users["alice"], cluster.users["bob"]
    channel = await alice_api.new_channel(cluster.team, "private", bob_api)
    link = alice.page.locator(f"a.channel-link[data-channel-id='{channel['id']}']")
    await expect(link).to_be_visible()  # the sidebar picked up the new channel by itself
    for i in range(2):
        await Api(bob_api.session, cluster.b.url, bob_api.token).post(
            f"/api/v1/channels/{channel['id']}/posts", {"message": f"unread {i}"})
    await expect(link.locator(".badge")).to_have_text("2")
    await expect(link).to_have_class("channel-link unread")
    await link.click()
    await expect(post_item(alice.page, "unread 1")).to_have_count(1)
    await expect(link.locator(".badge")).to_have_count(0)
    # The server agrees, so a reload (or another tab) starts without the marker.
    await wait_for(lambda: _unread(alice_api, channel["id"], 0))
    await alice.page.get_by_role("link", name="General").click()
    await expect(alice.page.locator("#channel-title")).to_have_text("# General")


async def _unread(api: Api, channel_id: str, expected: int) -> bool:
    _, states = await api.get("/api/v1/users/me/channel_members")
    return any(s["channel_id"] == channel_id and s["unread_count"] == expected for s in states)


async def test_a_script_in_a_post_is_shown_as_text(alice, bob) -> None:  # noqa: ANN001
    hostile = ('<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
               ' [click](javascript:window.pwned=3) <b>bold?</b> ' + unique("tag"))
    await send(bob.page, hostile)
    item = post_item(alice.page, hostile)
    await expect(item).to_have_count(1)
    body = item.locator(".post-body")
    assert await body.inner_text() == hostile  # every character shown as typed
    assert await body.locator("script, img, b, a").count() == 0
    for page in (alice.page, bob.page):
        assert await page.evaluate("window.pwned") is None
        assert await page.locator("#post-list script, #post-list img[src=x]").count() == 0
    alice.assert_clean()
    bob.assert_clean()


async def test_links_and_markdown_render_safely(alice, bob) -> None:  # noqa: ANN001
    tag = unique("md")
    await send(bob.page, f"{tag} see [the docs](https://example.com/docs) and `x < y`")
    item = post_item(alice.page, tag)
    link = item.locator(".post-body a")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    await expect(item.locator(".post-body code")).to_have_text("x < y")


async def test_attachments_show_image_previews(cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    composer = alice.page.locator("#channel-pane form.composer")
    await composer.locator("input[type=file]").set_input_files([
        {"name": "gradient.png", "mimeType": "image/png", "buffer": png()},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"plain notes\n"},
    ])
    await expect(composer.locator(".chip", has_text="ready")).to_have_count(2)
    caption = unique("two files")
    await send(alice.page, caption)
    item = post_item(bob.page, caption)
    image = item.get_by_role("img", name="gradient.png")
    await expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    await expect(image).to_have_js_property("naturalWidth", 48)  # decoded: the bytes arrived intact
    await expect(item.get_by_role("button", name="Download notes.txt (12 B)")).to_be_visible()
    async with bob.page.expect_download() as download:
        await item.get_by_role("button", name="Download notes.txt (12 B)").click()
    saved = await (await download.value).path()
    assert file_bytes(saved) == b"plain notes\n"
    alice.assert_clean()
    bob.assert_clean()


async def test_restarted_node_shows_in_the_connection_state_and_nothing_is_lost_or_doubled(
        cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    state = alice.page.locator("#connection")
    await expect(state).to_have_attribute("data-state", "connected")
    before = await alice.page.evaluate("window.rustchat.rt.connectionId")
    cluster.a.stop()  # SIGTERM: the node drains (1012) and exits
    await expect(state).to_have_attribute("data-state", "reconnecting")
    await expect(state).to_contain_text("reconnecting")
    missed = [unique(f"while A was down {i}") for i in range(3)]
    for text in missed:
        await send(bob.page, text)  # Bob's node B is unaffected
    await expect(bob.page.locator("#connection")).to_have_attribute("data-state", "connected")
    cluster.a.start()
    await expect(state).to_have_attribute("data-state", "connected", timeout=60_000)
    for text in missed:
        await expect(post_item(alice.page, text)).to_have_count(1)
    # A round trip after the catch-up: anything replayed twice would be on screen by now.
    after = unique("back on A")
    await send(alice.page, after)
    await expect(post_item(bob.page, after)).to_have_count(1)
    for text in missed:
        await expect(post_item(alice.page, text)).to_have_count(1)
    texts = await alice.page.locator("#post-list li.post").evaluate_all("els => els.map(e => e.dataset.postId)")
    assert len(texts) == len(set(texts))
    resumed = await alice.page.evaluate("window.rustchat.rt.connectionId") == before
    print(f"alice's connection {'resumed' if resumed else 'was refetched'} after the restart")
    bob.assert_clean()


async def test_killed_node_loses_its_replay_and_the_client_refetches(cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    """SIGKILL: no 1012, no resume record. The client backs off, gets a new connection_id on the
    restarted node and fetches what it missed instead."""
    state = alice.page.locator("#connection")
    await expect(state).to_have_attribute("data-state", "connected")
    before = await alice.page.evaluate("window.rustchat.rt.connectionId")
    cluster.a.kill()
    await expect(state).to_have_attribute("data-state", "reconnecting")
    await expect(state).to_contain_text("Connection lost")
    missed = [unique(f"while A was dead {i}") for i in range(2)]
    for text in missed:
        await send(bob.page, text)
    cluster.a.start()
    await expect(state).to_have_attribute("data-state", "connected", timeout=60_000)
    assert await alice.page.evaluate("window.rustchat.rt.connectionId") != before
    for text in missed:
        await expect(post_item(alice.page, text)).to_have_count(1)
    after = unique("A is back")
    await send(bob.page, after)  # live events flow again, on the new connection
    await expect(post_item(alice.page, after)).to_have_count(1)
    for text in missed:
        await expect(post_item(alice.page, text)).to_have_count(1)
    bob.assert_clean()


async def test_over_the_limit_shows_the_message(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    admin = Api(cluster.admin.session, cluster.a.url, cluster.admin.token)
    carol = Api(cluster.admin.session, cluster.a.url, cluster.users["carol"].token)
    first = await open_page(cluster.a, "carol")
    assert (await admin.put("/api/v1/admin/config/site", {"max_simultaneous_connections": 1}))[0] == 200
    try:
        # Every node applies the new limit within a few seconds; header authentication gets 429.
        await wait_for(lambda: _refused(carol, cluster))
        second = await open_page(cluster.a)
        await second.page.get_by_label("Username or email").fill("carol")
        await second.page.get_by_label("Password").fill("web-test-password")
        await second.page.get_by_role("button", name="Log in").click()
        await expect(second.page.locator("#connection")).to_have_attribute("data-state", "limited")
        banner = second.page.get_by_role("alert").filter(has_text="Too many simultaneous connections")
        await expect(banner).to_contain_text("the limit is 1 per user")
        await expect(first.page.locator("#connection")).to_have_attribute("data-state", "connected")
    finally:
        assert (await admin.put("/api/v1/admin/config/site", {"max_simultaneous_connections": 5}))[0] == 200
        await wait_for(lambda: _accepted(carol, cluster))


async def _accepted(carol: Api, cluster: Cluster) -> bool:
    """Both nodes take a second connection of Carol's again (the old limit is gone everywhere)."""
    for server in (cluster.a, cluster.b):
        result = await connect(carol, server)
        if isinstance(result, int):
            return False
        await result.close()
    return True


async def _refused(carol: Api, cluster: Cluster) -> bool:
    result = await connect(carol, cluster.a)
    if isinstance(result, int):
        return result == 429
    await result.close()
    return False


async def test_keyboard_only_login_channel_switch_send_and_edit(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    w = await open_page(cluster.b)
    page = w.page
    await expect(page.get_by_label("Username or email")).to_be_focused()
    await page.keyboard.type("carol")
    await page.keyboard.press("Tab")
    await page.keyboard.type("web-test-password")
    await page.keyboard.press("Enter")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    box = page.locator("#channel-pane textarea.composer-input")
    await expect(box).to_be_focused()
    text = unique("typed, not clicked")
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")
    await expect(post_item(page, text)).to_have_count(1)
    await expect(box).to_have_value("")
    # Up in the empty box edits the last message; Enter saves, Escape would cancel.
    await page.keyboard.press("ArrowUp")
    editor = page.get_by_role("textbox", name="Edited message")
    await expect(editor).to_be_focused()
    await page.keyboard.press("End")
    await page.keyboard.type(" (fixed)")
    await page.keyboard.press("Enter")
    await expect(post_item(page, f"{text} (fixed)").locator(".edited")).to_have_count(1)
    # Tab reaches the message's action buttons.
    await post_item(page, text).focus()
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_accessible_name("Reply in thread")
    w.assert_clean()


LABEL_CHECK = """() => [...document.querySelectorAll('button, input, select, textarea, a[href]')]
  .filter(el => el.offsetParent !== null && el.type !== 'hidden')
  .filter(el => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
                  || (el.labels && el.labels.length) || el.textContent.trim() || el.title))
  .map(el => el.outerHTML.slice(0, 120))"""


async def test_every_control_is_labelled(cluster: Cluster, alice) -> None:  # noqa: ANN001
    page = alice.page
    assert await page.evaluate(LABEL_CHECK) == []
    first = page.locator("#post-list li.post").last
    await first.get_by_role("button", name="Reply in thread").click()
    await page.locator("#post-list li.post").last.get_by_role("button", name="Add reaction").click()
    assert await page.evaluate(LABEL_CHECK) == []
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Close thread").click()
    await page.get_by_role("button", name="Start a direct message").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    assert await page.evaluate(LABEL_CHECK) == []
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_be_hidden()


async def test_direct_message_from_the_sidebar(cluster: Cluster, alice, bob) -> None:  # noqa: ANN001
    await alice.page.get_by_role("button", name="Start a direct message").click()
    await alice.page.get_by_label("Filter").fill("bo")
    await alice.page.get_by_role("button", name="bob", exact=True).click()
    await expect(alice.page.locator("#channel-title")).to_have_text("@bob")
    text = unique("just between us")
    await send(alice.page, text)
    dm = bob.page.locator("#dm-list a.channel-link", has_text="alice")
    await expect(dm.locator(".badge")).to_have_text("1")
    await expect(dm.locator(".presence")).to_have_attribute("data-status", "online")
    await dm.click()
    await expect(post_item(bob.page, text)).to_have_count(1)
    await bob.page.get_by_role("link", name="General").click()
    await alice.page.get_by_role("link", name="General").click()


async def test_phone_width_layout(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    w = await open_page(cluster.b, "bob", viewport=PHONE)
    page = w.page
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    sidebar = page.get_by_role("navigation", name="Teams, channels and direct messages")
    toggle = page.get_by_role("button", name="Channels", exact=True)
    await expect(sidebar).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    await expect(sidebar).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await sidebar.get_by_role("link", name="General").click()
    await expect(sidebar).to_be_hidden()  # choosing a channel gives the screen back to it
    await expect(page.locator("#channel-pane textarea.composer-input")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    w.assert_clean()


async def test_screenshots_of_the_main_views(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    """Desktop and phone views for the README; they land in RUSTCHAT_SCREENSHOT_DIR when set."""
    alice_api, bob_api = cluster.users["alice"], cluster.users["bob"]
    status, ch = await alice_api.post("/api/v1/channels", {"team_id": cluster.team["id"], "name": "release",
                                                           "display_name": "Release 0.2", "type": "private"})
    await alice_api.post(f"/api/v1/channels/{ch['id']}/members", {"user_id": bob_api.user["id"]})
    path = f"/api/v1/channels/{ch['id']}/posts"
    _, root = await alice_api.post(path, {"message": "Release checklist for **0.2**:\n- migrations\n- `make bench`"
                                                     "\n- changelog"})
    await bob_api.post(path, {"message": "Migrations are done and tested on the staging cluster.", "root_id": root["id"]})
    await bob_api.post(f"/api/v1/posts/{root['id']}/reactions", {"emoji_name": "+1"})
    status, up = await bob_api.request("POST", f"/api/v1/files?channel_id={ch['id']}&filename=palette.png",
                                       data=png(320, 160), headers={"Content-Type": "image/png"})
    assert status == 201, up
    await bob_api.post(path, {"message": "The colours for the new login page 🎨", "file_ids": [up["id"]]})
    await alice_api.post(path, {"message": "Looks good @bob, see https://example.com/changelog"})
    out = screenshot_dir()

    desktop = await open_page(cluster.a)
    await desktop.page.screenshot(path=out / "login.png", animations="disabled")
    await login(desktop.page, "bob")
    await desktop.page.get_by_role("link", name="Release 0.2").click()
    await expect(desktop.page.locator("img.file-preview")).to_have_js_property("complete", True)
    await desktop.page.mouse.move(0, 0)
    await desktop.page.screenshot(path=out / "desktop-channel.png", animations="disabled")
    await post_item(desktop.page, "Release checklist").get_by_role("button", name="1 reply: open thread").click()
    await expect(desktop.page.locator("#thread-list li.post")).to_have_count(2)
    await desktop.page.mouse.move(0, 0)
    await desktop.page.screenshot(path=out / "desktop-thread.png", animations="disabled")

    phone = await open_page(cluster.b, "alice", viewport=PHONE)
    await phone.page.get_by_role("button", name="Channels", exact=True).click()
    await phone.page.get_by_role("link", name="Release 0.2").click()
    await expect(phone.page.locator("img.file-preview")).to_have_js_property("complete", True)
    await phone.page.screenshot(path=out / "phone-channel.png", animations="disabled")
    await phone.page.get_by_role("button", name="Channels", exact=True).click()
    await expect(phone.page.get_by_role("navigation")).to_be_visible()
    await phone.page.screenshot(path=out / "phone-sidebar.png", animations="disabled")
    for name in ("login", "desktop-channel", "desktop-thread", "phone-channel", "phone-sidebar"):
        assert file_bytes(out / f"{name}.png")[:8] == b"\x89PNG\r\n\x1a\n"
    desktop.assert_clean()
    phone.assert_clean()


async def test_logout_ends_the_session_and_the_token_never_left_the_tab(cluster: Cluster, open_page, alice,
                                                                         bob) -> None:  # noqa: ANN001
    w = await open_page(cluster.a, "carol")
    token = await w.page.evaluate("sessionStorage.getItem('rustchat.token')")
    assert token and len(token) > 20
    assert await w.context.cookies() == []  # no cookie session at all
    await w.page.get_by_role("button", name="Log out").click()
    await expect(w.page.get_by_role("button", name="Log in")).to_be_visible()
    await expect(w.page.get_by_role("status").filter(has_text="You have logged out")).to_be_visible()
    assert await w.page.evaluate("sessionStorage.getItem('rustchat.token')") is None
    status, _ = await Api(cluster.admin.session, cluster.a.url, token).get("/api/v1/users/me")
    assert status == 401
    for page in (w, alice, bob):
        tokens = [await page.page.evaluate("sessionStorage.getItem('rustchat.token')"), token]
        for url in page.urls:
            assert not any(t and t in url for t in tokens), url
    assert any("/api/v1/websocket" in url for url in alice.urls)


MARKDOWN_CASES = [
    ("**bold** and *it* and _it_ and ~~gone~~", "<p><strong>bold</strong> and <em>it</em> and <em>it</em> and <del>gone</del></p>"),
    ("snake_case_name stays", "<p>snake_case_name stays</p>"),
    ("`<b>x</b>`", "<p><code>&lt;b&gt;x&lt;/b&gt;</code></p>"),
    ("```\n<script>alert(1)</script>\n**no**\n```", "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;\n**no**</code></pre>"),
    ("> quoted\n> more", "<blockquote>quoted<br>more</blockquote>"),
    ("- a\n- b\n1. c", "<ul><li>a</li><li>b</li></ul><ol><li>c</li></ol>"),
    ("# Title", '<p class="md-heading"><strong>Title</strong></p>'),
    ("line one\nline two\n\nnext", "<p>line one<br>line two</p><p>next</p>"),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
    ('[a "q"](https://e.com/?a=1&b=2)',
     '<p><a href="https://e.com/?a=1&amp;b=2" rel="noopener noreferrer nofollow" target="_blank">a "q"</a></p>'),
    ("see https://e.com/x.", '<p>see <a href="https://e.com/x" rel="noopener noreferrer nofollow" target="_blank">'
                             "https://e.com/x</a>.</p>"),
    ("hi @carol and @dave", '<p>hi <span class="mention mention-me">@carol</span> and <span class="mention">@dave</span></p>'),
    ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
]


async def test_markdown_renderer_builds_only_its_own_elements(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    """The client's renderer, run in the browser on cases from plain text to hostile input."""
    w = await open_page(cluster.b)
    rendered = await w.page.evaluate("""async (cases) => {
        const { renderMarkdown } = await import("/static/js/markdown.js");
        return cases.map(([src]) => {
            const box = document.createElement("div");
            box.append(renderMarkdown(src, "carol"));
            return box.innerHTML;  // serialised only to compare; never assigned
        });
    }""", [[src, want] for src, want in MARKDOWN_CASES])
    assert rendered == [want for _, want in MARKDOWN_CASES]


async def test_reconnect_delays_are_jittered_and_bounded(cluster: Cluster, open_page) -> None:  # noqa: ANN001
    w = await open_page(cluster.b)
    delays = await w.page.evaluate("""async () => {
        const { backoffDelay } = await import("/static/js/realtime.js");
        const at = (attempt, r) => backoffDelay(attempt, () => r);
        return [0, 1, 2, 3, 10, 50].map((n) => [at(n, 0), at(n, 0.5), at(n, 0.999999)]);
    }""")
    lows, mids, highs = zip(*delays, strict=True)
    assert set(lows) == {200}  # never a tight loop
    assert list(highs) == [700, 1200, 2200, 4200, 15200, 15200]  # doubling, capped at 15 s
    assert all(lo < mid < hi for lo, mid, hi in delays)  # spread over the whole range
