// The connection state in the top bar, and the banner for the connection limit.

import { $, h } from "./dom.js";

let countdown = null;

export function showConnection(state, detail) {
  const box = $("#connection");
  box.dataset.state = state;
  const text = $("#connection-text");
  clearInterval(countdown);
  const banner = $("#banner");
  const now = $("#reconnect-now");
  now.hidden = state !== "reconnecting" && state !== "limited";
  if (state === "connected") {
    text.textContent = "Connected";
    banner.hidden = true;
  } else if (state === "connecting") {
    text.textContent = "Connecting…";
  } else if (state === "reconnecting") {
    const why = detail.code === 1012 ? "Server restarting" : "Connection lost";
    const tick = () => {
      const secs = Math.max(0, Math.ceil((detail.at - Date.now()) / 1000));
      text.textContent = detail.at ? `${why}, reconnecting${secs ? ` in ${secs} s` : "…"}` : "Reconnecting…";
    };
    tick();
    if (detail.at) countdown = setInterval(tick, 500);
  } else if (state === "limited") {
    text.textContent = "Not connected: too many connections";
    banner.replaceChildren(
      h("strong", { text: detail.message || "Too many simultaneous connections." }),
      " Close RustChat in another tab, window or device; this one tries again in ",
      `${Math.round(detail.inMs / 1000)} s.`,
    );
    banner.hidden = false;
  }
}
