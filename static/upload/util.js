// Small helpers shared by the upload page's modules: the JSON API, DOM building, sizes.
// Names from users only ever reach the page through textContent (el's third argument), never markup.

const csrf = document.querySelector('meta[name="csrf-token"]').content;

export class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.status = status;  // undefined: the request never got an answer (network down, server gone)
    this.data = data;
    this.code = data && data.code;  // what the page branches on (docs/api.md), never the message
  }
}

// signal: an AbortSignal that stops the request (the answer is then an ApiError with code "stopped")
export async function api(method, url, body, headers = {}, signal = undefined) {
  const init = { method, headers: { "X-CSRFToken": csrf, ...headers }, credentials: "same-origin", signal };
  if (body !== undefined) {
    if (body instanceof Blob) init.body = body;
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    if (signal && signal.aborted) throw new ApiError("Stopped", undefined, { code: "stopped" });
    throw new ApiError("The portal cannot be reached: check the network connection", undefined, null);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(data.error || `${response.status} ${response.statusText}`, response.status, data);
  return data;
}

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

export function human(n) {
  for (const unit of ["bytes", "KB", "MB", "GB", "TB"]) {
    if (n < 1000 || unit === "TB") return unit === "bytes" ? plural(n, "byte") : `${n.toFixed(1)} ${unit}`;
    n /= 1000;
  }
  return "";
}

export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One place shows problems, as text a person can act on (no alert(): it blocks the page).
export function say(message) {
  const box = document.getElementById("message");
  box.textContent = message || "";
  box.hidden = !message;
}
