// The Batch API with the openai npm package, as users drive it: files.create of a JSONL (toFile), batches.create,
// batches.retrieve until a final status, files.content of the output file, batches.list.

import assert from "node:assert/strict";
import { toFile } from "openai";
import { assertPNG, assertPNGBytes, caseTest, client, kinds, stats } from "./harness.mjs";

const reseller = kinds.find((k) => k.kind === "openai");
const finalStatuses = ["completed", "failed", "expired", "cancelled"];

// runBatch uploads lines as a JSONL, creates a batch on endpoint, polls it to a final status (every 100 ms, up
// to 60 s) and checks that it completed with every line; it returns the batch and the output lines by custom_id.
async function runBatch(c, endpoint, lines) {
  const jsonl = lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
  const file = await c.files.create({ file: await toFile(Buffer.from(jsonl), "requests.jsonl"), purpose: "batch" });
  assert.equal(file.object, "file");
  assert.equal(file.purpose, "batch");
  assert.match(file.id, /^file-/);
  let batch = await c.batches.create({ input_file_id: file.id, endpoint, completion_window: "24h" });
  assert.equal(batch.object, "batch");
  assert.equal(batch.endpoint, endpoint);
  assert.equal(batch.input_file_id, file.id);
  const end = Date.now() + 60_000;
  while (!finalStatuses.includes(batch.status)) {
    assert.ok(Date.now() < end, `batch ${batch.id} still ${batch.status} after 60 s: ${JSON.stringify(batch.request_counts)}`);
    await new Promise((r) => setTimeout(r, 100));
    batch = await c.batches.retrieve(batch.id);
  }
  assert.equal(batch.status, "completed", `batch ${JSON.stringify(batch)}`);
  assert.deepEqual(batch.request_counts, { total: lines.length, completed: lines.length, failed: 0 });
  assert.ok(batch.output_file_id, "output_file_id");
  assert.equal(batch.error_file_id ?? null, null, "no error file");

  const text = await (await c.files.content(batch.output_file_id)).text();
  const out = new Map();
  for (const line of text.trim().split("\n")) {
    const r = JSON.parse(line);
    assert.ok(!out.has(r.custom_id), `custom_id ${r.custom_id} twice`);
    out.set(r.custom_id, r);
  }
  assert.deepEqual([...out.keys()].sort(), lines.map((l) => l.custom_id).sort(), "every custom_id once");
  for (const [id, r] of out) {
    assert.equal(r.error, null, `${id}: error ${JSON.stringify(r.error)}`);
    assert.equal(r.response?.status_code, 200, `${id}: ${line(r)}`);
  }
  return { batch, out };
}

const line = (r) => JSON.stringify(r).slice(0, 300);

// The markdown image of a chat answer in a batch: a link (images.offload) or a data URL.
const mdImage = /!\[[^\]]*\]\(((?:https?:\/\/|data:image\/png;base64,)[^)\s]+)\)/g;

// fetchPNG GETs an image link as a user does (plain HTTP, no key) and checks that it serves a PNG.
async function fetchPNG(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  assert.equal(res.headers.get("content-type"), "image/png");
  return assertPNGBytes(Buffer.from(await res.arrayBuffer())).png;
}

caseTest("batch: 20 chat lines and 5 image lines, uploaded, polled, downloaded, listed", async () => {
  const c = client();
  const model = reseller.model;

  const chatLines = Array.from({ length: 20 }, (_, i) => ({
    custom_id: `chat-${i}`,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model, messages: [{ role: "user", content: `draw nano banana ${i}` }] },
  }));
  const chat = await runBatch(c, "/v1/chat/completions", chatLines);
  for (const [id, r] of chat.out) {
    const body = r.response.body;
    assert.equal(body.object, "chat.completion", `${id}: ${line(r)}`);
    const urls = [...(body.choices?.[0]?.message?.content ?? "").matchAll(mdImage)].map((m) => m[1]);
    assert.equal(urls.length, 1, `${id}: one image in ${line(r)}`);
    if (id === "chat-7") {
      if (urls[0].startsWith("data:")) assertPNG(urls[0]);
      else await fetchPNG(urls[0]);
    }
  }

  const imageLines = Array.from({ length: 5 }, (_, i) => ({
    custom_id: `img-${i}`,
    method: "POST",
    url: "/v1/images/generations",
    body: { model, prompt: `a nano banana dish ${i}` },
  }));
  const imgs = await runBatch(c, "/v1/images/generations", imageLines);
  for (const [id, r] of imgs.out) {
    const body = r.response.body;
    assert.equal(body.data?.length, 1, `${id}: ${line(r)}`);
    assert.match(body.data[0].url ?? "", /^https?:\/\//, `${id}: a url in ${line(r)}`);
    await fetchPNG(body.data[0].url);
  }

  // Every line one upstream call, all to the reseller.
  const st = await stats();
  assert.equal(st.openai.requests, 25, "upstream calls to the reseller");
  assert.equal(st.gemini.requests, 0, "upstream calls to the Gemini API");

  // batches.list (auto-paginating) shows both.
  const listed = new Map();
  for await (const b of c.batches.list()) listed.set(b.id, b);
  for (const b of [chat.batch, imgs.batch]) {
    assert.ok(listed.has(b.id), `batches.list shows ${b.id}`);
    assert.equal(listed.get(b.id).status, "completed");
    assert.equal(listed.get(b.id).output_file_id, b.output_file_id);
  }
});
