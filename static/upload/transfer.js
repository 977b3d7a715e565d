// Sending one file: chunked PUTs at the server's offset, hashed as they go, resumed where the
// server left off after a reload or a dropped connection, then completed with the file's SHA-1.
import { api, sleep } from "./util.js";

const CHUNK = 8 * 1024 * 1024;
const RETRY_MS = [1000, 2000, 5000, 10000, 30000];  // a flaky network gets a few seconds, then a steady retry

async function read(file, start, end) {
  return new Uint8Array(await file.slice(start, end).arrayBuffer());
}

// The SHA-1 of the first `upto` bytes, read from the local copy: resuming needs it, not the bytes.
async function hashPrefix(file, upto) {
  const hash = new Sha1();
  for (let at = 0; at < upto; at += CHUNK) hash.update(await read(file, at, Math.min(at + CHUNK, upto)));
  return hash;
}

// progress(kind, sent, total): kind is "checking" (hashing what the server holds), "sending" or
// "offline" (waiting for the network). stopped() says the user cancelled the job.
export async function sendFile(remote, file, progress, stopped = () => false) {
  let failures = 0;
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
    let offset = await held();
    if (offset) progress("checking", offset, file.size);
    let hash = await hashPrefix(file, offset);
    while (offset < file.size) {
      if (stopped()) return false;
      const bytes = await read(file, offset, Math.min(offset + CHUNK, file.size));
      try {
        const answer = await api("PUT", `/api/files/${remote.id}?offset=${offset}`, new Blob([bytes]),
          { "Content-Type": "application/octet-stream" });
        hash.update(bytes.subarray(0, answer.received - offset));
        offset = answer.received;
        failures = 0;
        progress("sending", offset, file.size);
        continue;
      } catch (e) {
        if (e.status === undefined) await offline();                            // network gone
        else if (e.status !== 409 || /not waiting/.test(e.message)) throw e;     // cancelled, or refused
      }
      const now = await held();  // part of a chunk may have arrived before the cut: go on from there
      if (now !== offset) {
        progress("checking", now, file.size);
        hash = await hashPrefix(file, now);
        offset = now;
      }
    }
    try {
      await api("POST", `/api/files/${remote.id}/complete`, { sha1: hash.hex() });
    } catch (e) {
      // 422: the server's copy differs from ours and was dropped; send it once more from the start
      if (e.status === 422 && attempt < 2) continue;
      throw e;
    }
    remote.complete = true;
    remote.received = file.size;
    return true;
  }
}
