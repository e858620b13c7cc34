// A key made at run time: created with POST /admin/keys (plain fetch, as an operator's script would), used with
// the openai npm package unchanged, then revoked with DELETE /admin/keys/{id}, after which the SDK reports an
// AuthenticationError saying so.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { caseTest, client, env, kinds, markdownImages, assertPNG } from "./harness.mjs";

// admin calls the gateway's admin API with the admin key and returns the status and the JSON answer.
async function admin(method, path, body) {
  const resp = await fetch(new URL(path, env.baseURL), {
    method,
    headers: { Authorization: `Bearer ${env.adminKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: resp.status, body: await resp.json() };
}

caseTest("a key made with POST /admin/keys works with the SDK until DELETE /admin/keys/{id} revokes it", async () => {
  // Unique per run, so that the case can run again on the same `serve` stack (revoked names stay taken).
  const name = `sdk-node-${Date.now()}`;
  const made = await admin("POST", "/admin/keys", { name, team: "compat" });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  assert.match(made.body.key, /^ng-/);
  assert.equal(made.body.name, name);

  const c = client(made.body.key);
  const ids = [];
  for await (const m of c.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), [env.modelBoth, env.modelPro, ...kinds.map((k) => k.model)].sort());
  const r = await c.chat.completions.create({ model: kinds[0].model, messages: [{ role: "user", content: "draw a nano banana" }] });
  const images = markdownImages(r.choices[0].message.content);
  assert.equal(images.length, 1);
  assertPNG(images[0]);

  const revoked = await admin("DELETE", `/admin/keys/${made.body.id}`);
  assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
  assert.ok(revoked.body.revoked_at, JSON.stringify(revoked.body));

  let err;
  try {
    await c.models.list();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof OpenAI.AuthenticationError, `want an AuthenticationError, got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, 401);
  assert.equal(err.code, "invalid_api_key");
  assert.equal(err.error?.message, "This API key was revoked.");
  assert.match(err.message, /revoked/);
});
