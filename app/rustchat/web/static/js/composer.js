// The message box: Enter sends, Shift+Enter is a new line, Up in an empty box edits your last
// message; attachments upload as soon as they are chosen (or pasted, or dropped) and go with the
// next message; typing is announced at most every few seconds.

import { formatSize, h } from "./dom.js";
import { upload } from "./files.js";

const TYPING_EVERY_MS = 3000;
let counter = 0;

export class Composer {
  /**
   * opts: label, placeholder, channelId() (where uploads go), send(message, fileIds) → Promise<bool>,
   * typing(), editLast() → bool, notify(text).
   */
  constructor(container, opts) {
    this.opts = opts;
    this.pending = []; // {file, id, state: "uploading"|"done"|"failed", chip}
    this.lastTyping = 0;
    const n = ++counter;
    const hint = h("span", { id: `composer-hint-${n}`, className: "visually-hidden",
      text: "Enter sends, Shift+Enter starts a new line, Up in an empty box edits your last message." });
    this.input = h("textarea", {
      id: `composer-input-${n}`, className: "composer-input", rows: "1",
      placeholder: opts.placeholder, "aria-label": opts.label, "aria-describedby": hint.id,
    });
    this.fileInput = h("input", { type: "file", multiple: true, id: `file-input-${n}`, className: "visually-hidden" });
    this.chips = h("ul", { className: "pending-files", "aria-label": "Attachments to send" });
    this.sendButton = h("button", { type: "submit", className: "send", text: "Send" });
    this.form = h("form", { className: "composer", "aria-label": opts.label },
      this.chips,
      hint,
      h("div", { className: "composer-row" },
        // The input first: its focus ring is drawn on the label that follows it.
        this.fileInput,
        h("label", { for: this.fileInput.id, className: "button attach", title: "Attach files" },
          h("span", { "aria-hidden": "true", text: "📎" }), h("span", { className: "visually-hidden", text: "Attach files" })),
        this.input,
        this.sendButton));
    container.append(this.form);

    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    this.input.addEventListener("keydown", (e) => this.keydown(e));
    this.input.addEventListener("input", () => { this.autosize(); this.typed(); });
    this.input.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData?.files || [])];
      if (files.length) { e.preventDefault(); this.addFiles(files); }
    });
    this.fileInput.addEventListener("change", () => { this.addFiles([...this.fileInput.files]); this.fileInput.value = ""; });
    this.form.addEventListener("dragover", (e) => { e.preventDefault(); });
    this.form.addEventListener("drop", (e) => {
      e.preventDefault();
      this.addFiles([...(e.dataTransfer?.files || [])]);
    });
  }

  focus() { this.input.focus(); }

  reset() {
    this.input.value = "";
    this.pending = [];
    this.chips.replaceChildren();
    this.autosize();
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
  }

  keydown(e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    } else if (e.key === "ArrowUp" && this.input.value === "" && this.opts.editLast) {
      if (this.opts.editLast()) e.preventDefault();
    }
  }

  typed() {
    const now = Date.now();
    if (this.input.value && now - this.lastTyping > TYPING_EVERY_MS) {
      this.lastTyping = now;
      this.opts.typing();
    }
  }

  addFiles(files) {
    const channelId = this.opts.channelId();
    for (const file of files) {
      const entry = { file, id: null, state: "uploading" };
      const status = h("span", { className: "muted", text: "uploading…" });
      const remove = h("button", {
        type: "button", className: "link", text: "✕", "aria-label": `Remove ${file.name}`,
        onclick: () => { this.pending = this.pending.filter((p) => p !== entry); entry.chip.remove(); this.input.focus(); },
      });
      entry.chip = h("li", { className: "chip" }, `${file.name} (${formatSize(file.size)}) `, status, remove);
      entry.status = status;
      this.chips.append(entry.chip);
      this.pending.push(entry);
      entry.done = upload(channelId, file).then((info) => {
        entry.id = info.id;
        entry.state = "done";
        status.textContent = "ready";
      }, (err) => {
        entry.state = "failed";
        status.textContent = `failed: ${err.message}`;
        this.opts.notify(`Upload of ${file.name} failed: ${err.message}`);
      });
    }
  }

  async submit() {
    await Promise.all(this.pending.map((p) => p.done));
    const files = this.pending.filter((p) => p.state === "done");
    let message = this.input.value.trim();
    if (!message && files.length === 0) return;
    if (!message) message = files.map((p) => p.file.name).join(", "); // the API wants some text
    this.sendButton.disabled = true;
    try {
      if (await this.opts.send(message, files.map((p) => p.id))) {
        this.reset();
        this.lastTyping = 0;
      }
    } finally {
      this.sendButton.disabled = false;
      this.input.focus();
    }
  }
}
