// Entry point: the login form, or the chat when this tab holds a token.

import { api, ApiError, session, setUnauthorizedHandler } from "./api.js";
import { $ } from "./dom.js";
import { Chat } from "./chat.js";

function showLogin(notice) {
  $("#chat-view").hidden = true;
  $("#login-view").hidden = false;
  const note = $("#login-notice");
  note.textContent = notice || "";
  note.hidden = !notice;
  const form = $("#login-form");
  const error = $("#login-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const result = await api.post("/api/v1/auth/login", {
        login_id: $("#login-id").value.trim(),
        password: $("#login-password").value,
      });
      session.token = result.token;
      $("#login-password").value = "";
      await showChat(result.user);
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "Wrong username or password." : err.message;
      $("#login-password").focus();
    } finally {
      button.disabled = false;
    }
  });
  $("#login-id").focus();
}

async function showChat(me) {
  $("#login-view").hidden = true;
  $("#chat-view").hidden = false;
  const chat = new Chat(me);
  setUnauthorizedHandler(() => chat.endSession("Your session has ended. Please log in again."));
  window.rustchat = chat; // for the curious in the console
  await chat.start();
}

async function main() {
  const notice = sessionStorage.getItem("rustchat.notice");
  sessionStorage.removeItem("rustchat.notice");
  if (!session.token) { showLogin(notice); return; }
  try {
    await showChat(await api.get("/api/v1/users/me"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      session.token = null;
      showLogin("Your session has ended. Please log in again.");
    } else {
      showLogin(`The server could not be reached (${err.message}). Reload to try again.`);
    }
  }
}

main();
