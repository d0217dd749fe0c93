// A list of posts (a channel's, or one thread's), keyed by post id: a post arriving twice (live
// and again from a refetch or a replay) updates its one element, and an older copy never
// replaces a newer one.

import { formatTime, h } from "./dom.js";
import { emojiChar, PICKER } from "./emoji.js";
import { renderFiles } from "./files.js";
import { renderMarkdown } from "./markdown.js";

function order(a, b) {
  return a.create_at - b.create_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export class MessageList {
  /**
   * ctx: me, userName(id), status(userId), reactions(postId), post(id), openThread(rootId), edit(post, text),
   * remove(post), toggleReaction(post, name), canModify(post).
   */
  constructor(ol, ctx, { thread = false } = {}) {
    this.ol = ol;
    this.ctx = ctx;
    this.thread = thread;
    this.items = new Map();
    this.replies = new Map(); // root id → ids of its replies in this list
    this.prefix = thread ? "thread-post" : "post";
  }

  clear() {
    this.items.clear();
    this.replies.clear();
    this.ol.replaceChildren();
  }

  get size() { return this.items.size; }

  has(id) { return this.items.has(id); }

  oldest() {
    let best = null;
    for (const { post } of this.items.values()) if (!best || order(post, best) < 0) best = post;
    return best;
  }

  maxUpdateAt() {
    let max = 0;
    for (const { post } of this.items.values()) max = Math.max(max, post.update_at, post.create_at);
    return max;
  }

  /** Insert or update; returns true when the post is new to this list. */
  upsert(post) {
    const existing = this.items.get(post.id);
    if (existing && existing.post.update_at > post.update_at) return false;
    if (post.root_id) this.countReply(post);
    const li = this.render(post);
    if (existing) {
      existing.li.replaceWith(li);
      this.items.set(post.id, { post, li });
      return false;
    }
    this.items.set(post.id, { post, li });
    let before = null;
    for (let node = this.ol.lastElementChild; node; node = node.previousElementSibling) {
      const other = this.items.get(node.dataset.postId);
      if (other && order(other.post, post) < 0) break;
      before = node;
    }
    this.ol.insertBefore(li, before);
    return true;
  }

  countReply(post) {
    const ids = this.replies.get(post.root_id) || new Set();
    if (post.delete_at) ids.delete(post.id); else ids.add(post.id);
    this.replies.set(post.root_id, ids);
    const root = this.items.get(post.root_id);
    const old = root && root.li.querySelector(".reply-count");
    if (old) old.replaceWith(this.renderReplyCount(root.post));
  }

  renderReplyCount(post) {
    const n = this.thread ? 0 : (this.replies.get(post.id) || new Set()).size;
    if (!n) return h("span", { className: "reply-count", hidden: true });
    return h("button", {
      type: "button", className: "link reply-count", text: `${n} repl${n === 1 ? "y" : "ies"}`,
      "aria-label": `${n} repl${n === 1 ? "y" : "ies"}: open thread`, onclick: () => this.ctx.openThread(post.id),
    });
  }

  refreshReactions(postId) {
    const item = this.items.get(postId);
    if (!item) return;
    const old = item.li.querySelector(".reactions");
    if (old) old.replaceWith(this.renderReactions(item.post));
  }

  /** The newest post of `userId` that may still be edited (for Up in an empty composer). */
  lastOwn(userId) {
    let best = null;
    for (const { post } of this.items.values()) {
      if (post.user_id === userId && !post.delete_at && (!best || order(post, best) > 0)) best = post;
    }
    return best;
  }

  render(post) {
    const ctx = this.ctx;
    const li = h("li", {
      className: `post${post.user_id === ctx.me.id ? " own" : ""}${post.root_id ? " reply" : ""}`,
      id: `${this.prefix}-${post.id}`, "data-post-id": post.id, "data-author": post.user_id, tabindex: "-1",
    });
    const created = new Date(post.create_at);
    li.append(h("div", { className: "post-head" },
      h("span", { className: "presence", "data-presence-user": post.user_id, "data-status": ctx.status(post.user_id),
        title: ctx.status(post.user_id), "aria-hidden": "true" }),
      h("span", { className: "author", "data-user-name": post.user_id, text: ctx.userName(post.user_id) || "…" }),
      h("time", { datetime: created.toISOString(), title: created.toLocaleString(), text: formatTime(post.create_at) }),
      post.edit_at && !post.delete_at ? h("span", { className: "edited muted", text: "(edited)" }) : null,
    ));
    if (post.delete_at) {
      li.classList.add("deleted");
      li.append(h("p", { className: "post-body muted", text: "This message was deleted." }));
      return li;
    }
    if (!this.thread && post.root_id) {
      const root = this.items.get(post.root_id);
      const author = root && ctx.userName(root.post.user_id);
      const whose = author ? `${author}'s message` : "a message";
      li.append(h("button", {
        type: "button", className: "link thread-ref", text: `↪ replied to ${whose}`,
        "aria-label": `Reply to ${whose}: open thread`, onclick: () => ctx.openThread(post.root_id),
      }));
    }
    const body = h("div", { className: "post-body" });
    body.append(renderMarkdown(post.message, ctx.me.username));
    li.append(body);
    const files = renderFiles(post.file_ids);
    if (files) li.append(files);
    if (!post.root_id) li.append(this.renderReplyCount(post));
    li.append(this.renderReactions(post));
    li.append(this.renderActions(post, li));
    return li;
  }

  renderReactions(post) {
    const groups = new Map();
    for (const r of this.ctx.reactions(post.id)) {
      const g = groups.get(r.emoji_name) || { count: 0, mine: false };
      g.count += 1;
      if (r.user_id === this.ctx.me.id) g.mine = true;
      groups.set(r.emoji_name, g);
    }
    const box = h("div", { className: "reactions" });
    for (const [name, g] of groups) {
      box.append(h("button", {
        type: "button", className: "reaction", "aria-pressed": g.mine ? "true" : "false",
        "data-emoji": name,
        "aria-label": `${name}: ${g.count} reaction${g.count === 1 ? "" : "s"}${g.mine ? ", yours included; remove yours" : "; add yours"}`,
        onclick: () => this.ctx.toggleReaction(post, name, g.mine),
      }, h("span", { "aria-hidden": "true", text: emojiChar(name) }), ` ${g.count}`));
    }
    return box;
  }

  renderActions(post, li) {
    const ctx = this.ctx;
    const who = ctx.userName(post.user_id) || "user";
    const actions = h("div", { className: "post-actions", role: "group", "aria-label": `Actions for message by ${who}` });
    if (!this.thread) {
      actions.append(h("button", { type: "button", text: "Reply", "aria-label": "Reply in thread",
        onclick: () => ctx.openThread(post.root_id || post.id) }));
    }
    const reactButton = h("button", { type: "button", text: "React", "aria-label": "Add reaction",
      "aria-expanded": "false", onclick: () => this.togglePicker(post, li, reactButton) });
    actions.append(reactButton);
    if (ctx.canModify(post)) {
      actions.append(
        h("button", { type: "button", text: "Edit", "aria-label": "Edit message", onclick: () => this.startEdit(post.id) }),
        h("button", { type: "button", text: "Delete", "aria-label": "Delete message", onclick: () => this.confirmDelete(post, li) }),
      );
    }
    return actions;
  }

  togglePicker(post, li, button) {
    const open = li.querySelector(".picker");
    if (open) {
      open.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const close = () => { picker.remove(); button.setAttribute("aria-expanded", "false"); button.focus(); };
    const picker = h("div", {
      className: "picker", role: "group", "aria-label": "Choose a reaction",
      onkeydown: (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } },
    }, PICKER.map((name) => h("button", {
      type: "button", "aria-label": `React with ${name}`, title: name, text: emojiChar(name),
      onclick: () => { close(); this.ctx.toggleReaction(post, name, false); },
    })));
    li.append(picker);
    button.setAttribute("aria-expanded", "true");
    picker.querySelector("button").focus();
  }

  startEdit(postId) {
    const item = this.items.get(postId);
    if (!item || item.post.delete_at) return;
    const { post, li } = item;
    const body = li.querySelector(".post-body");
    const area = h("textarea", { className: "edit-input", "aria-label": "Edited message", rows: "3" });
    area.value = post.message;
    const restore = () => { form.replaceWith(body); li.focus(); };
    const form = h("form", {
      className: "edit-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const text = area.value.trim();
        if (!text || text === post.message) { restore(); return; }
        if (await this.ctx.edit(post, text)) restore();
      },
    }, area, h("div", { className: "edit-buttons" },
      h("button", { type: "submit", text: "Save" }),
      h("button", { type: "button", text: "Cancel", onclick: restore })));
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); restore(); }
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
    });
    body.replaceWith(form);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  confirmDelete(post, li) {
    const actions = li.querySelector(".post-actions");
    const confirm = h("div", { className: "post-actions confirm", role: "group", "aria-label": "Confirm deletion" },
      h("span", { text: "Delete this message?" }),
      h("button", { type: "button", className: "danger", text: "Delete", "aria-label": "Yes, delete message",
        onclick: () => this.ctx.remove(post) }),
      h("button", { type: "button", text: "Cancel", "aria-label": "Keep message",
        onclick: () => { confirm.replaceWith(actions); actions.querySelector("button")?.focus(); } }));
    actions.replaceWith(confirm);
    confirm.querySelector("button.danger").focus();
  }
}
