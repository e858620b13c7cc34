// The /admin/ dashboard in headless Chromium against the real gateway binary in front of fakeup (started by
// scripts/browser.sh, which passes where everything is in NANOGATE_BROWSER_* variables). The steps run in order
// on one page, as a person would use it: a wrong key first, then sign-in, traffic, a failing provider, the CSV,
// then keys and teams made, used, rotated, revoked and edited through the page.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import puppeteer from "puppeteer-core";

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this test through scripts/browser.sh`);
  return v;
}

const base = need("NANOGATE_BROWSER_URL"); // http://127.0.0.1:PORT
const adminKey = need("NANOGATE_BROWSER_ADMIN_KEY");
const control = need("NANOGATE_BROWSER_CONTROL"); // fakeup's control API
const keys = {
  design: need("NANOGATE_BROWSER_DESIGN_KEY"), // team design, key design-ci
  marketing: need("NANOGATE_BROWSER_MARKETING_KEY"), // team marketing, key campaigns
  lab: need("NANOGATE_BROWSER_LAB_KEY"), // team "R&D <lab>", key "intern <i>beta</i>"
};
const model = need("NANOGATE_BROWSER_MODEL");
const chromium = process.env.NANOGATE_BROWSER_CHROMIUM || "/usr/bin/chromium";
const screenshot = process.env.NANOGATE_BROWSER_SCREENSHOT || path.resolve("screenshot.png");
const gatewayHost = new URL(base).host;
const page_ = `${base}/admin/`;

// Names from the config that would change the page if they were parsed as HTML.
const labTeam = "R&D <lab>";
const labKey = "intern <i>beta</i>";

const today = new Date().toISOString().slice(0, 10);

let browser, page, work;
const requests = []; // every request the page made: {url, authorization}
const problems = []; // uncaught errors, CSP and Trusted Types violations

async function chat(key) {
  const resp = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "draw a nano banana" }] }),
  });
  const text = await resp.text();
  assert.equal(resp.status, 200, `chat request: ${resp.status} ${text.slice(0, 300)}`);
  return resp.headers.get("x-nanogate-provider");
}

async function fault(server, body) {
  const resp = await fetch(`${control}/fault?server=${server}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal(resp.status, 204, `fakeup fault: ${resp.status} ${await resp.text()}`);
}

// cells returns the text of a table row's cells by class name, or null when the row is not there.
function cells(selector) {
  return page.evaluate((sel) => {
    const row = document.querySelector(sel);
    if (!row) return null;
    const out = {};
    for (const c of row.cells) for (const k of c.classList) out[k] = c.textContent;
    return out;
  }, selector);
}

