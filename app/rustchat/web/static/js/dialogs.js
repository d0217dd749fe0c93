// The picker dialog: join one of the team's public channels, or start a direct message.

import { api } from "./api.js";
import { $, h } from "./dom.js";

function pick(title, items, empty) {
  const dialog = $("#picker-dialog");
  $("#picker-title").textContent = title;
  const filter = $("#picker-filter");
  filter.value = "";
  const list = $("#picker-list");
  const paint = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = items.filter((it) => it.label.toLowerCase().includes(q));
    list.replaceChildren(...shown.map((it) => h("li", {}, h("button", {
      type: "button", className: "pick", text: it.label,
      onclick: async () => { dialog.close(); await it.choose(); },
    }))));
    if (shown.length === 0) list.append(h("li", { className: "muted", text: empty }));
  };
  filter.oninput = paint;
  paint();
  dialog.showModal();
  filter.focus();
}

export async function browseChannels(chat) {
  if (!chat.teamId) return;
  const all = await api.get(`/api/v1/teams/${chat.teamId}/channels`);
  const joinable = all.filter((c) => !chat.channels.has(c.id) && c.type === "public");
  pick("Join a channel", joinable.map((c) => ({
    label: `# ${c.display_name || c.name}`,
    choose: async () => {
      try {
        await api.post(`/api/v1/channels/${c.id}/members`, { user_id: chat.me.id });
        await chat.loadSidebar();
        location.hash = `#/channels/${c.id}`;
      } catch (err) { chat.toast(`Could not join: ${err.message}`); }
    },
  })), "No other public channels in this team");
}

export async function newDirect(chat) {
  const users = await api.get("/api/v1/users?per_page=200");
  users.forEach((u) => chat.users.set(u.id, u));
  pick("Direct message", users.filter((u) => u.id !== chat.me.id).map((u) => ({
    label: u.username,
    choose: async () => {
      try {
        const channel = await api.post("/api/v1/channels/direct", [chat.me.id, u.id]);
        await chat.loadSidebar();
        location.hash = `#/channels/${channel.id}`;
      } catch (err) { chat.toast(`Could not open the conversation: ${err.message}`); }
    },
  })), "Nobody else here yet");
}
