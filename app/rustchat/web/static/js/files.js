// Attachments: uploads from the composer, and each post's files shown as image previews or
// download buttons. Files need the bearer token, so they are fetched and shown as blob: URLs
// (never a URL carrying the token).

import { api } from "./api.js";
import { formatSize, h } from "./dom.js";

const PREVIEWABLE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const infos = new Map(); // file id → Promise<info>
const blobs = new Map(); // file id → Promise<object URL>

function info(id) {
  if (!infos.has(id)) {
    const p = api.get(`/api/v1/files/${encodeURIComponent(id)}/info`);
    p.catch(() => infos.delete(id));
    infos.set(id, p);
  }
  return infos.get(id);
}

function objectUrl(id) {
  if (!blobs.has(id)) {
    const p = api.blob(`/api/v1/files/${encodeURIComponent(id)}`).then((b) => URL.createObjectURL(b));
    p.catch(() => blobs.delete(id));
    blobs.set(id, p);
  }
  return blobs.get(id);
}

async function download(id, name) {
  const url = await objectUrl(id);
  const a = h("a", { href: url, download: name, className: "visually-hidden" });
  document.body.append(a);
  a.click();
  a.remove();
}

function fileBlock(id) {
  const block = h("div", { className: "file", "data-file-id": id }, h("span", { className: "muted", text: "Loading attachment…" }));
  info(id).then(async (meta) => {
    const label = `${meta.name} (${formatSize(meta.size)})`;
    const button = h("button", {
      type: "button", className: "file-download", text: `📎 ${label}`,
      "aria-label": `Download ${label}`, onclick: () => download(id, meta.name),
    });
    if (PREVIEWABLE.has(meta.detected_type)) {
      const img = h("img", { className: "file-preview", alt: meta.name, loading: "lazy" });
      block.replaceChildren(h("figure", {}, img, h("figcaption", {}, button)));
      img.src = await objectUrl(id);
    } else {
      block.replaceChildren(button);
    }
  }).catch(() => block.replaceChildren(h("span", { className: "muted", text: "Attachment unavailable" })));
  return block;
}

export function renderFiles(fileIds) {
  if (!fileIds || fileIds.length === 0) return null;
  return h("div", { className: "post-files" }, fileIds.map(fileBlock));
}

export async function upload(channelId, file) {
  return api.upload(channelId, file);
}