const teamRow = (name) => `#teams tr.team[data-team="${CSS_escape(name)}"]`;
const keyRow = (team, key) => `#teams tr.key[data-team="${CSS_escape(team)}"][data-key="${CSS_escape(key)}"]`;
const providerRow = (name) => `#providers tr[data-provider="${CSS_escape(name)}"]`;
function CSS_escape(s) {
  return s.replace(/["\\]/g, "\\$&");
}

// waitRow waits until the row's cells satisfy ok (the page refreshes itself every 3 s).
async function waitRow(selector, ok, what) {
  const deadline = Date.now() + 15000;
  let last = null;
  while (Date.now() < deadline) {
    last = await cells(selector);
    if (last && ok(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: row ${selector} is ${JSON.stringify(last)}`);
}

async function signIn(key) {
  await page.waitForSelector("#admin-key", { visible: true });
  await page.type("#admin-key", key);
  await page.click('#signin-form button[type="submit"]');
}

describe("the /admin/ dashboard in Chromium", () => {
  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "nanogate-browser-"));
    browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      userDataDir: path.join(work, "profile"), // a fresh profile each run
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Nothing but loopback resolves: a request that tried to leave fails here and is still recorded below.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
      ],
    });
    const cdp = await browser.target().createCDPSession();
    await cdp.send("Browser.setDownloadBehavior", {
      behavior: "allow",
      downloadPath: path.join(work, "downloads"),
      eventsEnabled: true,
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    page.on("request", (r) => requests.push({ url: r.url(), method: r.method(), authorization: r.headers().authorization || "",
      actor: r.headers()["x-nanogate-actor"] || "" }));
    page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
    page.on("console", (m) => {
      // A refused key is a 401, which Chromium logs as a failed load: expected. Anything about the CSP is not.
      if (/Content Security Policy|Trusted Type|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
    });
  });

  after(async () => {
    if (browser) await browser.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("serves the page and its assets with a strict CSP and security headers", async () => {
    const resp = await fetch(page_);
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get("content-type"), "text/html; charset=utf-8");
    const csp = resp.headers.get("content-security-policy") || "";
    for (const want of ["script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
      "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(want), `CSP ${JSON.stringify(csp)} lacks ${want}`);
    }
    assert.ok(!csp.includes("unsafe-inline") && !csp.includes("unsafe-eval"), `CSP allows inline code: ${csp}`);
    assert.equal(resp.headers.get("x-content-type-options"), "nosniff");
    assert.equal(resp.headers.get("referrer-policy"), "no-referrer");
    assert.equal(resp.headers.get("cache-control"), "no-store");
    const html = await resp.text();
    assert.ok(!/<script>|<script [^>]*>[^<]|\sstyle=|\son[a-z]+=/i.test(html), "inline script or style in the page");
    for (const [asset, type] of [["/admin/dashboard.js", "text/javascript"], ["/admin/dashboard.css", "text/css"]]) {
      const a = await fetch(base + asset);
      assert.equal(a.status, 200, asset);
      assert.equal(a.headers.get("content-type"), `${type}; charset=utf-8`, asset);
      assert.equal(a.headers.get("x-content-type-options"), "nosniff", asset);
      await a.arrayBuffer();
    }
    const bare = await fetch(`${base}/admin`, { redirect: "manual" });
    assert.equal(bare.status, 308);
    assert.equal(bare.headers.get("location"), "/admin/");

    // The browser sees the same policy on the document it loads.
    const nav = await page.goto(page_, { waitUntil: "load" });
    assert.equal(nav.headers()["content-security-policy"], csp);
  });

  it("a wrong admin key shows an error, not data", async () => {
    await signIn("not-the-admin-key");
    await page.waitForSelector("#signin-error", { visible: true });
    const view = await page.evaluate(() => ({
      error: document.querySelector("#signin-error").textContent,
      dashboardHidden: document.querySelector("#dashboard").hidden,
      teamRows: document.querySelectorAll("#teams tbody tr").length,
      providerRows: document.querySelectorAll("#providers tbody tr").length,
      stored: sessionStorage.getItem("nanogate.adminKey"),
    }));
    assert.match(view.error, /refused/i);
    assert.equal(view.dashboardHidden, true, "the dashboard is shown after a wrong key");
    assert.equal(view.teamRows + view.providerRows, 0, "rows are shown after a wrong key");
    assert.equal(view.stored, null, "a refused key stays in sessionStorage");
  });

  it("signs in and the team table fills with the requests made through the gateway", async () => {
    await signIn(adminKey);
    await page.waitForSelector("#dashboard", { visible: true });
    assert.equal(await page.$eval("#signin-error", (e) => e.hidden), true);
    let design = await waitRow(teamRow("design"), (c) => c.requests === "0", "design before any request");
    assert.match(design["budget-col"], /^0% of \$1\.00 monthly$/);
    await page.evaluate(() => {
      window.__sameDocument = true; // gone if the page reloads
    });

    for (let i = 0; i < 3; i++) assert.equal(await chat(keys.design), "reseller");

    design = await waitRow(teamRow("design"), (c) => c.requests === "3", "design after 3 requests");
    assert.equal(design.images, "3");
    assert.equal(design.failed, "0");
    assert.match(design.cost, /^\$0\.1\d{3}$/, `cost of 3 images at $0.035 plus tokens: ${design.cost}`);
    const key = await waitRow(keyRow("design", "design-ci"), (c) => c.requests === "3", "key design-ci");
    assert.equal(key.images, "3");
    assert.ok(Number(key.tokens.replace(/,/g, "")) >= 3 * 1290, `tokens ${key.tokens}`);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page reloaded to refresh");
    // The model at the size it was billed at (the catalogue's default, 1K).
    const size = await waitRow(`#sizes tr.size[data-model="${CSS_escape(model)}"][data-size="1K"]`,
      (c) => c.images === "3", "the model at 1K");
    assert.equal(size.name, model);

    // The key went as a bearer header to the admin API, and nowhere else.
    const adminCalls = requests.filter((r) => new URL(r.url).pathname.startsWith("/admin/usage"));
    assert.ok(adminCalls.length > 0, "no call to /admin/usage");
    assert.ok(adminCalls.some((r) => r.authorization === `Bearer ${adminKey}`), "no bearer header on /admin/usage");
    assert.equal(await page.evaluate(() => document.cookie), "");
    assert.deepEqual(await page.cookies(), []);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("nanogate.adminKey")), adminKey);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
  });

  it("the chart shows today's cost against its list cost, and the savings", async () => {
    const bar = await page.waitForFunction(
      (day) => {
        const g = document.querySelector(`#chart g.day[data-day="${day}"]`);
        return g && Number(g.dataset.cost) > 0 && g.querySelector(".bar-cost") && g.querySelector(".bar-list")
          ? { cost: Number(g.dataset.cost), list: Number(g.dataset.list), days: document.querySelectorAll("#chart g.day").length }
          : null;
      },
      { timeout: 15000 },
      today,
    ).then((h) => h.jsonValue());
    // Served by the reseller at $0.035 an image; the list price is Google's $0.039.
    assert.ok(bar.list > bar.cost, `list ${bar.list} <= cost ${bar.cost}`);
    const [y, m] = today.split("-").map(Number);
    assert.equal(bar.days, new Date(Date.UTC(y, m, 0)).getUTCDate(), "one column per day of the month");
    const savings = await page.$eval("#kpi-savings", (e) => e.textContent);
    assert.match(savings, /^\$0\.0\d{3} \(\d+(\.\d)?%\)$/, `savings ${savings}`);
  });

  it("team and key names from the config are shown as text, never as markup", async () => {
    assert.equal(await chat(keys.lab), "reseller");
    const row = await waitRow(keyRow(labTeam, labKey), (c) => c.requests === "1", "the lab's key");
    assert.equal(row.name, labKey);
    const team = await cells(teamRow(labTeam));
    assert.equal(team.name, labTeam);
    assert.equal(team["budget-col"], "no budget");
    assert.equal(await page.evaluate(() => document.querySelectorAll("#teams i, #teams lab").length), 0);
  });

  it("a provider turns open when its upstream fails, without reloading the page", async () => {
    await waitRow(providerRow("reseller"), (c) => c["state-cell"] === "healthy", "reseller before the fault");
    await fault("openai", { status: 500 });
    // failure_threshold is 2: two requests fail over to google and open the reseller's circuit; the third goes
    // straight to google.
    for (let i = 0; i < 3; i++) assert.equal(await chat(keys.marketing), "google");
    const reseller = await waitRow(providerRow("reseller"), (c) => c["state-cell"].startsWith("open"), "reseller");
    assert.match(reseller["state-cell"], /^open trial in \d+ s$/);
    assert.equal(reseller.failures, "2");
    assert.equal(reseller["failure-rate"], `${Math.round((2 / Number(reseller.requests)) * 100)}%`);
    assert.equal(reseller.price, "$0.0350");
    assert.match(reseller["error-text"], /500/);
    const google = await cells(providerRow("google"));
    assert.equal(google["state-cell"], "healthy");
    assert.equal(google.requests, "3");
    assert.match(google.p50, /^\d+(\.\d)? ms$/);
    assert.equal(await page.$eval(providerRow("reseller") + " .state", (e) => e.className), "state open");

    // The marketing team is near its budget of $0.13 (3 images at $0.039 and their tokens): its bar is red.
    const marketing = await waitRow(teamRow("marketing"), (c) => c.requests === "3", "marketing");
    assert.match(marketing["budget-col"], /^\d+% of \$0\.1300 monthly$/);
    assert.equal(await page.$eval(teamRow("marketing") + " .budget", (e) => e.classList.contains("near")), true);
    assert.equal(await page.$eval(teamRow("design") + " .budget", (e) => e.classList.contains("near")), false);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page reloaded to refresh");
  });

  it("downloads the usage table as CSV", async () => {
    const dir = path.join(work, "downloads");
    await page.click("#csv");
    const file = path.join(dir, `nanogate-usage-${today.slice(0, 7)}.csv`);
    const deadline = Date.now() + 15000;
    while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(fs.existsSync(file), `no download in ${dir}: ${fs.existsSync(dir) ? fs.readdirSync(dir) : "none"}`);
    const lines = fs.readFileSync(file, "utf8").trim().split("\n");
    assert.equal(lines[0], "period,team,key,requests,failed,images,prompt_tokens,completion_tokens,image_tokens,cost_usd,list_cost_usd,savings_usd");
    const rows = lines.slice(1).map((l) => l.split(","));
    const find = (team, key) => rows.find((r) => r[1] === team && r[2] === key);
    for (const [team, key, n] of [["design", "design-ci", "3"], ["marketing", "campaigns", "3"], [labTeam, labKey, "1"]]) {
      const r = find(team, key);
      assert.ok(r, `no CSV row for ${team}/${key} in ${lines.join(" | ")}`);
      assert.equal(r[0], today);
      assert.equal(r[3], n, `${key} requests`);
      assert.equal(r[5], n, `${key} images`);
    }
    assert.equal(rows.length, 3, lines.join(" | "));
    // The download went through fetch with the bearer header, not through a link carrying the key.
    const csvCall = requests.find((r) => r.url.includes("format=csv"));
    assert.ok(csvCall && csvCall.authorization === `Bearer ${adminKey}`, "CSV not fetched with the bearer header");
  });

  it("shows a batch's progress", async () => {
    const lines = [0, 1, 2].map((i) => JSON.stringify({ custom_id: `line-${i}`, method: "POST", url: "/v1/chat/completions",
      body: { model, messages: [{ role: "user", content: `banana ${i}` }] } })).join("\n");
    const form = new FormData();
    form.append("purpose", "batch");
    form.append("file", new Blob([lines], { type: "application/jsonl" }), "lines.jsonl");
    const auth = { Authorization: `Bearer ${keys.design}` };
    let resp = await fetch(`${base}/v1/files`, { method: "POST", headers: auth, body: form });
    const file = await resp.json();
    assert.equal(resp.status, 200, JSON.stringify(file));
    resp = await fetch(`${base}/v1/batches`, { method: "POST", headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" }) });
    const batch = await resp.json();
    assert.equal(resp.status, 200, JSON.stringify(batch));
    const row = await waitRow(`#batches tr[data-batch="${batch.id}"]`, (c) => c["state-cell"] === "completed", "the batch row");
    assert.equal(row.completed, "3");
    assert.equal(row.failed, "0");
    assert.equal(row.left, "0");
    assert.match(row.owner, /^design \/ design-ci$/);
  });

  it("creates a team and a key, shows its secret once, and the key works until it is revoked in the page", async () => {
    // The file's teams and keys are listed read-only.
    const design = await waitRow(`#team-list tr[data-team-name="design"]`, (c) => c.source === "config", "team design");
    assert.equal(design.actions, "read-only");
    assert.equal(design["budget-cap"], "$1.00 monthly");
    assert.equal(await page.$$eval(`#team-list tr[data-team-name="design"] button`, (b) => b.length), 0);
    const ci = await waitRow(`#key-list tr[data-name="design-ci"]`, (c) => c.source === "config", "key design-ci");
    assert.equal(ci.actions, "read-only");
    assert.equal(await page.$$eval(`#key-list tr[data-name="design-ci"] button`, (b) => b.length), 0);

    await page.type("#team-name", "web");
    await page.type("#team-budget", "5");
    await page.click('#team-form button[type="submit"]');
    const web = await waitRow(`#team-list tr[data-team-name="web"]`, (c) => c.source === "api", "team web");
    assert.equal(web["budget-cap"], "$5.00 monthly");
    assert.equal(web.alerts, "50%, 80%, 100%");
    assert.equal(await page.$eval("#team-name", (e) => e.value), "", "the team form was not cleared");

    await page.waitForFunction(() => [...document.querySelectorAll("#key-team option")].some((o) => o.value === "web"));
    await page.type("#key-name", "web-prod");
    await page.select("#key-team", "web");
    await page.type("#key-rpm", "60");
    await page.type("#key-budget", "2");
    await page.select("#key-period", "daily");
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector("#secret-panel", { visible: true });
    const shown = await page.evaluate(() => ({
      secret: document.querySelector("#secret-value").textContent,
      text: document.querySelector("#secret-panel").textContent.replace(/\s+/g, " "),
    }));
    const secret = shown.secret;
    assert.match(secret, /^ng-[A-Za-z0-9_-]{43}$/, `the one-time secret: ${secret}`);
    assert.match(shown.text, /you will not see it again/);
    assert.match(shown.text, /web-prod/);
    await page.click("#secret-copy");
    await page.waitForFunction(() => document.querySelector("#secret-copied").textContent !== "");

    // The secret from the page works as a client key.
    let resp = await fetch(`${base}/v1/models`, { headers: { Authorization: `Bearer ${secret}` } });
    const models = await resp.json();
    assert.equal(resp.status, 200, JSON.stringify(models));
    assert.ok(models.data.some((m) => m.id === model), JSON.stringify(models));

    // Closed, the box takes the secret with it: nowhere in the DOM, the inputs or storage.
    await page.click("#secret-done");
    await page.waitForSelector("#secret-panel", { hidden: true });
    const leak = await page.evaluate((s) => ({
      html: document.documentElement.outerHTML.includes(s),
      text: document.body.textContent.includes(s),
      inputs: [...document.querySelectorAll("input, select, textarea")].some((e) => String(e.value).includes(s)),
      session: Object.keys(sessionStorage).filter((k) => String(sessionStorage.getItem(k)).includes(s)).length,
      local: localStorage.length,
      selection: String(window.getSelection()).includes(s),
    }), secret);
    assert.deepEqual(leak, { html: false, text: false, inputs: false, session: 0, local: 0, selection: false });

    const row = await waitRow(`#key-list tr[data-name="web-prod"]`, (c) => c["last-used"] !== "–", "key web-prod used");
    assert.equal(row.team, "web");
    assert.equal(row.prefix, secret.slice(0, 9) + "…");
    assert.equal(row.limits, "60 rpm");
    assert.equal(row["budget-cap"], "$2.00 daily");
    assert.equal(row.source, "api");
    assert.equal(row.status, "active");

    // Revoke, confirmed in the browser's dialog.
    const dialogs = [];
    page.once("dialog", (d) => {
      dialogs.push(d.message());
      d.accept();
    });
    await page.click(`#key-list tr[data-name="web-prod"] button.revoke`);
    const revoked = await waitRow(`#key-list tr[data-name="web-prod"]`, (c) => c.status.startsWith("revoked"), "revoked row");
    assert.equal(revoked.actions, "");
    assert.match(dialogs[0], /Revoke the key "web-prod"/);
    resp = await fetch(`${base}/v1/models`, { headers: { Authorization: `Bearer ${secret}` } });
    const refused = await resp.json();
    assert.equal(resp.status, 401);
    assert.equal(refused.error.message, "This API key was revoked.");

    // The audit trail names the page as the actor of each change.
    resp = await fetch(`${base}/admin/audit?limit=10`, { headers: { Authorization: `Bearer ${adminKey}` } });
    const audit = (await resp.json()).data;
    for (const action of ["team.create", "key.create", "key.revoke"]) {
      const ev = audit.find((e) => e.action === action);
      assert.ok(ev, `no ${action} in ${JSON.stringify(audit)}`);
      assert.equal(ev.actor, "dashboard", action);
      assert.ok(!JSON.stringify(ev).includes(secret), `the secret in the audit trail: ${action}`);
    }
  });

  it("rotating a key shows the new secret once", async () => {
    await page.type("#key-name", "web-rotated");
    await page.select("#key-team", "web");
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector("#secret-panel", { visible: true });
    const first = await page.$eval("#secret-value", (e) => e.textContent);
    await page.click("#secret-done");
    await waitRow(`#key-list tr[data-name="web-rotated"]`, (c) => c.status === "active", "key web-rotated");
    page.once("dialog", (d) => d.accept());
    await page.click(`#key-list tr[data-name="web-rotated"] button.rotate`);
    await page.waitForFunction(
      (old) => !document.querySelector("#secret-panel").hidden && document.querySelector("#secret-value").textContent !== old,
      { timeout: 15000 }, first);
    const second = await page.$eval("#secret-value", (e) => e.textContent);
    assert.match(second, /^ng-/);
    assert.notEqual(second, first);
    for (const s of [first, second]) { // the old secret keeps working through its grace period
      const resp = await fetch(`${base}/v1/models`, { headers: { Authorization: `Bearer ${s}` } });
      assert.equal(resp.status, 200);
      await resp.arrayBuffer();
    }
    await page.click("#secret-done");
    const row = await waitRow(`#key-list tr[data-name="web-rotated"]`, (c) => /old secret until/.test(c.status), "rotated row");
    assert.equal(row.prefix, second.slice(0, 9) + "…");
    assert.equal(await page.evaluate((s) => document.documentElement.outerHTML.includes(s), second), false);
  });

  it("edits a team's budget and limits", async () => {
    await page.click(`#team-list tr[data-team-name="web"] button.edit`);
    await page.waitForSelector("#team-edit", { visible: true });
    assert.equal(await page.$eval("#edit-budget", (e) => e.value), "5");
    await page.$eval("#edit-budget", (e) => { e.value = ""; });
    await page.type("#edit-budget", "7.5");
    await page.select("#edit-period", "daily");
    await page.type("#edit-rpm", "120");
    await page.click('#team-edit button[type="submit"]');
    await page.waitForSelector("#team-edit", { hidden: true });
    const row = await waitRow(`#team-list tr[data-team-name="web"]`, (c) => c["budget-cap"] === "$7.50 daily", "edited team");
    assert.equal(row.rpm, "120");
    const resp = await fetch(`${base}/admin/teams/web`, { headers: { Authorization: `Bearer ${adminKey}` } });
    const team = await resp.json();
    assert.equal(resp.status, 200, JSON.stringify(team));
    assert.deepEqual(team.budget, { usd: 7.5, period: "daily" });
    assert.equal(team.rpm, 120);
  });

  it("shows the API's refusals in the page", async () => {
    await page.type("#key-name", "web-prod"); // names stay taken by revoked keys
    await page.select("#key-team", "web");
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector("#keys-error", { visible: true });
    assert.match(await page.$eval("#keys-error", (e) => e.textContent), /web-prod.*already exists/);
    assert.equal(await page.$eval("#secret-panel", (e) => e.hidden), true);
    await page.$eval("#key-form", (f) => f.reset());

    await page.type("#team-name", "design");
    await page.click('#team-form button[type="submit"]');
    await page.waitForSelector("#teams-error", { visible: true });
    assert.match(await page.$eval("#teams-error", (e) => e.textContent), /design.*already exists/);
    await page.$eval("#team-form", (f) => f.reset());

    // Every call the page made to the admin API said it came from the dashboard.
    const calls = requests.filter((r) => new URL(r.url).pathname.startsWith("/admin/") && !/\.(js|css)$|\/admin\/$/.test(r.url));
    assert.ok(calls.some((r) => r.method === "DELETE"), "no DELETE recorded");
    for (const r of calls) assert.equal(r.actor, "dashboard", `${r.method} ${r.url} without x-nanogate-actor`);
  });

  it("takes a screenshot", async () => {
    // The refusals the last step provoked are not part of the picture (docs/dashboard.png is this screenshot).
    await page.$$eval("#keys-error, #teams-error", (els) => els.forEach((e) => (e.hidden = true)));
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: screenshot, fullPage: true });
    const png = fs.readFileSync(screenshot);
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    console.log(`screenshot: ${screenshot} (${png.length} bytes)`);
  });

  it("signing out forgets the key and the data", async () => {
    await page.click("#signout");
    await page.waitForSelector("#signin", { visible: true });
    const view = await page.evaluate(() => ({
      stored: sessionStorage.getItem("nanogate.adminKey"),
      dashboardHidden: document.querySelector("#dashboard").hidden,
      rows: document.querySelectorAll("#teams tbody tr, #sizes tbody tr, #providers tbody tr, #key-list tbody tr, #team-list tbody tr").length,
    }));
    assert.deepEqual(view, { stored: null, dashboardHidden: true, rows: 0 });
    // No refresh runs after sign-out.
    const before = requests.length;
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(requests.length, before, "the page kept calling the admin API after sign-out");
  });

  it("no request left loopback, the key was never in a URL, nothing broke the CSP", () => {
    assert.ok(requests.length > 5, `only ${requests.length} requests recorded`);
    for (const r of requests) {
      const u = new URL(r.url);
      if (u.protocol === "data:" || u.protocol === "blob:") {
        if (u.protocol === "blob:") assert.equal(new URL(u.pathname).host, gatewayHost, r.url);
        continue;
      }
      assert.equal(u.host, gatewayHost, `a request left the gateway's loopback address: ${r.url}`);
      assert.ok(!r.url.includes(adminKey), `the admin key in a URL: ${r.url}`);
    }
    assert.deepEqual(problems, []);
  });
});
