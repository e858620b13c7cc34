// Harness of the Node suite: where scripts/compat.sh started the gateway and the fakes (NANOGATE_COMPAT_*),
// clients built exactly as a user builds them, the fakes' control API, and checks of what came back.
//
// A new case is one test() in a *.test.mjs file of this directory; forEachKind() declares it once per upstream
// kind (the reseller and the Gemini API) with the model that only that kind serves.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import OpenAI from "openai";

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run the suite with scripts/compat.sh node (it starts the gateway and the fakes)`);
  }
  return v;
}

export const env = {
  baseURL: need("NANOGATE_COMPAT_BASE_URL"),
  key: need("NANOGATE_COMPAT_KEY"),
  restrictedKey: need("NANOGATE_COMPAT_RESTRICTED_KEY"), // may use modelBoth only
  limitedKey: need("NANOGATE_COMPAT_LIMITED_KEY"), // 1 request per minute
  refillKey: need("NANOGATE_COMPAT_REFILL_KEY"), // refillRPM requests per minute: an empty bucket refills soon
  refillRPM: Number(need("NANOGATE_COMPAT_REFILL_RPM")),
  meteredKey: need("NANOGATE_COMPAT_METERED_KEY"), // meteredRPM and meteredTPM, never reached by the suite
  meteredRPM: Number(need("NANOGATE_COMPAT_METERED_RPM")),
  meteredTPM: Number(need("NANOGATE_COMPAT_METERED_TPM")),
  control: need("NANOGATE_COMPAT_CONTROL"),
  modelBoth: need("NANOGATE_COMPAT_MODEL_BOTH"),
  modelPro: need("NANOGATE_COMPAT_MODEL_PRO"), // Gemini 3 Pro Image, gemini only
  proKey: need("NANOGATE_COMPAT_PRO_KEY"), // used only by the 4K billing case, so its usage is its own
  maxAttempts: Number(need("NANOGATE_COMPAT_MAX_ATTEMPTS")),
  adminKey: need("NANOGATE_COMPAT_ADMIN_KEY"), // the gateway's admin_key, for the admin API of keys
};

// kinds are the upstream kinds: the fake that serves each, the provider name the gateway reports and the
// public model that only this kind maps.
export const kinds = [
  { kind: "openai", server: "openai", provider: "reseller", model: need("NANOGATE_COMPAT_MODEL_OPENAI") },
  { kind: "gemini", server: "gemini", provider: "google", model: need("NANOGATE_COMPAT_MODEL_GEMINI") },
];

// client is what the README tells users to write: the base URL and the key, nothing else. extra holds the
// SDK's own options a case needs (timeout, maxRetries).
export function client(key = env.key, extra = {}) {
  return new OpenAI({ baseURL: env.baseURL, apiKey: key, ...extra });
}

// forEachKind declares test `${name} [kind]` for each upstream kind. Each starts from clean fakes (no fault,
// zero counters) and leaves them clean.
export function forEachKind(name, fn) {
  for (const k of kinds) {
    test(`${name} [${k.kind}]`, async () => {
      await reset();
      try {
        await fn(k);
      } finally {
        await reset();
      }
    });
  }
}

// caseTest declares a test that does not depend on the upstream kind, with the same clean fakes.
export function caseTest(name, fn) {
  test(name, async () => {
    await reset();
    try {
      await fn();
    } finally {
      await reset();
    }
  });
}

// ---- fakeup's control API (internal/fakeup/cmd/fakeup) ----

async function control(method, path, body) {
  const res = await fetch(env.control + path, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: body === undefined ? undefined : { "content-type": "application/json" },
  });
  if (!res.ok) throw new Error(`fakeup control ${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

const q = (server) => (server ? `?server=${server}` : "");
export const reset = (server) => control("POST", "/reset" + q(server));
export const setFault = (fault, server) => control("POST", "/fault" + q(server), fault);
export const setLatency = (d, server) => control("POST", `/latency?d=${d}` + (server ? `&server=${server}` : ""));
export const setImageSize = (bytes, server) =>
  control("POST", `/image-size?bytes=${bytes}` + (server ? `&server=${server}` : ""));
export async function stats() {
  return (await control("GET", "/stats")).json();
}
// setThoughtSignatures makes the Gemini fake sign the images it draws (reset turns it off).
export const setThoughtSignatures = (on, server = "gemini") =>
  control("POST", `/thought-signatures?on=${on}&server=${server}`);
// lastSignatures returns the thoughtSignatures of the last answer the fake signed, one per image.
export async function lastSignatures(server = "gemini") {
  return (await (await control("GET", "/signatures" + q(server))).json()).signatures;
}
// lastBody returns the last request body a fake received, parsed.
export async function lastBody(server) {
  return (await control("GET", "/last" + q(server))).json();
}

// waitFor polls cond every 20 ms for up to ms milliseconds.
export async function waitFor(what, ms, cond) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- images ----

// Two input images for editing: fixtures/tiny.png (2x2 red, green / blue, yellow) and a 2x2 grey checkerboard.
export const inputPNGs = [
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII=",
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAAAAABX3VL4AAAADElEQVR42mNg+A+EAAYAAf+tLDclAAAAAElFTkSuQmCC",
];

const mdImage = /!\[[^\]]*\]\((data:image\/png;base64,[A-Za-z0-9+/=]+)\)/g;

