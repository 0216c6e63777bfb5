// The on-call walk through the portal, in Debian's Chromium driven by
// Playwright: deploy → invoke → see the answer → an event dead-lettered
// while the function is broken → fix → replay → delivered → pause →
// resume. Run by switchboard/tests/portal.rs, which starts the platform,
// passes what this needs in the environment, and checks afterwards what
// the function received. Screenshots go to $SHOTS.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";

const env = (name) => process.env[name] ?? assert.fail(`${name} is not set (switchboard/tests/portal.rs sets it)`);
const [url, user, password, ceUrl, shots] = ["PORTAL_URL", "PORTAL_USER", "PORTAL_PASSWORD", "CE_URL", "SHOTS"].map(env);
const [command, switchFile, recordFile] = ["FUNCTION_COMMAND", "SWITCH_FILE", "RECORD_FILE"].map(env);

const recorded = () => (fs.existsSync(recordFile) ? fs.readFileSync(recordFile, "utf8").split("\n").filter(Boolean).map(JSON.parse) : []);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const step = (text) => console.log(`step: ${text}`);

// The flags this machine needs: no sandbox as root, no background
// connections to a network that is closed.
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ httpCredentials: { username: user, password }, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  const refresh = () => page.getByRole("button", { name: "Refresh", exact: true }).click();

  step("open the portal");
  await page.goto(url);
  await page.getByText("No functions yet").waitFor();

  step("deploy fixme, subscribed to order.created");
  const form = page.locator("#deploy");
  await form.getByLabel("Name").fill("fixme");
  await form.getByLabel("Command").fill(command);
  await form.getByLabel("Topics").fill("order.created");
  await form.getByLabel("Environment").fill(`mode=http\nSWITCH_FILE=${switchFile}\nRECORD_FILE=${recordFile}\nAPI_TOKEN=do-not-show`);
  await form.getByRole("button", { name: "Deploy" }).click();
  await page.getByText("deployed fixme").waitFor();
  const row = page.locator('#functions tr[data-name="fixme"]');
  for (let i = 0; !(await row.textContent()).includes("1/1"); i++) {
    assert.ok(i < 40, `fixme never became ready: ${await row.textContent()}`);
    await sleep(500);
    await refresh();
  }
  await shot("1-deployed");

  step("invoke it from the keyboard and see the answer");
  await page.getByRole("button", { name: "Show fixme" }).focus();
  await page.keyboard.press("Enter");
  // Choosing a function puts the focus in its request body.
  await page.keyboard.type("hello");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.locator("#status").filter({ hasText: "200 OK" }).waitFor();
  assert.equal(await page.locator("#response").textContent(), "ok");
  const environment = await page.locator("#detail-fields").textContent();
  assert.ok(environment.includes("API_TOKEN=••••••") && !environment.includes("do-not-show"), environment);
  assert.ok(environment.includes("mode=http"), environment);
  await shot("2-invoked");

  step("break it; an order.created event is dead-lettered");
  fs.writeFileSync(switchFile, "");
  const event = {
    method: "POST",
    headers: { "ce-specversion": "1.0", "ce-type": "order.created", "ce-source": "/portal-test", "ce-id": "order-1", "content-type": "text/plain" },
    body: "order 1",
  };
  const sent = await fetch(ceUrl, event);
  assert.ok(sent.status >= 200 && sent.status < 300, `the CloudEvent was refused: ${sent.status}`);
  const letter = page.locator("#dead-letters tr").filter({ hasText: "fixme" });
  for (let i = 0; (await letter.count()) === 0; i++) {
    assert.ok(i < 40, "no dead letter for fixme in the portal");
    await sleep(500);
    await page.locator("#letter-filter").getByRole("button", { name: "Show" }).click();
  }
  assert.ok((await letter.textContent()).includes("500"), await letter.textContent());
  await letter.scrollIntoViewIfNeeded();
  await shot("3-dead-lettered");

  step("the events view shows the source and the topic");
  await refresh();
  await page.locator('#sources tr[data-source="cloudevents"]').waitFor();
  assert.ok((await page.locator("#topics").textContent()).includes("order.created"));

  step("fix it and replay the letter");
  fs.rmSync(switchFile);
  await letter.getByRole("button", { name: /^Replay letter/ }).click();
  await page.locator("#letter-result").filter({ hasText: "1 delivered" }).waitFor();
  await page.getByText("No dead letters.").waitFor();
  assert.deepEqual(recorded().map((c) => c.body), ["hello", "order 1"]);
  await shot("4-replayed");

  step("pause fixme: an event waits");
  await page.getByRole("button", { name: "Show fixme" }).click();
  await page.getByRole("button", { name: "Pause events" }).click();
  await page.locator("#detail-state").filter({ hasText: "events paused" }).waitFor();
  await page.locator("#topics").getByText("fixme (paused)").waitFor();
  const held = await fetch(ceUrl, { ...event, headers: { ...event.headers, "ce-id": "order-2" }, body: "order 2" });
  assert.equal(held.status, 503, "CloudEvents for a paused function are refused with Retry-After");
  await sleep(1500);
  assert.equal(recorded().length, 2, "nothing is delivered while paused");
  await shot("5-paused");

  step("resume; the next event is delivered");
  await page.getByRole("button", { name: "Resume events" }).click();
  await page.locator("#detail-state").filter({ hasNotText: "paused" }).waitFor();
  for (let i = 0; ; i++) {
    const r = await fetch(ceUrl, { ...event, headers: { ...event.headers, "ce-id": "order-2" }, body: "order 2" });
    if (r.ok) break;
    assert.ok(i < 20, `still refused after the resume: ${r.status}`);
    await sleep(250);
  }
  assert.deepEqual(recorded().map((c) => c.body), ["hello", "order 1", "order 2"]);

  step("a letter nobody wants is purged, once confirmed");
  fs.writeFileSync(switchFile, "");
  const unwanted = await fetch(ceUrl, { ...event, headers: { ...event.headers, "ce-id": "order-3" }, body: "order 3" });
  assert.ok(unwanted.ok, `the CloudEvent was refused: ${unwanted.status}`);
  fs.rmSync(switchFile);
  await page.locator("#letter-filter").getByRole("button", { name: "Show" }).click();
  const confirmed = [];
  page.once("dialog", (d) => {
    confirmed.push(d.message());
    d.accept();
  });
  await letter.getByRole("button", { name: /^Purge letter/ }).click();
  await page.locator("#letter-result").filter({ hasText: "Purged 1." }).waitFor();
  assert.match(confirmed[0], /^Purge letter \d+ for good\?$/);
  await page.getByText("No dead letters.").waitFor();
  assert.equal(recorded().length, 3, "a purged letter is not delivered");

  step("at phone width nothing is wider than the screen");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(url);
  await page.locator('#functions tr[data-name="fixme"]').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await page.screenshot({ path: `${shots}/6-phone.png` });

  assert.deepEqual(pageErrors, [], "the page's script threw");
  console.log("walkthrough passed");
} finally {
  await browser.close();
}
