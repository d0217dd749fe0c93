// The HTTP API with the bearer token from sessionStorage: the token travels only in the
// Authorization header, never in a URL, and no cookie is ever set.

const TOKEN_KEY = "rustchat.token";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.id = (body && body.id) || "";
    this.body = body;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function request(method, path, { json, body, headers = {}, raw = false } = {}) {
  const token = session.token;
  const opts = { method, headers: { ...headers }, cache: "no-store", credentials: "omit" };
  if (token) opts.headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(json);
  } else if (body !== undefined) {
    opts.body = body;
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (err) {
    throw new ApiError(0, { id: "client.network", message: "The server cannot be reached" });
  }
  if (raw && resp.ok) return resp;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    if (resp.status === 401 && token && path !== "/api/v1/auth/login") onUnauthorized();
    throw new ApiError(resp.status, data);
  }
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, json) => request("POST", path, { json }),
  put: (path, json) => request("PUT", path, { json }),
  del: (path) => request("DELETE", path),
  upload: (channelId, file) => request(
    "POST",
    `/api/v1/files?channel_id=${encodeURIComponent(channelId)}&filename=${encodeURIComponent(file.name || "file")}`,
    { body: file, headers: { "Content-Type": file.type || "application/octet-stream" } },
  ),
  blob: async (path) => (await request("GET", path, { raw: true })).blob(),
};
