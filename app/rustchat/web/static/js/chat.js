// The chat screen: loads teams, channels and posts over HTTP, applies WebSocket events, keeps
// unread counts, typing and presence, and refetches whatever a reconnect could not replay.

import { api, session } from "./api.js";
import { $ } from "./dom.js";
import { Composer } from "./composer.js";
import { showConnection } from "./connection.js";
import { browseChannels, newDirect } from "./dialogs.js";
import { MessageList } from "./messages.js";
import { Realtime } from "./realtime.js";
import { Typing } from "./typing.js";
import { channelLabel, dmPartner, renderSidebar } from "./sidebar.js";

const PAGE = 60;
const VIEW_DEBOUNCE_MS = 400;
const RESYNC_MARGIN_MS = 2000; // node clocks may differ a little; a post seen twice is merged anyway
const NARROW = window.matchMedia("(max-width: 760px)");

function wsUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/v1/websocket`;
}

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

export class Chat {
  constructor(me) {
    this.me = me;
    this.leaving = null; // the notice for the next page once the user chose to log out
    this.ended = false;
    this.users = new Map([[me.id, me]]);
    this.statuses = new Map();
    this.teams = [];
    this.teamId = sessionStorage.getItem("rustchat.team");
    this.channels = new Map();
    this.readStates = new Map();
    this.reactions = new Map();
    this.channelId = null;
    this.threadRootId = null;
    this.typing = new Typing();
    this.pendingUsers = new Set();
    this.viewTimers = new Map();
    this.openSeq = 0;
    this.sidebarReload = null;

    const ctx = {
      me,
      userName: (id) => this.userName(id),
      status: (id) => this.statuses.get(id) || "offline",
      reactions: (id) => this.reactions.get(id) || [],
      openThread: (id) => this.openThread(id),
      edit: (post, text) => this.editPost(post, text),
      remove: (post) => this.deletePost(post),
      toggleReaction: (post, name, mine) => this.toggleReaction(post, name, mine),
      canModify: (post) => post.user_id === me.id || me.is_admin,
    };
    this.postList = $("#post-list");
    this.threadEl = $("#thread-list");
    this.list = new MessageList(this.postList, ctx);
    this.threadList = new MessageList(this.threadEl, ctx, { thread: true });
    const notify = (text) => this.toast(text);
    this.composer = new Composer($("#composer-slot"), {
      label: "Message", placeholder: "Write a message…",
      channelId: () => this.channelId, send: (m, f) => this.send(m, f, ""),
      typing: () => this.sendTyping(""), editLast: () => this.editLast(this.list), notify,
    });
    this.threadComposer = new Composer($("#thread-composer-slot"), {
      label: "Reply", placeholder: "Reply in thread…",
      channelId: () => this.channelId, send: (m, f) => this.send(m, f, this.threadRootId),
      typing: () => this.sendTyping(this.threadRootId), editLast: () => this.editLast(this.threadList), notify,
    });
    this.rt = new Realtime({
      url: wsUrl(),
      token: session.token,
      handlers: {
        status: (state, detail) => showConnection(state, detail),
        hello: (info) => this.hello(info),
        event: (msg) => this.handle(msg),
        gap: () => this.resync(),
        revoked: () => this.endSession("Your session has ended. Please log in again."),
      },
    });
  }

  // -- start-up and wiring ------------------------------------------------------------------
  async start() {
    $("#me-name").textContent = this.me.username;
    $("#logout").addEventListener("click", () => this.logout());
    $("#sidebar-toggle").addEventListener("click", () => this.toggleSidebar());
    $("#team-select").addEventListener("change", (e) => this.selectTeam(e.target.value));
    $("#browse-channels").addEventListener("click", () => browseChannels(this));
    $("#new-dm").addEventListener("click", () => newDirect(this));
    $("#thread-close").addEventListener("click", () => this.closeThread());
    $("#load-older").addEventListener("click", () => this.loadOlder());
    $("#reconnect-now").addEventListener("click", () => this.rt.reconnectNow());
    // Keep the newest message in view while previews load, unless the reader has scrolled up.
    for (const list of [this.postList, this.threadEl]) {
      list.addEventListener("scroll", () => { list.atBottom = nearBottom(list); }, { passive: true });
      list.addEventListener("load", () => { if (list.atBottom !== false) list.scrollTop = list.scrollHeight; }, true);
    }
    $("#sidebar").addEventListener("click", (e) => {
      if (e.target.closest("a.channel-link") && NARROW.matches) this.toggleSidebar(false);
    });
    window.addEventListener("hashchange", () => this.route());
    window.addEventListener("online", () => this.rt.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.channelId) this.markViewed(this.channelId);
    });
    document.addEventListener("keydown", (e) => this.shortcut(e));
    setInterval(() => this.renderTyping(), 1000);

    this.rt.start();
    await this.loadSidebar();
    this.route();
  }

  shortcut(e) {
    if (e.key === "Escape") {
      if ($("#picker-dialog").open) return; // the dialog closes itself
      if (document.body.classList.contains("sidebar-open")) { this.toggleSidebar(false); return; }
      if (this.threadRootId) { this.closeThread(); return; }
    }
    if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      const links = [...document.querySelectorAll("#sidebar a.channel-link")];
      const at = links.findIndex((a) => a.dataset.channelId === this.channelId);
      const next = links[(at + (e.key === "ArrowDown" ? 1 : -1) + links.length) % links.length];
      if (next) { e.preventDefault(); location.hash = next.getAttribute("href"); }
    }
  }

  toggleSidebar(open) {
    const body = document.body;
    const next = open === undefined ? !body.classList.contains("sidebar-open") : open;
    body.classList.toggle("sidebar-open", next);
    $("#sidebar-toggle").setAttribute("aria-expanded", String(next));
    if (next) $("#sidebar a.channel-link, #sidebar select")?.focus();
  }

  route() {
    const m = /^#\/channels\/([a-z0-9]{26})$/.exec(location.hash);
    const wanted = m ? m[1] : sessionStorage.getItem("rustchat.channel");
    if (wanted && this.channels.has(wanted)) {
      if (wanted !== this.channelId) this.openChannel(wanted);
      return;
    }
    const first = [...document.querySelectorAll("#sidebar a.channel-link")][0];
    if (first) location.replace(first.getAttribute("href"));
    else this.showEmpty(true);
  }

  // -- users, presence ------------------------------------------------------------------------
  userName(id) {
    const user = this.users.get(id);
    return user ? user.username : null;
  }

  async ensureUsers(ids) {
    const missing = [...new Set(ids)].filter((id) => id && !this.users.has(id) && !this.pendingUsers.has(id));
    if (missing.length === 0) return;
    missing.forEach((id) => this.pendingUsers.add(id));
    try {
      for (let i = 0; i < missing.length; i += 200) {
        for (const user of await api.post("/api/v1/users/ids", missing.slice(i, i + 200))) this.users.set(user.id, user);
      }
    } catch (err) {
      this.toast(`Could not load user names: ${err.message}`);
    } finally {
      missing.forEach((id) => this.pendingUsers.delete(id));
    }
    for (const el of document.querySelectorAll("[data-user-name]")) {
      const name = this.userName(el.dataset.userName);
      if (name && el.textContent !== name) el.textContent = name;
    }
    this.updateTitle();
  }

  async loadStatuses(ids) {
    const wanted = [...new Set(ids)].filter(Boolean).slice(0, 200);
    if (wanted.length === 0) return;
    try {
      for (const s of await api.post("/api/v1/users/status/ids", wanted)) this.statuses.set(s.user_id, s.status);
    } catch { return; }
    this.paintPresence();
  }

  paintPresence() {
    for (const el of document.querySelectorAll("[data-presence-user]")) {
      const status = this.statuses.get(el.dataset.presenceUser) || "offline";
      el.dataset.status = status;
      el.title = status;
    }
    for (const el of document.querySelectorAll("[data-presence-text]")) {
      el.textContent = ` (${this.statuses.get(el.dataset.presenceText) || "offline"})`;
    }
  }

  // -- sidebar ------------------------------------------------------------------------------
  async loadSidebar() {
    const [teams, channels, states] = await Promise.all([
      api.get("/api/v1/teams"),
      api.get("/api/v1/users/me/channels"),
      api.get("/api/v1/users/me/channel_members"),
    ]);
    this.teams = teams;
    this.channels = new Map(channels.map((c) => [c.id, c]));
    this.readStates = new Map(states.map((s) => [s.channel_id, s]));
    if (this.channelId) {
      const cur = this.readStates.get(this.channelId);
      if (cur && !document.hidden) cur.unread_count = 0;
    }
    if (!teams.some((t) => t.id === this.teamId)) {
      const current = this.channels.get(this.channelId);
      this.teamId = (current && current.team_id) || (teams[0] && teams[0].id) || null;
    }
    const partners = channels.filter((c) => c.type === "direct").map((c) => dmPartner(c, this.me.id));
    renderSidebar(this);
    this.paintPresence();
    this.ensureUsers(partners);
    this.loadStatuses(partners);
  }

  /** Many events at once (a reconnect, a burst of joins) reload the sidebar once. */
  reloadSidebarSoon() {
    if (this.sidebarReload) return;
    this.sidebarReload = setTimeout(() => {
      this.sidebarReload = null;
      // One reload at a time, in order: an older answer arriving last would undo a newer one
      // (a DM's first post counted, then wiped by the reload its creation had started).
      this.sidebarReloads = (this.sidebarReloads || Promise.resolve()).then(() => this.reloadSidebarNow());
    }, 150);
  }

  async reloadSidebarNow() {
    try {
      await this.loadSidebar();
      if (this.channelId && !this.channels.has(this.channelId)) {
        this.channelId = null;
        this.list.clear();
        this.route();
      }
    } catch (err) { this.toast(`Could not refresh channels: ${err.message}`); }
  }

  selectTeam(teamId) {
    this.teamId = teamId;
    sessionStorage.setItem("rustchat.team", teamId);
    renderSidebar(this);
    this.paintPresence();
    const first = document.querySelector("#channel-list a.channel-link");
    if (first) location.hash = first.getAttribute("href");
  }

  // -- a channel's posts ----------------------------------------------------------------------
  showEmpty(empty) {
    $("#empty-state").hidden = !empty;
    $("#composer-slot").hidden = empty;
    this.postList.hidden = empty;
  }

  async openChannel(channelId) {
    const channel = this.channels.get(channelId);
    if (!channel) return;
    const token = ++this.openSeq;
    this.channelId = channelId;
    sessionStorage.setItem("rustchat.channel", channelId);
    if (channel.team_id && channel.team_id !== this.teamId) {
      this.teamId = channel.team_id;
      sessionStorage.setItem("rustchat.team", this.teamId);
    }
    this.closeThread();
    this.showEmpty(false);
    this.list.clear();
    this.composer.reset();
    $("#load-older").hidden = true;
    this.setTitle(channel);
    renderSidebar(this);
    this.paintPresence();
    this.renderTyping();
    let page;
    try {
      page = await api.get(`/api/v1/channels/${channelId}/posts?limit=${PAGE}`);
    } catch (err) {
      this.toast(`Could not load messages: ${err.message}`);
      return;
    }
    if (token !== this.openSeq) return;
    await this.withPosts(page.posts, () => page.posts.slice().reverse().forEach((p) => this.list.upsert(p)));
    $("#load-older").hidden = !page.has_more;
    this.postList.scrollTop = this.postList.scrollHeight;
    this.markViewed(channelId);
    if (!NARROW.matches) this.composer.focus();
  }

  setTitle(channel) {
    const label = channelLabel(this, channel);
    const title = $("#channel-title");
    title.textContent = channel.type === "direct" ? `@${label}` : `${channel.type === "private" ? "🔒 " : "# "}${label}`;
    title.dataset.userName = channel.type === "direct" ? dmPartner(channel, this.me.id) : "";
    if (channel.type !== "direct") delete title.dataset.userName;
  }

  updateTitle() {
    const channel = this.channels.get(this.channelId);
    if (channel) this.setTitle(channel);
  }

  /** Reactions, names and presence of these posts fetched, then `apply` (which renders them). */
  async withPosts(posts, apply) {
    const ids = posts.filter((p) => !p.delete_at).map((p) => p.id);
    const authors = posts.map((p) => p.user_id);
    const names = this.ensureUsers(authors);
    try {
      for (let i = 0; i < ids.length; i += 200) {
        const found = await api.post("/api/v1/posts/ids/reactions", ids.slice(i, i + 200));
        for (const [postId, list] of Object.entries(found)) this.reactions.set(postId, list);
      }
    } catch { /* reactions are shown once the next event or refetch brings them */ }
    await names;
    const stick = nearBottom(this.postList);
    apply();
    if (stick) this.postList.scrollTop = this.postList.scrollHeight;
    this.paintPresence();
    this.loadStatuses(authors.filter((id) => !this.statuses.has(id)));
  }

  async loadOlder() {
    const oldest = this.list.oldest();
    if (!oldest || !this.channelId) return;
    const channelId = this.channelId;
    const page = await api.get(`/api/v1/channels/${channelId}/posts?before=${oldest.id}&limit=${PAGE}`);
    if (channelId !== this.channelId) return;
    const height = this.postList.scrollHeight;
    await this.withPosts(page.posts, () => page.posts.forEach((p) => this.list.upsert(p)));
    this.postList.scrollTop += this.postList.scrollHeight - height;
    $("#load-older").hidden = !page.has_more;
  }

  addPost(post) {
    if (!this.statuses.has(post.user_id)) this.loadStatuses([post.user_id]);
    if (post.channel_id === this.channelId) {
      const stick = nearBottom(this.postList) || post.user_id === this.me.id;
      this.list.upsert(post);
      if (stick) this.postList.scrollTop = this.postList.scrollHeight;
    }
    if (this.threadRootId && (post.root_id === this.threadRootId || post.id === this.threadRootId)) {
      this.threadList.upsert(post);
      this.threadEl.scrollTop = this.threadEl.scrollHeight;
    }
  }

  async send(message, fileIds, rootId) {
    if (!this.channelId) return false;
    const body = { message };
    if (rootId) body.root_id = rootId;
    if (fileIds.length) body.file_ids = fileIds;
    try {
      const post = await api.post(`/api/v1/channels/${this.channelId}/posts`, body);
      this.addPost(post);
      return true;
    } catch (err) {
      this.toast(`Not sent: ${err.message}`);
      return false;
    }
  }

  async editPost(post, text) {
    try {
      this.addPost(await api.put(`/api/v1/posts/${post.id}`, { message: text }));
      return true;
    } catch (err) {
      this.toast(`Not saved: ${err.message}`);
      return false;
    }
  }

  async deletePost(post) {
    try {
      this.addPost(await api.del(`/api/v1/posts/${post.id}`));
      if (post.id === this.threadRootId) this.closeThread();
    } catch (err) {
      this.toast(`Not deleted: ${err.message}`);
    }
  }

  editLast(list) {
    const post = list.lastOwn(this.me.id);
    if (!post) return false;
    list.startEdit(post.id);
    return true;
  }

  async toggleReaction(post, name, mine) {
    try {
      if (mine) {
        await api.del(`/api/v1/posts/${post.id}/reactions/${encodeURIComponent(name)}`);
        this.reactionChanged({ post_id: post.id, user_id: this.me.id, emoji_name: name }, false);
      } else {
        this.reactionChanged(await api.post(`/api/v1/posts/${post.id}/reactions`, { emoji_name: name }), true);
      }
    } catch (err) {
      this.toast(`Reaction failed: ${err.message}`);
    }
  }

  reactionChanged(reaction, added) {
    const same = (r) => r.user_id === reaction.user_id && r.emoji_name === reaction.emoji_name;
    const list = (this.reactions.get(reaction.post_id) || []).filter((r) => !same(r));
    if (added) list.push(reaction);
    this.reactions.set(reaction.post_id, list);
    this.list.refreshReactions(reaction.post_id);
    this.threadList.refreshReactions(reaction.post_id);
  }

  // -- threads ------------------------------------------------------------------------------
  async openThread(rootId) {
    this.threadRootId = rootId;
    this.threadList.clear();
    this.threadComposer.reset();
    $("#thread-pane").hidden = false;
    document.body.classList.add("thread-open");
    this.renderTyping();
    let thread;
    try {
      thread = await api.get(`/api/v1/posts/${rootId}/thread`);
    } catch (err) {
      this.toast(`Could not open the thread: ${err.message}`);
      this.closeThread();
      return;
    }
    if (this.threadRootId !== rootId) return;
    await this.withPosts(thread.posts, () => thread.posts.forEach((p) => this.threadList.upsert(p)));
    this.threadEl.scrollTop = this.threadEl.scrollHeight;
    this.threadComposer.focus();
  }

  closeThread() {
    if (!this.threadRootId) return;
    const rootId = this.threadRootId;
    this.threadRootId = null;
    this.threadList.clear();
    $("#thread-pane").hidden = true;
    document.body.classList.remove("thread-open");
    const li = document.getElementById(`post-${rootId}`);
    if (li) li.focus(); else this.composer.focus();
  }

  // -- read state -----------------------------------------------------------------------------
  markViewed(channelId) {
    const state = this.readStates.get(channelId);
    if (state && state.unread_count) {
      state.unread_count = 0;
      renderSidebar(this);
      this.paintPresence();
    }
    clearTimeout(this.viewTimers.get(channelId));
    this.viewTimers.set(channelId, setTimeout(() => {
      this.viewTimers.delete(channelId);
      api.post("/api/v1/channels/members/me/view", { channel_id: channelId }).catch(() => {});
    }, VIEW_DEBOUNCE_MS));
  }

  countUnread(post) {
    if (post.user_id === this.me.id) return;
    if (post.channel_id === this.channelId && !document.hidden) {
      this.markViewed(post.channel_id);
      return;
    }
    const state = this.readStates.get(post.channel_id);
    if (state) state.unread_count = (state.unread_count || 0) + 1;
    renderSidebar(this);
    this.paintPresence();
  }

  // -- typing ---------------------------------------------------------------------------------
  sendTyping(parentId) {
    if (this.channelId) this.rt.send("user_typing", { channel_id: this.channelId, parent_id: parentId || "" });
  }

  typingChanged(channelId, parentId, userId, typing) {
    this.typing.set(channelId, parentId, userId, typing);
    this.ensureUsers([userId]);
    this.renderTyping();
  }

  renderTyping() {
    const name = (id) => this.userName(id);
    const main = this.channelId ? this.typing.text(this.channelId, "", name) : "";
    const thread = this.threadRootId ? this.typing.text(this.channelId, this.threadRootId, name) : "";
    if ($("#typing").textContent !== main) $("#typing").textContent = main;
    if ($("#thread-typing").textContent !== thread) $("#thread-typing").textContent = thread;
  }

  // -- the WebSocket ------------------------------------------------------------------------
  hello({ resumed, first, nodeId }) {
    this.nodeId = nodeId;
    // A resumed connection replays what it missed. A new one after the first cannot: refetch.
    if (!resumed && !first) this.resync();
  }

  async resync() {
    this.reloadSidebarSoon();
    const channelId = this.channelId;
    if (!channelId || this.list.size === 0) return;
    const since = Math.max(0, this.list.maxUpdateAt() - RESYNC_MARGIN_MS);
    try {
      const page = await api.get(`/api/v1/channels/${channelId}/posts?since=${since}&limit=200`);
      if (channelId !== this.channelId) return;
      if (page.has_more) { this.channelId = null; this.openChannel(channelId); return; }
      await this.withPosts(page.posts, () => page.posts.slice().reverse().forEach((p) => this.addPost(p)));
      if (this.threadRootId) {
        const thread = await api.get(`/api/v1/posts/${this.threadRootId}/thread`);
        thread.posts.forEach((p) => this.threadList.upsert(p));
      }
    } catch (err) {
      this.toast(`Could not catch up: ${err.message}`);
    }
  }

  handle(msg) {
    const data = msg.data || {};
    const channelId = (msg.broadcast && msg.broadcast.channel_id) || data.channel_id || "";
    switch (msg.event) {
      case "posted": {
        const post = data.post;
        if (!this.channels.has(post.channel_id)) { this.reloadSidebarSoon(); return; }
        const fresh = !this.list.has(post.id);
        this.typingChanged(post.channel_id, post.root_id, post.user_id, false);
        this.ensureUsers([post.user_id]).then(() => this.addPost(post));
        if (fresh) this.countUnread(post);
        break;
      }
      case "post_edited":
      case "post_deleted":
        this.addPost(data.post);
        if (msg.event === "post_deleted" && data.post.id === this.threadRootId) this.closeThread();
        break;
      case "reaction_added":
      case "reaction_removed":
        this.reactionChanged(data.reaction, msg.event === "reaction_added");
        break;
      case "typing":
        this.typingChanged(channelId, data.parent_id, data.user_id, true);
        break;
      case "status_change":
        this.statuses.set(data.user_id, data.status);
        this.paintPresence();
        break;
      case "channel_viewed": {
        const state = this.readStates.get(data.channel_id);
        if (state && state.unread_count) { state.unread_count = 0; renderSidebar(this); this.paintPresence(); }
        break;
      }
      case "user_added":
      case "user_removed":
        if (data.user_id === this.me.id) this.reloadSidebarSoon();
        break;
      case "channel_created":
      case "direct_added":
      case "added_to_team":
      case "leave_team":
        this.reloadSidebarSoon();
        break;
      case "resync": // the server lost events meant for us: refetch the open channel and the sidebar
        this.resync();
        break;
      default:
        break;
    }
  }

  // -- session ------------------------------------------------------------------------------
  toast(text) {
    const el = $("#toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  async logout() {
    // Other requests in flight when the token is revoked come back 401, some only after the logout
    // itself: each would end the session with "Your session has ended". Ours is the reason.
    this.leaving = "You have logged out.";
    this.rt.stop();
    try { await api.post("/api/v1/auth/logout"); } catch { /* the token is dropped either way */ }
    this.endSession(this.leaving);
  }

  endSession(notice) {
    // The first end is final: a late 401 must not replace the notice the next page shows.
    if (this.ended) return;
    this.ended = true;
    notice = this.leaving || notice;
    this.rt.stop();
    session.token = null;
    sessionStorage.removeItem("rustchat.channel");
    sessionStorage.setItem("rustchat.notice", notice);
    location.replace("/");
  }


}
