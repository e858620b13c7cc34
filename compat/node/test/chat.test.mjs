// chat.completions with the openai npm package: plain, multi-image editing, streaming, raw responses.

import assert from "node:assert/strict";
import OpenAI from "openai";
import {
  assertPNG,
  caseTest,
  client,
  forEachKind,
  geminiInlineImages,
  inputPNGs,
  kinds,
  lastBody,
  markdownImages,
  resellerImageURLs,
  setFault,
  setImageSize,
  stats,
} from "./harness.mjs";

const prompt = [{ role: "user", content: "draw a nano banana" }];

// assertServedOnce checks that exactly one upstream call reached the kind's fake and none the other.
async function assertServedOnce(k) {
  const s = await stats();
  for (const [name, st] of Object.entries(s)) {
    assert.equal(st.requests, name === k.server ? 1 : 0, `upstream calls to the ${name} fake`);
  }
}

forEachKind("chat.completions.create returns the image as a markdown PNG", async (k) => {
  const r = await client().chat.completions.create({ model: k.model, messages: prompt });
  assert.equal(r.object, "chat.completion");
  assert.ok(r.id, "id");
  assert.ok(r.created > 1_600_000_000, `created ${r.created}`);
  assert.equal(r.model, k.model);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, "assistant");
  assert.equal(c.finish_reason, "stop");
  const urls = markdownImages(c.message.content);
  assert.equal(urls.length, 1, `one markdown image in ${JSON.stringify(c.message.content.slice(0, 200))}`);
  assertPNG(urls[0]);
  // OpenAI's schema requires both, nullable: present as null.
  assert.ok("refusal" in c.message && c.message.refusal === null, `refusal ${c.message.refusal}`);
  assert.ok("logprobs" in c && c.logprobs === null, `logprobs ${c.logprobs}`);
  assert.equal(r.usage.completion_tokens_details.image_tokens, 1290);
  assert.ok(r.usage.completion_tokens >= 1290);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  await assertServedOnce(k);
});

forEachKind("two input images reach the upstream in order (multi-image editing)", async (k) => {
  const r = await client().chat.completions.create({
    model: k.model,
    messages: [
      {
        role: "user",
        content: [
          { type: "text", text: "put the first picture on the left of the second" },
          { type: "image_url", image_url: { url: `data:image/png;base64,${inputPNGs[0]}` } },
          { type: "image_url", image_url: { url: `data:image/png;base64,${inputPNGs[1]}` } },
        ],
      },
    ],
  });
  const urls = markdownImages(r.choices[0].message.content);
  assert.equal(urls.length, 1);
  assertPNG(urls[0]);
  assert.equal(r.usage.completion_tokens_details.image_tokens, 1290);
  await assertServedOnce(k);

  const body = await lastBody(k.server);
  if (k.kind === "gemini") {
    assert.deepEqual(geminiInlineImages(body), inputPNGs, "the Gemini fake's inlineData parts, in order");
  } else {
    assert.deepEqual(
      resellerImageURLs(body),
      inputPNGs.map((b) => `data:image/png;base64,${b}`),
      "the reseller's image_url parts, in order",
    );
  }
});

