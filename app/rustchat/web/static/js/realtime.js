// The WebSocket: authentication by challenge (the token goes in the first frame, not the URL),
// resume after a drop, reconnect with jittered backoff, the connection state for the UI.
//
// Resume: the client remembers its connection_id and the last seq it handled, and reconnects
// with ?connection_id=&sequence_number=. A hello with the same connection_id means the missed
// events follow (with their original seq; anything at or below the last seq is skipped, so
// nothing is handled twice); a new connection_id means they are gone and the app refetches.

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
const LIMITED_RETRY_MS = 30000;
const PING_EVERY_MS = 25000;
const PING_TIMEOUT_MS = 10000;
const CHALLENGE_SEQ = 1;

export const CLOSE = {
  RESTART: 1012,
  POLICY: 1008,
  REVOKED: 4001,
  REPLACED: 4000,
  TOO_MANY: 4029,
};

/** Full jitter: a random delay up to the exponential step, so clients that lost a node together
 * do not come back together. */
export function backoffDelay(attempt, random = Math.random) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  return Math.round(200 + random() * cap);
}

function restartDelay(reason, random) {
  try {
    const ms = JSON.parse(reason).reconnect_after_ms;
    if (Number.isFinite(ms) && ms >= 0) return Math.min(ms, 60000);
  } catch { /* no advice given: fall through */ }
  return backoffDelay(0, random);
}

export class Realtime {
  /**
   * handlers: status(state, detail), hello({resumed, first, nodeId}), event(msg), gap(),
   * revoked(). States: connecting, connected, reconnecting, limited.
   */
  constructor({ url, token, handlers, random = Math.random }) {
    this.url = url;
    this.token = token;
    this.handlers = handlers;
    this.random = random;
    this.ws = null;
    this.connectionId = null;
    this.lastSeq = null;
    this.attempt = 0;
    this.everConnected = false;
    this.stopped = true;
    this.timer = null;
    this.pingTimer = null;
    this.pingDeadline = null;
    this.actionSeq = CHALLENGE_SEQ;
    this.failure = null;
    this.state = "idle";
  }

  start() {
    this.stopped = false;
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this._stopPings();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "bye");
    }
  }

  /** Skip the wait (the "Reconnect now" button, the browser coming back online). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this._open();
  }

  /** Send a client action; false when not connected (typing is advisory, nothing queues). */
  send(action, data) {
    if (!this.ws || this.state !== "connected") return false;
    this.actionSeq += 1;
    this.ws.send(JSON.stringify({ seq: this.actionSeq, action, data }));
    return this.actionSeq;
  }

  _status(state, detail = {}) {
    this.state = state;
    this.handlers.status(state, detail);
  }

  _open() {
    clearTimeout(this.timer);
    const resume = this.connectionId && this.lastSeq !== null;
    const query = resume
      ? `?connection_id=${encodeURIComponent(this.connectionId)}&sequence_number=${this.lastSeq}`
      : "";
    this._status(this.everConnected ? "reconnecting" : "connecting", { attempt: this.attempt });
    this.failure = null;
    this.actionSeq = CHALLENGE_SEQ;
    let ws;
    try {
      ws = new WebSocket(this.url + query);
    } catch (err) {
      this._scheduleRetry(backoffDelay(this.attempt++, this.random), { code: 0 });
      return;
    }
    this.ws = ws;
    // The server's refusals before the session starts (bad token, over the limit) have come as
    // binary frames holding the same JSON: read both kinds.
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(JSON.stringify({ seq: CHALLENGE_SEQ, action: "authentication_challenge", data: { token: this.token } }));
    };
    ws.onmessage = (e) => this._message(ws, e.data);
    ws.onclose = (e) => this._closed(ws, e.code, e.reason);
  }

  _message(ws, raw) {
    if (ws !== this.ws) return;
    let msg;
    try {
      msg = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
    } catch { return; }
    if ("seq_reply" in msg && !("event" in msg)) {
      if (msg.seq_reply === CHALLENGE_SEQ && msg.status === "FAIL") this.failure = msg.error || {};
      if (this.pingDeadline && msg.seq_reply === this.pingDeadline.seq) {
        clearTimeout(this.pingDeadline.timer);
        this.pingDeadline = null;
      }
      return;
    }
    if (msg.event === "hello") {
      const resumed = msg.data.connection_id === this.connectionId && this.lastSeq !== null;
      if (!resumed) {
        this.connectionId = msg.data.connection_id;
        this.lastSeq = 0;
      }
      const first = !this.everConnected;
      this.everConnected = true;
      this.attempt = 0;
      this._status("connected", { nodeId: msg.data.node_id, resumed });
      this._startPings();
      this.handlers.hello({ resumed, first, nodeId: msg.data.node_id });
      return;
    }
    if (typeof msg.seq === "number") {
      if (msg.seq <= this.lastSeq) return; // replayed again: already handled
      const gap = msg.seq > this.lastSeq + 1;
      this.lastSeq = msg.seq;
      if (gap) this.handlers.gap();
    }
    this.handlers.event(msg);
  }

  _closed(ws, code, reason) {
    if (ws !== this.ws) return; // an old socket, replaced or stopped on purpose
    this.ws = null;
    this._stopPings();
    if (this.stopped) return;
    const failure = this.failure || {};
    if (code === CLOSE.TOO_MANY || failure.id === "api.websocket.too_many_connections") {
      const delay = Math.round(LIMITED_RETRY_MS * (0.75 + this.random() / 2));
      this._status("limited", { message: failure.message || "Too many simultaneous connections", inMs: delay });
      this.timer = setTimeout(() => this._open(), delay);
      return;
    }
    if (code === CLOSE.REVOKED || (code === CLOSE.POLICY && failure.id === "api.unauthorized")) {
      this.stopped = true;
      this.handlers.revoked();
      return;
    }
    const delay = code === CLOSE.RESTART ? restartDelay(reason, this.random) : backoffDelay(this.attempt, this.random);
    this.attempt += 1;
    this._scheduleRetry(delay, { code });
  }

  _scheduleRetry(delay, detail) {
    this._status("reconnecting", { ...detail, inMs: delay, at: Date.now() + delay });
    this.timer = setTimeout(() => this._open(), delay);
  }

  _startPings() {
    this._stopPings();
    this.pingTimer = setInterval(() => {
      if (this.pingDeadline) return;
      const seq = this.send("ping", {});
      if (!seq) return;
      // No answer in time: the connection is dead without having said so; drop and reconnect.
      const timer = setTimeout(() => {
        const ws = this.ws;
        if (!ws) return;
        this.pingDeadline = null;
        this._closed(ws, 4999, "");
        ws.close();
      }, PING_TIMEOUT_MS);
      this.pingDeadline = { seq, timer };
    }, PING_EVERY_MS);
  }

  _stopPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.pingDeadline) clearTimeout(this.pingDeadline.timer);
    this.pingDeadline = null;
  }
}
