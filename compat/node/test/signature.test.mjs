// Thought signatures: Google's 3.x image models sign the images they draw and need the signature back with the
// image on the next turn (Gemini 3 Pro Image here: the catalogue says 2.5 Flash Image signs none). The SDK only
// sends back the assistant message it got.

import assert from "node:assert/strict";
import { caseTest, client, env, kinds, lastBody, lastSignatures, markdownImages, setThoughtSignatures } from "./harness.mjs";

caseTest("a two-turn edit sends the first answer's thoughtSignature back to Google", async () => {
  const k = kinds.find((k) => k.kind === "gemini");
  await setThoughtSignatures(true);
  const c = client();
  const prompt = [{ role: "user", content: "draw a nano banana" }];
  const first = await c.chat.completions.create({ model: env.modelPro, messages: prompt });
  assert.equal(markdownImages(first.choices[0].message.content).length, 1);
  const issued = await lastSignatures();
  assert.equal(issued.length, 1, "the fake signed one image");

  const second = await c.chat.completions.create({
    model: env.modelPro,
    messages: [...prompt, first.choices[0].message, { role: "user", content: "make it blue" }],
  });
  assert.equal(markdownImages(second.choices[0].message.content).length, 1);

  const sent = await lastBody(k.server);
  const signed = [];
  for (const ct of sent.contents) {
    for (const p of ct.parts) {
      if (p.thoughtSignature === undefined) continue;
      assert.equal(ct.role, "model", "signatures go on the model's turn only");
      assert.ok(p.inlineData, "the signature is on the image part");
      signed.push(p.thoughtSignature);
    }
  }
  assert.deepEqual(signed, issued, "the second request carries the first answer's signature");
});
