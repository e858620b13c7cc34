// models.list with the openai npm package: each key sees the models it may use.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { caseTest, client, env, kinds } from "./harness.mjs";

async function ids(c) {
  const out = [];
  for await (const m of c.models.list()) {
    assert.equal(m.object, "model");
    assert.equal(typeof m.owned_by, "string");
    out.push(m.id);
  }
  return out.sort();
}

caseTest("models.list: the unrestricted key sees every model, the restricted key only its own", async () => {
  const want = [env.modelBoth, env.modelPro, ...kinds.map((k) => k.model)];
  assert.deepEqual(await ids(client()), want.sort());
  assert.deepEqual(await ids(client(env.restrictedKey)), [env.modelBoth]);
});

caseTest("models.retrieve: a model the key may use, and 404 model_not_found for one it may not", async () => {
  const m = await client().models.retrieve(env.modelBoth);
  assert.equal(m.id, env.modelBoth);
  assert.equal(m.object, "model");
  assert.equal(typeof m.owned_by, "string");
  assert.equal(typeof m.created, "number");
  const err = await client(env.restrictedKey).models.retrieve(kinds[0].model).catch((e) => e);
  assert.ok(err instanceof OpenAI.NotFoundError, `want a NotFoundError, got ${err?.constructor?.name}`);
  assert.equal(err.code, "model_not_found");
});

caseTest("a Gemini 3 Pro Image request at 4K is billed 2000 image tokens and $0.24", async () => {
  // image_config is nanogate's extension; the SDK sends body fields it does not know as they are.
  const res = await client(env.proKey).chat.completions.create({
    model: env.modelPro,
    messages: [{ role: "user", content: "draw a nano banana" }],
    image_config: { image_size: "4K" },
  });
  assert.equal(res.usage.completion_tokens_details.image_tokens, 2000);
  let usage;
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${env.baseURL}/usage`, { headers: { Authorization: `Bearer ${env.proKey}` } });
    usage = (await r.json()).key;
    if (usage.requests === 1) break;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  assert.equal(usage.images, 1);
  // $0.24 for the image, plus 17 prompt tokens at $2/M and 14 text tokens at $12/M.
  assert.ok(usage.cost_usd >= 0.24 && usage.cost_usd < 0.2403, `billed $${usage.cost_usd}`);
});