// markdownImages returns the data URLs of the markdown images in content.
export function markdownImages(content) {
  return [...(content ?? "").matchAll(mdImage)].map((m) => m[1]);
}

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// assertPNG decodes a data URL and checks that it is a PNG (assertPNGBytes). It returns the decoded bytes and
// the size.
export function assertPNG(dataURL) {
  assert.match(dataURL, /^data:image\/png;base64,/);
  return assertPNGBytes(Buffer.from(dataURL.slice(dataURL.indexOf(",") + 1), "base64"));
}

// assertPNGBytes checks that png is a PNG: the signature, then an IHDR chunk of 13 bytes with a non-zero size
// and a valid CRC. It returns the bytes and the size.
export function assertPNGBytes(png) {
  assert.ok(png.length >= 33, `${png.length} bytes is too short for a PNG`);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");
  assert.equal(png.readUInt32BE(8), 13, "IHDR length");
  assert.equal(png.subarray(12, 16).toString("latin1"), "IHDR");
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  assert.ok(width > 0 && height > 0, `IHDR size ${width}x${height}`);
  assert.equal(png.readUInt32BE(29), crc32(png.subarray(12, 29)), "IHDR CRC");
  return { png, width, height };
}

export const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

// makePNG builds a valid RGB PNG of width x height pixels of deterministic noise (seeded), so that it does not
// compress: about 3 x width x height bytes, large enough to cross many buffers of a multipart upload.
export function makePNG(width, height, seed) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < raw.length; i++) {
    if (i % (width * 3 + 1) === 0) continue; // filter type 0 at the start of each row
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    raw[i] = x & 0xff;
  }
  const chunk = (type, data) => {
    const b = Buffer.alloc(12 + data.length);
    b.writeUInt32BE(data.length, 0);
    b.write(type, 4, "latin1");
    data.copy(b, 8);
    b.writeUInt32BE(crc32(b.subarray(4, 8 + data.length)), 8 + data.length);
    return b;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, deflate, no filter, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// geminiInlineImages returns the base64 of the inline images of a generateContent body, in order, whichever
// JSON spelling the gateway used (inlineData or inline_data).
export function geminiInlineImages(body) {
  const out = [];
  for (const c of body.contents ?? []) {
    for (const p of c.parts ?? []) {
      const d = p.inlineData ?? p.inline_data;
      if (d) out.push(d.data);
    }
  }
  return out;
}

// resellerImageURLs returns the image_url URLs of an OpenAI chat body, in order.
export function resellerImageURLs(body) {
  const out = [];
  for (const m of body.messages ?? []) {
    if (!Array.isArray(m.content)) continue;
    for (const p of m.content) if (p.type === "image_url") out.push(p.image_url.url);
  }
  return out;
}
