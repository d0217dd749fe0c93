// Who is typing where: a `typing` event shows its user for a few seconds (or until their post
// arrives), per channel and thread.

const SHOW_MS = 6000;

export class Typing {
  constructor() {
    this.where = new Map(); // "<channel id>:<thread root id or empty>" → Map user id → until (ms)
  }

  set(channelId, parentId, userId, typing) {
    const key = `${channelId}:${parentId || ""}`;
    const who = this.where.get(key) || new Map();
    if (typing) who.set(userId, Date.now() + SHOW_MS);
    else who.delete(userId);
    this.where.set(key, who);
  }

  /** "alice is typing…" for that channel (parentId "") or thread; `name(id)` names the users. */
  text(channelId, parentId, name) {
    const who = this.where.get(`${channelId}:${parentId || ""}`);
    if (!who) return "";
    const now = Date.now();
    for (const [id, until] of who) if (until < now) who.delete(id);
    const names = [...who.keys()].map((id) => name(id) || "Someone");
    if (names.length === 0) return "";
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return "Several people are typing…";
  }
}
