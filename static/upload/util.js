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

// body: sent as JSON. (Bytes go with putBytes.)
export async function api(method, url, body) {
  const init = { method, headers: { "X-CSRFToken": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw unanswered();
  }
  return answer(response.ok, response.status, response.statusText, await response.json().catch(() => ({})));
}

// PUT bytes and tell sent(bytes) as they leave: fetch has no upload progress, XMLHttpRequest has.
// The same answers and errors as api(); signal (an AbortSignal) stops the request, which then fails
// with code "stopped". headers: more request headers (a Content-Digest).
export function putBytes(url, blob, sent, signal, headers = {}) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(unanswered(signal));
    const request = new XMLHttpRequest();
    const stop = () => request.abort();
    signal.addEventListener("abort", stop);
    request.onloadend = () => signal.removeEventListener("abort", stop);
    request.open("PUT", url);
    request.setRequestHeader("X-CSRFToken", csrf);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    Object.entries(headers).forEach(([name, value]) => request.setRequestHeader(name, value));
    request.upload.onprogress = (event) => sent(event.loaded);  // set before send(), or none are told
    request.onload = () => {
      let data;
      try { data = JSON.parse(request.responseText); } catch (e) { data = {}; }
      try {
        resolve(answer(request.status >= 200 && request.status < 300, request.status, request.statusText, data));
      } catch (e) { reject(e); }
    };
    request.onerror = request.onabort = () => reject(unanswered(signal));
    request.send(blob);
  });
}

function unanswered(signal = undefined) {
  if (signal && signal.aborted) return new ApiError("Stopped", undefined, { code: "stopped" });
  return new ApiError("The portal cannot be reached: check the network connection", undefined, null);
}

function answer(ok, status, statusText, data) {
  if (!ok) throw new ApiError(data.error || `${status} ${statusText}`, status, data);
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
