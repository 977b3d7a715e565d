// Incremental SHA-1, so the browser can hash a file of any size chunk by chunk as it sends it
// (WebCrypto only hashes whole buffers). The server checks the result when the file is complete.
"use strict";
class Sha1 {
  constructor() {
    this.h = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]);
    this.block = new Uint8Array(64); this.used = 0; this.length = 0; this.w = new Uint32Array(80);
  }
  update(bytes) {
    this.length += bytes.length;
    let i = 0;
    if (this.used) {
      const take = Math.min(64 - this.used, bytes.length);
      this.block.set(bytes.subarray(0, take), this.used); this.used += take; i = take;
      if (this.used < 64) return this;
      this._compress(this.block, 0); this.used = 0;
    }
    for (; i + 64 <= bytes.length; i += 64) this._compress(bytes, i);
    this.block.set(bytes.subarray(i)); this.used = bytes.length - i;
    return this;
  }
  _compress(b, o) {
    const w = this.w;
    for (let t = 0; t < 16; t++) w[t] = (b[o + 4 * t] << 24) | (b[o + 4 * t + 1] << 16) | (b[o + 4 * t + 2] << 8) | b[o + 4 * t + 3];
    for (let t = 16; t < 80; t++) { const x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]; w[t] = (x << 1) | (x >>> 31); }
    let [a, bb, c, d, e] = this.h;
    for (let t = 0; t < 80; t++) {
      let f, k;
      if (t < 20) { f = (bb & c) | (~bb & d); k = 0x5a827999; }
      else if (t < 40) { f = bb ^ c ^ d; k = 0x6ed9eba1; }
      else if (t < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8f1bbcdc; }
      else { f = bb ^ c ^ d; k = 0xca62c1d6; }
      const tmp = (((a << 5) | (a >>> 27)) + f + e + k + w[t]) >>> 0;
      e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
    }
    const h = this.h;
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
  }
  hex() {
    const bits = this.length * 8, pad = new Uint8Array(((this.used < 56) ? 56 : 120) - this.used + 8);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    view.setUint32(pad.length - 8, Math.floor(bits / 0x100000000)); view.setUint32(pad.length - 4, bits >>> 0);
    this.update(pad);
    return Array.from(this.h, (x) => x.toString(16).padStart(8, "0")).join("");
  }
}
