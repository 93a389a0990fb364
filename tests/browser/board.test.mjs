// The venue board in a real browser (Debian's chromium, driven by
// playwright-core; axe-core for the accessibility check). Run by
// tests/tests/board.rs against a running server, in each mode, with:
//   PRESENCE_BROWSER_DEPS  a directory whose node_modules hold playwright-core
//                          and axe-core (scripts/test.sh installs them)
//   BOARD_FIXTURE          JSON: boardUrl, apiBase, apiKey, scans (made while
//                          the board is open), late (made while it is cut
//                          off), expected and expectedAfterDrop (totals),
//                          silentGate (a gate whose scanner went quiet),
//                          screenshotDir
// Exits 1 with every failed check listed.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const deps = process.env.PRESENCE_BROWSER_DEPS;
if (!deps) {
  console.error("PRESENCE_BROWSER_DEPS is not set (scripts/test.sh installs the browser test's packages)");
  process.exit(2);
}
const require = createRequire(path.join(deps, "package.json"));
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const fixture = JSON.parse(process.env.BOARD_FIXTURE);
const origin = new URL(fixture.boardUrl).origin;
const failures = [];
const check = (ok, what) => {
  console.log((ok ? "ok    " : "FAIL  ") + what);
  if (!ok) failures.push(what);
};

async function scan({ path: apiPath, body }) {
  const response = await fetch(fixture.apiBase + apiPath, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Api-Key": fixture.apiKey },
    body: JSON.stringify(body),
  });
  const reply = await response.json();
  return reply.result.status;
}

const totals = (page) => page.evaluate(() => ({
  entries: Number(document.getElementById("total-entries").textContent),
  exits: Number(document.getElementById("total-exits").textContent),
  occupancy: Number(document.getElementById("total-occupancy").textContent),
  refused: Number(document.getElementById("total-refused").textContent),
}));

async function waitForTotals(page, expected, within) {
  const started = Date.now();
  try {
    await page.waitForFunction((want) => {
      const n = (id) => Number(document.getElementById(id).textContent);
      return n("total-entries") === want.entries && n("total-exits") === want.exits &&
        n("total-occupancy") === want.occupancy && n("total-refused") === want.refused;
    }, expected, { timeout: within, polling: 50 });
    return Date.now() - started;
  } catch {
    return null;
  }
}

const browser = await chromium.launch({
  executablePath: process.env.PRESENCE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  const foreignRequests = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.origin !== origin && url.protocol !== "data:") foreignRequests.push(request.url());
  });

  await page.goto(fixture.boardUrl);
  await page.waitForSelector("#board:not([hidden])", { timeout: 20000 });
  check(!(await page.evaluate(() => location.search)).includes("apikey"), "the key is removed from the address bar");
  check((await waitForTotals(page, fixture.initial, 10000)) !== null,
    "the board opens with the counts so far " + JSON.stringify(fixture.initial) + ", got " + JSON.stringify(await totals(page)));

  const statuses = [];
  for (const request of fixture.scans) statuses.push(await scan(request));
  console.log("scans answered " + statuses.join(" "));
  const updatedIn = await waitForTotals(page, fixture.expected, 20000);
  console.log("board updated " + (updatedIn === null ? "never" : updatedIn + " ms") + " after the last answer");
  check(updatedIn !== null,
    "the numbers change to " + JSON.stringify(fixture.expected) + ", got " + JSON.stringify(await totals(page)));
  check(!(await page.isVisible("#key-form")), "the key form is gone once the board shows");
  const chart = await page.evaluate(() => document.querySelectorAll(".gate svg.spark rect").length);
  check(chart > 0, "each gate has its entries-per-minute chart");

  await page.waitForSelector("#silent-warning:not([hidden])", { timeout: 30000 }).catch(() => {});
  const warning = await page.evaluate(() => {
    const element = document.getElementById("silent-warning");
    return element.hidden ? "" : element.textContent;
  });
  check(warning.includes(fixture.silentGate), "the silent-scanner warning names " + fixture.silentGate + ": '" + warning + "'");

  // A dropped stream: cut it, scan meanwhile, and the board catches up
  // exactly (whole snapshots: nothing lost, nothing counted twice).
  await page.evaluate(() => controller.abort());
  for (const request of fixture.late) await scan(request);
  const caughtUp = await waitForTotals(page, fixture.expectedAfterDrop, 30000);
  check(caughtUp !== null, "after a dropped stream the board catches up to " +
    JSON.stringify(fixture.expectedAfterDrop) + ", got " + JSON.stringify(await totals(page)));
  await page.waitForTimeout(2500);
  const settled = await totals(page);
  check(JSON.stringify(settled) === JSON.stringify(fixture.expectedAfterDrop),
    "and stays there (no double count): " + JSON.stringify(settled));

  await page.screenshot({ path: path.join(fixture.screenshotDir, "board.png"), fullPage: true });

  await page.setViewportSize({ width: 360, height: 780 });
  await page.waitForTimeout(300);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 360, "the page fits 360 px (scroll width " + width + ")");
  await page.screenshot({ path: path.join(fixture.screenshotDir, "board-phone.png"), fullPage: true });

  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, "axe: no serious or critical violations " + JSON.stringify(serious));
  if (violations.length) console.log("axe, minor: " + JSON.stringify(violations));

  // Keyboard: a page opened without a key shows the key form, focused.
  const keyless = await context.newPage();
  keyless.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  await keyless.goto(fixture.boardUrl.replace(/\?.*$/, ""));
  await keyless.waitForSelector("#key-form:not([hidden])", { timeout: 10000 });
  check(await keyless.evaluate(() => document.activeElement && document.activeElement.id === "key-input"),
    "without a key the page asks for one, with the focus in the field");
  await keyless.keyboard.type(fixture.apiKey);
  await keyless.keyboard.press("Enter");
  await keyless.waitForSelector("#board:not([hidden])", { timeout: 20000 }).catch(() => {});
  check(await keyless.evaluate(() => !document.getElementById("board").hidden), "a key typed and entered opens the board");

  check(consoleErrors.length === 0, "no console errors " + JSON.stringify(consoleErrors));
  check(foreignRequests.length === 0, "no requests to other hosts " + JSON.stringify(foreignRequests));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.length + " check(s) failed");
  process.exit(1);
}
console.log("all board checks passed");
