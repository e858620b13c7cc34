// models.list with the openai npm package: each key sees the models it may use.

import assert from "node:assert/strict";
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
