// Sending one job's files. Chunked PUTs go straight from the file (no copy on this thread), several in
// flight, resumed where the server left off after a reload or a dropped connection. Each chunk carries
// its SHA-256 (Content-Digest), computed by the browser's native WebCrypto, and the server keeps only
// chunks that match: the file then completes without a whole-file hash on this side. Where the page
// has no WebCrypto (plain HTTP other than localhost), or the server asks for it, the file's SHA-1 is
// computed by a Web Worker (hasher.js, WebAssembly: slower than the network on a fast link) while the
// chunks travel. When OMERO holds something of the job's size, the SHA-1 comes first and the server
// is asked whether OMERO already holds that content: then nothing is sent.
import { api, putBytes, sleep } from "./util.js";

const CHUNK = 8 * 1024 * 1024;
const IN_FLIGHT = 3;  // the server takes a chunk sent ahead once the ones before it have arrived
// Bytes on their way at once: IN_FLIGHT chunks of one large file, or several small files whose
// requests overlap (a small file's time is its round trips, not its bytes). sendAll keeps to it.
export const SENDING_BUDGET = IN_FLIGHT * CHUNK;
const RETRY_MS = [1000, 2000, 5000, 10000, 30000];  // a flaky network gets a few seconds, then a steady retry
const DAMAGED_TRIES = 3;  // a chunk that arrives damaged this many times running stops the file
// Only a secure context (HTTPS, localhost) has WebCrypto.
export const NATIVE_DIGEST = Boolean(globalThis.isSecureContext && globalThis.crypto && crypto.subtle);

let worker = null;
const asked = new Map();  // request id -> {resolve, reject, progress}
const sums = new WeakMap();  // File -> Promise of its SHA-1: hashed once, reused for checking and sending
let lastId = 0;

function hasher() {
  if (worker) return worker;
  worker = new Worker(new URL("./hasher.js", import.meta.url));
  worker.onmessage = ({ data }) => {
    const request = asked.get(data.id);
    if (data.hashed !== undefined) return request.progress(data.hashed);
    asked.delete(data.id);
    if (data.error) request.reject(new Error(data.error)); else request.resolve(data.sha1);
  };
  return worker;
}

// The file's SHA-1 (hex); progress(bytesHashed) while it is computed. Asking again reuses the answer.
export function hashFile(file, progress = () => {}) {
  if (!sums.has(file)) {
    const id = ++lastId;
    sums.set(file, new Promise((resolve, reject) => {
      asked.set(id, { resolve, reject, progress, file });
      hasher().postMessage({ id, file });
    }));
    sums.get(file).catch(() => sums.delete(file));  // a read error is tried afresh next time
  } else {
    for (const request of asked.values()) if (request.file === file) request.progress = progress;
  }
  return sums.get(file);
}

// Hash the files of the import's next job while this one is sent (the worker takes them in turn), if
// they will need their SHA-1: to be checked against OMERO first, or without native chunk digests.
export function hashAhead(files, checkedFirst) {
  if (checkedFirst || !NATIVE_DIGEST) files.forEach((file) => hashFile(file).catch(() => {}));
}

// The Content-Digest header of a chunk (RFC 9530): its SHA-256, hashed natively off the main thread.
async function chunkDigest(file, blob) {
  let bytes;
  try { bytes = await blob.arrayBuffer(); }
  catch (e) { throw Object.assign(new Error(`${file.name} could not be read: ${e.message || e}`), { status: 0 }); }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return { "Content-Digest": `sha-256=:${btoa(String.fromCharCode(...digest))}:` };
}

// Before any byte of a job travels: its files' SHA-1s, and the server's answer whether OMERO holds
// that content for this user in the import's group. `files` is [[remote, File]] for the files still
// to send. Answers {job, elsewhere}: job.state "duplicate" means nothing needs sending.
export async function checkJob(job, files, progress) {
  const sha1s = [];
  for (const [remote, file] of files) {
    remote.sha1 = await hashFile(file, (hashed) => progress("checking", hashed, file.size, remote.name));
    sha1s.push({ id: remote.id, sha1: remote.sha1 });
  }
  return api("POST", `/api/jobs/${job.id}/check`, { files: sha1s });
}

