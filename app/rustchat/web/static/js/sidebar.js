// The sidebar: the team picker, the team's channels and the direct messages, each with its
// unread count, the DMs with the other person's presence.

import { clear, h } from "./dom.js";

export function dmPartner(channel, meId) {
  const ids = channel.name.split("__");
  return ids.find((id) => id !== meId) || meId;
}

export function channelLabel(chat, channel) {
  if (channel.type === "direct") return chat.userName(dmPartner(channel, chat.me.id)) || "Direct message";
  return channel.display_name || channel.name;
}

function unreadBadge(count) {
  if (!count) return null;
  const text = count >= 100 ? "99+" : String(count);
  return h("span", { className: "badge", text, "aria-label": `${text} unread` });
}

function item(chat, channel) {
  const state = chat.readStates.get(channel.id) || {};
  const unread = state.unread_count || 0;
  const current = channel.id === chat.channelId;
  const prefix = channel.type === "direct" ? null
    : h("span", { className: "chan-prefix", "aria-hidden": "true", text: channel.type === "private" ? "🔒" : "#" });
  let presence = null;
  let presenceText = null;
  if (channel.type === "direct") {
    const other = dmPartner(channel, chat.me.id);
    const status = chat.statuses.get(other) || "offline";
    presence = h("span", { className: "presence", "data-presence-user": other, "data-status": status, "aria-hidden": "true" });
    presenceText = h("span", { className: "visually-hidden", "data-presence-text": other, text: ` (${status})` });
  }
  const link = h("a", {
    href: `#/channels/${channel.id}`,
    className: `channel-link${unread ? " unread" : ""}${current ? " active" : ""}`,
    "data-channel-id": channel.id,
    "aria-current": current ? "page" : null,
  }, presence, prefix,
  h("span", { className: "channel-name", "data-user-name": channel.type === "direct" ? dmPartner(channel, chat.me.id) : null,
    text: channelLabel(chat, channel) }),
  presenceText,
  unread ? h("span", { className: "visually-hidden", text: ", unread" }) : null,
  unreadBadge(unread));
  return h("li", {}, link);
}

export function renderSidebar(chat) {
  const select = document.getElementById("team-select");
  clear(select);
  for (const team of chat.teams) {
    select.append(h("option", { value: team.id, text: team.display_name || team.name, selected: team.id === chat.teamId }));
  }
  document.querySelector(".team-picker").hidden = chat.teams.length === 0;
  document.getElementById("browse-channels").hidden = !chat.teamId;

  const all = [...chat.channels.values()];
  const byName = (a, b) => channelLabel(chat, a).localeCompare(channelLabel(chat, b));
  const list = clear(document.getElementById("channel-list"));
  const teamChannels = all.filter((c) => c.type !== "direct" && c.team_id === chat.teamId).sort(byName);
  for (const c of teamChannels) list.append(item(chat, c));
  if (teamChannels.length === 0) list.append(h("li", { className: "muted", text: chat.teamId ? "No channels yet" : "No team yet" }));

  const dms = clear(document.getElementById("dm-list"));
  for (const c of all.filter((c) => c.type === "direct").sort(byName)) dms.append(item(chat, c));

  // Other teams' unread posts show on the team picker.
  for (const option of select.options) {
    const n = all.filter((c) => c.team_id === option.value && option.value !== chat.teamId)
      .reduce((sum, c) => sum + ((chat.readStates.get(c.id) || {}).unread_count || 0), 0);
    const team = chat.teams.find((t) => t.id === option.value);
    option.textContent = (team.display_name || team.name) + (n ? ` (${n} unread)` : "");
  }
  const total = all.reduce((sum, c) => sum + ((chat.readStates.get(c.id) || {}).unread_count || 0), 0);
  document.title = total ? `(${total}) RustChat` : "RustChat";
}
