// The page's only way to the server: the JSON API, with the key (if any) as a Bearer header.
const KEY = "pixelbatch.apiKey";
const root = document.body.dataset.root || "";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "http_error";
    this.details = body ? body.details : null;
  }
}

export const authRequired = () => document.body.dataset.auth === "on";
export const apiKey = () => sessionStorage.getItem(KEY);
export const setApiKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY);

function headers(extra) {
  const h = new Headers(extra || {});
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  return h;
}

async function request(path, options = {}) {
  const response = await fetch(root + path, {
    ...options,
    headers: headers(options.headers),
    credentials: "omit",
    cache: "no-store",
  });
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    throw new ApiError(response.status, body);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path) {
  return (await request(path, { method: "POST" })).json();
}

export async function deleteResource(path) {
  await request(path, { method: "DELETE" });
}

export async function postForm(path, form) {
  return (await request(path, { method: "POST", body: form })).json();
}

export async function getBlob(path) {
  return (await request(path)).blob();
}

// Where an output image the API handed out can be shown from: a path on this server, or
// the object store's own URL when the server says outputs live there (data-store-origin,
// the only other origin the page's CSP allows for images); null for anything else.
const storeOrigin = document.body.dataset.storeOrigin || "";

export function localFileUrl(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, window.location.href);
    if (storeOrigin && parsed.origin === storeOrigin) return parsed.href;
    if (!parsed.pathname.startsWith(root + "/files/")) return null;
    return parsed.pathname + parsed.search;
  } catch {
    return null;
  }
}