forEachKind("streaming with stream_options.include_usage yields the deltas, then the usage", async (k) => {
  const stream = await client().chat.completions.create({
    model: k.model,
    messages: prompt,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
  for (const ch of chunks) assert.equal(ch.object, "chat.completion.chunk");
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  assert.equal(chunks[0].choices[0].delta.refusal, null);
  for (const ch of chunks) for (const c of ch.choices) assert.ok("logprobs" in c && c.logprobs === null, "logprobs null on every chunk choice");

  const content = chunks.map((ch) => ch.choices[0]?.delta?.content ?? "").join("");
  const urls = markdownImages(content);
  assert.equal(urls.length, 1, "one markdown image over the deltas");
  assertPNG(urls[0]);
  assert.equal(chunks.filter((ch) => ch.choices[0]?.finish_reason === "stop").length, 1, "one finish_reason chunk");

  const last = chunks.at(-1);
  assert.deepEqual(last.choices, [], "the usage chunk has no choices");
  assert.equal(last.usage.completion_tokens_details.image_tokens, 1290);
  assert.ok(last.usage.completion_tokens >= 1290);
  for (const ch of chunks.slice(0, -1)) assert.ok(ch.usage == null, "usage only on the last chunk");
  await assertServedOnce(k);
});

forEachKind("the chat.completions.stream helper assembles the final completion", async (k) => {
  const runner = client().chat.completions.stream({
    model: k.model,
    messages: prompt,
    stream_options: { include_usage: true },
  });
  let deltas = "";
  runner.on("content", (delta) => {
    deltas += delta;
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, "stop");
  assert.equal(final.choices[0].message.content, deltas);
  const urls = markdownImages(final.choices[0].message.content);
  assert.equal(urls.length, 1);
  assertPNG(urls[0]);
  assert.equal(final.usage.completion_tokens_details.image_tokens, 1290);
});

forEachKind("a real-size image (1.5 MB) survives plain and streamed answers", async (k) => {
  await setImageSize(1_500_000, k.server);
  const plain = await client().chat.completions.create({ model: k.model, messages: prompt });
  const [url] = markdownImages(plain.choices[0].message.content);
  const { png } = assertPNG(url);
  assert.ok(png.length >= 1_400_000, `${png.length} bytes`);

  const stream = await client().chat.completions.create({ model: k.model, messages: prompt, stream: true });
  let content = "";
  for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? "";
  const [streamed] = markdownImages(content);
  assert.ok(assertPNG(streamed).png.equals(png), "the same image bytes streamed and plain");
});

forEachKind("withResponse() shows x-request-id and x-nanogate-provider", async (k) => {
  const { data, response, request_id } = await client()
    .chat.completions.create({ model: k.model, messages: prompt })
    .withResponse();
  const id = response.headers.get("x-request-id");
  assert.ok(id, "x-request-id");
  assert.equal(request_id, id);
  assert.equal(data._request_id, id);
  assert.equal(response.headers.get("x-nanogate-provider"), k.provider);
  assert.equal(markdownImages(data.choices[0].message.content).length, 1);
});

forEachKind("multi-turn editing: the assistant message goes back as the SDK returned it", async (k) => {
  const c = client();
  const first = await c.chat.completions.create({ model: k.model, messages: prompt });
  const [url] = markdownImages(first.choices[0].message.content);
  assertPNG(url);
  const second = await c.chat.completions.create({
    model: k.model,
    messages: [...prompt, first.choices[0].message, { role: "user", content: "make it blue" }],
  });
  assertPNG(markdownImages(second.choices[0].message.content)[0]);

  const body = await lastBody(k.server);
  if (k.kind === "gemini") {
    // The image of the earlier answer is an image again for Google, in the model's turn.
    const model = body.contents.find((c) => c.role === "model");
    assert.ok(model, `a model turn in ${JSON.stringify(body).slice(0, 300)}`);
    assert.deepEqual(geminiInlineImages({ contents: [model] }), [url.slice(url.indexOf(",") + 1)]);
  } else {
    assert.equal(body.messages[1].role, "assistant");
    assert.deepEqual(markdownImages(body.messages[1].content), [url]);
  }
});

forEachKind("x-nanogate-image-format: images puts the images in message.images", async (k) => {
  const r = await client().chat.completions.create(
    { model: k.model, messages: prompt },
    { headers: { "x-nanogate-image-format": "images" } },
  );
  const m = r.choices[0].message;
  assert.deepEqual(markdownImages(m.content), [], "no image left in content");
  assert.equal(m.images.length, 1);
  assert.equal(m.images[0].type, "image_url");
  assertPNG(m.images[0].image_url.url);
});

forEachKind("an upstream cut mid-stream is an SDK error, not a truncated answer", async (k) => {
  await setFault({ drop_mid_body: true }, k.server);
  const stream = await client().chat.completions.create({ model: k.model, messages: prompt, stream: true });
  let content = "";
  let err;
  try {
    for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? "";
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof OpenAI.APIError, `want an APIError, got ${err?.constructor?.name} after ${JSON.stringify(content)}`);
  assert.equal(err.code, "upstream_error");
  assert.deepEqual(markdownImages(content), []);
});

caseTest("the image_config extension (SDK extra body) reaches Google as imageConfig [gemini]", async () => {
  const k = kinds.find((k) => k.kind === "gemini");
  const r = await client().chat.completions.create({
    model: k.model,
    messages: prompt,
    image_config: { aspect_ratio: "16:9" },
  });
  assertPNG(markdownImages(r.choices[0].message.content)[0]);
  const gc = (await lastBody(k.server)).generationConfig ?? {};
  const ic = gc.imageConfig ?? gc.image_config ?? {};
  assert.equal(ic.aspectRatio ?? ic.aspect_ratio, "16:9", `generationConfig ${JSON.stringify(gc)}`);
});
