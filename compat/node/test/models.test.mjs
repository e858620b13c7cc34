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
  const want = [env.modelBoth, ...kinds.map((k) => k.model)];
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
