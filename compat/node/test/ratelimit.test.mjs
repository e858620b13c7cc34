// Rate limits with the openai npm package: RateLimitError, the SDK's retries honouring retry-after-ms, and
// OpenAI's x-ratelimit-* headers on admitted answers.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { assertPNGBytes, caseTest, client, env, forEachKind, kinds, reset, stats } from "./harness.mjs";

const prompt = "a nano banana dish";
const messages = [{ role: "user", content: "draw a nano banana" }];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function upstreamCalls() {
  const s = await stats();
  return s.openai.requests + s.gemini.requests;
}

// assertRateLimited checks a refusal as the SDK reports it: RateLimitError, 429 rate_limit_exceeded, and the
// headers retry-after (seconds, rounded up) and retry-after-ms on the raw response. It returns retry-after-ms.
function assertRateLimited(err, maxMs) {
  assert.ok(err instanceof OpenAI.RateLimitError, `want RateLimitError, got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, 429);
  assert.equal(err.code, "rate_limit_exceeded");
  assert.match(err.message, /RPM/, "the message names the limit");
  assert.ok(err.requestID, "requestID from x-request-id");
  const ra = err.headers.get("retry-after");
  const ram = err.headers.get("retry-after-ms");
  assert.match(ra ?? "", /^[0-9]+$/, `retry-after ${ra}`);
  assert.match(ram ?? "", /^[0-9]+$/, `retry-after-ms ${ram}`);
  const ms = Number(ram);
  assert.ok(ms >= 1 && ms <= maxMs, `retry-after-ms ${ms}, want 1..${maxMs}`);
  assert.equal(Number(ra), Math.ceil(ms / 1000), `retry-after ${ra} is retry-after-ms ${ms} in seconds, rounded up`);
  return ms;
}

async function rejection(call) {
  try {
    await call();
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

caseTest("over its RPM, with retries off, the second call is a RateLimitError (429) with retry-after", async () => {
  // The key allows 1 request per minute.
  const model = kinds[0].model;
  const c = client(env.limitedKey, { maxRetries: 0 });
  const { response } = await c.images.generate({ model, prompt }).withResponse();
  assert.equal(response.headers.get("x-ratelimit-limit-requests"), "1");
  assert.equal(response.headers.get("x-ratelimit-remaining-requests"), "0");
  const before = await upstreamCalls();

  assertRateLimited(await rejection(() => c.images.generate({ model, prompt })), 60_000);
  assertRateLimited(await rejection(() => c.chat.completions.create({ model, messages })), 60_000);
  assert.equal(await upstreamCalls(), before, "a refused call reached an upstream");
});

// drain spends the refill key's bucket with retries off until a refusal that asks to wait at least 1 s, and
// returns that wait.
async function drain(model) {
  const c = client(env.refillKey, { maxRetries: 0 });
  for (let i = 0; i < env.refillRPM * 2; i++) {
    const err = await c.images.generate({ model, prompt }).then(
      () => null,
      (e) => e,
    );
    if (err === null) continue;
    const ms = assertRateLimited(err, Math.ceil(60_000 / env.refillRPM));
    if (ms >= 1000) return ms;
    await sleep(ms); // nearly refilled: take that request too, so the SDK's call below surely waits
  }
  assert.fail(`the refill key's bucket (${env.refillRPM} RPM) never ran out`);
}

forEachKind("with retries on, the SDK waits out retry-after-ms and the image is paid once", async (k) => {
  await drain(k.model);
  await reset(); // zero the fakes' counters: only the call below counts

  // The SDK with its defaults (2 retries); a fetch that only records what went over the wire.
  const wire = [];
  const recording = async (url, init) => {
    const sent = Date.now();
    const res = await fetch(url, init);
    wire.push({ sent, received: Date.now(), status: res.status, retryAfterMs: Number(res.headers.get("retry-after-ms")) });
    return res;
  };
  const c = client(env.refillKey, { fetch: recording });
  const start = Date.now();
  const { data, response } = await c.images.generate({ model: k.model, prompt }).withResponse();
  const took = Date.now() - start;

  assert.deepEqual(
    wire.map((w) => w.status),
    [429, 200],
    "one refusal, then the SDK's retry was admitted",
  );
  const waited = wire[1].sent - wire[0].received;
  assert.ok(waited >= wire[0].retryAfterMs - 5, `the SDK waited ${waited} ms, retry-after-ms was ${wire[0].retryAfterMs}`);
  assert.ok(took < 10_000, `the call took ${took} ms`);
  assert.equal(response.headers.get("x-nanogate-provider"), k.provider);
  assert.equal(data.data.length, 1);
  assertPNGBytes(Buffer.from(data.data[0].b64_json, "base64"));

  const s = await stats();
  assert.equal(s[k.server].requests, 1, "upstream calls for one SDK call that was refused once");
  assert.equal(s[k.server === "openai" ? "gemini" : "openai"].requests, 0);
});

// assertLimitHeaders checks OpenAI's x-ratelimit-* headers of an admitted answer for the metered key; the
// request's estimate included images x 1290 tokens.
function assertLimitHeaders(h, images) {
  const reset = /^([0-9]+h)?([0-9]+m)?[0-9]+(\.[0-9]+)?(ms|s)$/; // 20ms, 1s, 6m0s
  assert.equal(h.get("x-ratelimit-limit-requests"), String(env.meteredRPM));
  const rr = Number(h.get("x-ratelimit-remaining-requests"));
  assert.ok(Number.isInteger(rr) && rr >= 0 && rr < env.meteredRPM, `remaining-requests ${rr}`);
  assert.match(h.get("x-ratelimit-reset-requests") ?? "", reset);
  assert.equal(h.get("x-ratelimit-limit-tokens"), String(env.meteredTPM));
  const rt = Number(h.get("x-ratelimit-remaining-tokens"));
  assert.ok(Number.isInteger(rt) && rt >= 0 && rt <= env.meteredTPM - 1290 * images, `remaining-tokens ${rt}`);
  assert.match(h.get("x-ratelimit-reset-tokens") ?? "", reset);
}

forEachKind("withResponse() shows the x-ratelimit-* headers of an admitted answer", async (k) => {
  const c = client(env.meteredKey);
  const chat = await c.chat.completions.create({ model: k.model, messages }).withResponse();
  assertLimitHeaders(chat.response.headers, 1);
  const images = await c.images.generate({ model: k.model, prompt, n: 2 }).withResponse();
  assertLimitHeaders(images.response.headers, 2);
  assert.equal(images.data.data.length, 2);
});
