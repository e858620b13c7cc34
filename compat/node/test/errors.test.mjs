// Errors with the openai npm package: the SDK's typed errors, its retries and its timeouts.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { caseTest, client, env, forEachKind, kinds, setFault, setLatency, stats, waitFor } from "./harness.mjs";

const prompt = [{ role: "user", content: "draw a nano banana" }];
const model = kinds.find((k) => k.kind === "openai").model;

// rejects runs the call and checks the SDK error class, status and OpenAI code; the gateway's x-request-id
// reaches err.requestID.
async function rejects(call, cls, status, code) {
  let err;
  try {
    await call();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof cls, `want ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, status);
  assert.equal(err.code, code);
  assert.ok(err.requestID, "requestID from x-request-id");
  return err;
}

async function assertNoUpstreamCall() {
  for (const [name, st] of Object.entries(await stats())) assert.equal(st.requests, 0, `calls to the ${name} fake`);
}

caseTest("a wrong key is an AuthenticationError (401)", async () => {
  await rejects(
    () => client("sk-not-a-nanogate-key").chat.completions.create({ model, messages: prompt }),
    OpenAI.AuthenticationError,
    401,
    "invalid_api_key",
  );
  await assertNoUpstreamCall();
});

caseTest("the restricted key on another model is a PermissionDeniedError (403)", async () => {
  await rejects(
    () => client(env.restrictedKey).chat.completions.create({ model, messages: prompt }),
    OpenAI.PermissionDeniedError,
    403,
    "model_not_allowed",
  );
  await assertNoUpstreamCall();
});

caseTest("an unknown model is a NotFoundError (404)", async () => {
  await rejects(
    () => client().chat.completions.create({ model: "no-such-model", messages: prompt }),
    OpenAI.NotFoundError,
    404,
    "model_not_found",
  );
  await assertNoUpstreamCall();
});

caseTest("n: 0 is a BadRequestError (400) naming the parameter", async () => {
  const err = await rejects(
    () => client().chat.completions.create({ model, messages: prompt, n: 0 }),
    OpenAI.BadRequestError,
    400,
    "invalid_request",
  );
  assert.equal(err.param, "n");
  await assertNoUpstreamCall();
});

caseTest("an unknown parameter in the body is a BadRequestError (400)", async () => {
  // Extra body fields go through the SDK as they are (its documented way to send undocumented parameters).
  const err = await rejects(
    () => client().chat.completions.create({ model, messages: prompt, nanogate_no_such_parameter: true }),
    OpenAI.BadRequestError,
    400,
    "invalid_request",
  );
  assert.equal(err.param, "nanogate_no_such_parameter");
  await assertNoUpstreamCall();
});

// failingCall makes every upstream answer a 200 that is not an answer (an image may have been made and
// billed), runs one call with the SDK's default retries (2), and checks the 502 and that the gateway's attempts
// were the only upstream calls.
async function failingCall(params, want) {
  await setFault({ garbage: true });
  const err = await rejects(
    () => client().chat.completions.create(params),
    OpenAI.InternalServerError,
    502,
    "upstream_error",
  );
  assert.equal(err.headers.get("x-should-retry"), "false");
  const s = await stats();
  for (const [name, n] of Object.entries(want)) assert.equal(s[name].requests, n, `calls to the ${name} fake`);
}

forEachKind("every upstream failing is one SDK call: no SDK retry, InternalServerError 502", async (k) => {
  // One provider maps this model, so the gateway's attempts end after one call.
  const want = { openai: 0, gemini: 0, [k.server]: 1 };
  await failingCall({ model: k.model, messages: prompt }, want);
  await failingCall({ model: k.model, messages: prompt, stream: true }, { [k.server]: 2 });
});

caseTest("every upstream failing on a model both kinds serve costs exactly max_attempts upstream calls", async () => {
  const want = { openai: 1, gemini: 1 };
  assert.equal(want.openai + want.gemini, env.maxAttempts, "the config's routing.max_attempts");
  await failingCall({ model: env.modelBoth, messages: prompt }, want);
});

forEachKind("an overloaded upstream (429) is retried by the SDK itself, then succeeds", async (k) => {
  // One 429 asking for 200 ms: the gateway answers retryable (no x-should-retry: false) with that delay, the
  // SDK waits and retries on its own, and the second upstream call succeeds.
  await setFault({ status: 429, header: { "retry-after-ms": "200" }, times: 1 }, k.server);
  const res = await client().chat.completions.create({ model: k.model, messages: prompt });
  assert.ok(res.choices[0].message.content.length > 0, "an answer after the retry");
  assert.equal((await stats())[k.server].requests, 2, "one failed and one successful upstream call");
});

forEachKind("an SDK timeout shorter than the upstream's latency cancels the upstream call", async (k) => {
  await setLatency("10s", k.server);
  const c = client(env.key, { timeout: 1000, maxRetries: 0 });
  let err;
  try {
    await c.chat.completions.create({ model: k.model, messages: prompt });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof OpenAI.APIConnectionTimeoutError, `got ${err?.constructor?.name}: ${err?.message}`);
  // The fake answers after 10 s: a cancellation it counts before then can only come from the gateway.
  await waitFor("the fake to see its caller leave", 5000, async () => {
    const s = (await stats())[k.server];
    return s.canceled === 1 && s.inflight === 0;
  });
  assert.equal((await stats())[k.server].requests, 1);
});
