// The Images API with the openai npm package: images.generate (b64_json and url) and images.edit with files.

import assert from "node:assert/strict";
import { toFile } from "openai";
import {
  assertPNGBytes,
  client,
  forEachKind,
  geminiInlineImages,
  lastBody,
  makePNG,
  resellerImageURLs,
  setImageSize,
  sha256,
  stats,
} from "./harness.mjs";

const prompt = "a nano banana dish";

// assertUpstreamCalls checks that n upstream calls reached the kind's fake and none the other.
async function assertUpstreamCalls(k, n) {
  for (const [name, st] of Object.entries(await stats())) {
    assert.equal(st.requests, name === k.server ? n : 0, `upstream calls to the ${name} fake`);
  }
}

// b64PNG decodes an image of an images response given as b64_json and checks that it is a PNG.
function b64PNG(img) {
  assert.equal(typeof img.b64_json, "string", `b64_json in ${JSON.stringify(img).slice(0, 200)}`);
  assert.equal(img.url, undefined, "no url next to b64_json");
  return assertPNGBytes(Buffer.from(img.b64_json, "base64")).png;
}

forEachKind("images.generate, b64_json, n 2: two PNGs and the usage of GPT image models", async (k) => {
  const r = await client().images.generate({ model: k.model, prompt, n: 2, response_format: "b64_json" });
  assert.ok(r.created > 1_600_000_000, `created ${r.created}`);
  assert.equal(r.data.length, 2);
  for (const img of r.data) b64PNG(img);
  // usage is in the SDK's type (GPT image models send it); read as sent.
  assert.equal(r.usage.output_tokens, 2580, `usage ${JSON.stringify(r.usage)}`);
  assert.equal(r.usage.output_tokens_details?.image_tokens, 2580);
  assert.ok(r.usage.input_tokens > 0, "input_tokens");
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  await assertUpstreamCalls(k, 2); // Gemini draws one image per call
});

forEachKind("images.generate, url: the link serves, over plain HTTP, the bytes b64_json carries", async (k) => {
  const size = 300_000;
  await setImageSize(size, k.server);
  const c = client();
  const r = await c.images.generate({ model: k.model, prompt, response_format: "url" });
  assert.equal(r.data.length, 1);
  const { url, b64_json } = r.data[0];
  assert.equal(b64_json, undefined, "no b64_json next to url");
  assert.match(url, /^https?:\/\//);

  // What a user does with the link: a plain GET, no key.
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  assert.equal(res.headers.get("content-type"), "image/png");
  const linked = assertPNGBytes(Buffer.from(await res.arrayBuffer())).png;
  assert.equal(linked.length, size, "the fake's configured image size");

  const b64 = await c.images.generate({ model: k.model, prompt, response_format: "b64_json" });
  assert.equal(sha256(linked), sha256(b64PNG(b64.data[0])), "the same image by link and inline");
  await assertUpstreamCalls(k, 2);
});

forEachKind("images.edit with two files (toFile): the model gets both images, in order, bytes intact", async (k) => {
  // Two noise PNGs of about 57 KB each: many buffers of the multipart body, no compression to hide a mix-up.
  const inputs = [makePNG(160, 120, 1), makePNG(120, 160, 2)];
  const editPrompt = "put the first picture on the left of the second";
  const r = await client().images.edit({
    model: k.model,
    prompt: editPrompt,
    image: [await toFile(inputs[0], "left.png", { type: "image/png" }), await toFile(inputs[1], "right.png", { type: "image/png" })],
  });
  assert.equal(r.data.length, 1);
  b64PNG(r.data[0]); // b64_json is the default
  assert.equal(r.usage.output_tokens, 1290);
  await assertUpstreamCalls(k, 1);

  const body = await lastBody(k.server);
  const want = inputs.map((b) => b.toString("base64"));
  if (k.kind === "gemini") {
    assert.deepEqual(geminiInlineImages(body), want, "the Gemini fake's inlineData parts, in order");
    const parts = body.contents.flatMap((c) => c.parts ?? []);
    for (const p of parts.filter((p) => p.inlineData ?? p.inline_data)) {
      const d = p.inlineData ?? p.inline_data;
      assert.equal(d.mimeType ?? d.mime_type, "image/png");
    }
    assert.equal(parts.map((p) => p.text ?? "").join(""), editPrompt, "the prompt as the text part");
  } else {
    assert.deepEqual(
      resellerImageURLs(body),
      want.map((b) => `data:image/png;base64,${b}`),
      "the reseller's image_url parts, in order",
    );
  }
});