// progress(kind, sent, total, held): kind is "checking" (the checksum is being computed), "sending" or
// "offline" (waiting for the network). While sending, `sent` counts the bytes that left the browser
// (so a slow link shows progress long before a chunk is acknowledged) and `held` those the server
// acknowledged. stop: an AbortSignal, aborted when the job was cancelled (by the user or by staff);
// the chunks on their way are dropped at once.
export async function sendFile(remote, file, progress, stop = new AbortController().signal) {
  // without native digests the SHA-1 is needed: hashing starts now (a read error is told at the end)
  if (!remote.sha1 && !NATIVE_DIGEST) hashFile(file).catch(() => {});
  const sha1 = () => hashFile(file, (hashed) => progress("checking", hashed, file.size));
  let failures = 0, damaged = 0;
  const offline = async () => {
    progress("offline", undefined, file.size);
    await sleep(RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]);
  };
  const held = async () => {
    for (;;) {
      try { return (await api("GET", `/api/files/${remote.id}`)).received; }
      catch (e) { if (e.status !== undefined) throw e; await offline(); }
    }
  };

  for (let attempt = 1; ; attempt++) {
    // a file the server held nothing of (a new import's) starts without asking; were bytes to have
    // arrived since, the server answers "resume" and the loop asks then
    let offset = attempt === 1 && remote.received === 0 ? 0 : await held(), next = offset;
    // the PUTs on their way, oldest first, each with its bytes sent so far; answers come in that order
    const flying = [];
    const tell = () => progress("sending", flying.reduce((sum, put) => sum + put.sent, offset), file.size, offset);
    const put = (start) => {
      const chunk = { sent: 0 }, blob = file.slice(start, start + CHUNK);
      chunk.request = (NATIVE_DIGEST ? chunkDigest(file, blob) : Promise.resolve({})).then((headers) =>
        putBytes(`/api/files/${remote.id}?offset=${start}`, blob,
          (sent) => { chunk.sent = sent; if (flying.includes(chunk)) tell(); }, stop, headers));
      chunk.request.catch(() => {});  // handled when its turn comes
      return chunk;
    };
    while (offset < file.size) {
      if (stop.aborted) return false;
      for (; flying.length < IN_FLIGHT && next < file.size; next += CHUNK) flying.push(put(next));
      try {
        offset = (await flying[0].request).received;
        flying.shift();
        failures = damaged = 0;
        tell();
        continue;
      } catch (e) {
        if (stop.aborted) return false;  // the others were stopped with it
        await Promise.allSettled(flying.splice(0).map((chunk) => chunk.request));  // refused, or wait in vain
        if (e.status === undefined) await offline();                                // network gone
        else if (e.code === "damaged_chunk") { if (++damaged >= DAMAGED_TRIES) throw e; }  // dropped: again
        else if (e.code !== "resume") throw e;                                      // cancelled, or refused
      }
      offset = next = await held();  // part of a chunk may have arrived before the cut: go on from there
    }
    try {
      // without native digests the worker may still be hashing the last chunks' bytes: show it, then
      // complete with its answer; with them the server checked every chunk and knows the SHA-1
      if (!remote.sha1 && !NATIVE_DIGEST) remote.sha1 = await sha1();
      await complete(remote, sha1);
    } catch (e) {
      // damaged: the server's copy differs from ours and was dropped; send it once more from the start
      if (e.code !== "damaged" || attempt >= 2) throw e;
      sums.delete(file);  // the local file may have changed since it was hashed
      remote.sha1 = await sha1();
      continue;
    }
    remote.complete = true;
    remote.received = file.size;
    return true;
  }
}

// Complete a file whose bytes all arrived: with its SHA-1 when known, else on the strength of its checked
// chunks, unless the server cannot vouch for them (it restarted meanwhile): then with the SHA-1 after all.
async function complete(remote, sha1) {
  const url = `/api/files/${remote.id}/complete`;
  try {
    return await api("POST", url, remote.sha1 ? { sha1: remote.sha1 } : {});
  } catch (e) {
    if (e.code !== "sha1_needed") throw e;
    remote.sha1 = await sha1();
    return api("POST", url, { sha1: remote.sha1 });
  }
}
