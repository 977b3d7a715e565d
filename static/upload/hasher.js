// A Web Worker: the SHA-1 of a whole file with hash-wasm's WebAssembly SHA-1, off the page's main
// thread, reading the next block while it hashes this one. The page asks {id, file}; the worker
// answers {id, hashed} as it goes, then {id, sha1} or {id, error}.
"use strict";
importScripts("../vendor/hash-wasm/sha1.umd.min.js");

const BLOCK = 8 * 1024 * 1024;
const read = (file, at) => file.slice(at, Math.min(at + BLOCK, file.size)).arrayBuffer();
const queue = [];  // one file at a time: a request waits for the one before it

self.onmessage = ({ data }) => {
  queue.push(data);
  if (queue.length === 1) next();
};

async function next() {
  const { id, file } = queue[0];
  try {
    const sha1 = await hashwasm.createSHA1();
    sha1.init();
    let ahead = read(file, 0);
    for (let at = 0; at < file.size; at += BLOCK) {
      const bytes = new Uint8Array(await ahead);
      if (at + BLOCK < file.size) ahead = read(file, at + BLOCK);
      sha1.update(bytes);
      self.postMessage({ id, hashed: at + bytes.length });
    }
    self.postMessage({ id, sha1: sha1.digest("hex") });
  } catch (e) {
    self.postMessage({ id, error: `${file.name} could not be read: ${e.message || e}` });
  }
  queue.shift();
  if (queue.length) next();
}
