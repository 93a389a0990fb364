// The venue board in a real browser (Debian's chromium, driven by
// playwright-core; axe-core for the accessibility checks). Run by
// tests/tests/board.rs against a running server, in each mode, with:
//   PRESENCE_BROWSER_DEPS  a directory whose node_modules hold playwright-core
//                          and axe-core (scripts/test.sh installs them)
//   BOARD_FIXTURE          JSON: boardUrl (with ?apikey=), apiBases (the
//                          gateways scans may go to, in turn), apiKey,
//                          activeGate and silentGate (names), silentAfterMs,
//                          screenshotDir, and the steps: requests (scans,
//                          samples, forced, keepAlive, late; each {path, body,
//                          status}) with what the board shows after them
//                          (initial, afterScans, afterSamples, afterForced,
//                          afterKeepAlive, afterDrop, afterRestart; each
//                          {totals, gates: {name: counts}})
// What only the test runner can do (restart the server) is asked for with a
// line `@@ {"do": …}` on stdout; the answer comes as one line on stdin.
// Exits 1 with every failed check listed.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import readline from "node:readline";
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
// SPEC §8: a decision shows on the board within this.
const UPDATE_WITHIN_MS = 2000;
// The board announces the totals to screen readers at most this often.
const ANNOUNCE_EVERY_MS = 10000;
const failures = [];
const check = (ok, what) => {
  console.log((ok ? "ok    " : "FAIL  ") + what);
  if (!ok) failures.push(what);
};
const show = (value) => JSON.stringify(value);
// Objects compared whatever the order of their keys.
const canonical = (value) => Array.isArray(value) ? value.map(canonical) :
  value && typeof value === "object" ?
    Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])])) : value;
const same = (a, b) => show(canonical(a)) === show(canonical(b));

const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(request) {
  console.log("@@ " + show(request));
  const { value, done } = await answers.next();
  if (done) throw new Error("the test runner stopped answering");
  return JSON.parse(value);
}

// Sends a request of the fixture (to the gateways in turn, with the
// venue-limited key); returns when it was answered (Date.now()).
let turn = 0;
async function send(request) {
  const base = fixture.apiBases[turn++ % fixture.apiBases.length];
  const response = await fetch(base + request.path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Api-Key": fixture.apiKey },
    body: JSON.stringify(request.body),
  });
  const reply = await response.json();
  const answeredAt = Date.now();
  const status = reply.result && reply.result.status;
  if (status !== request.status) {
    check(false, request.path + " answered " + status + ", not " + request.status + ": " + show(reply));
  }
  return answeredAt;
}

// What the page shows: its totals and, by gate name, each gate's counts and
// refusals by status.
const readBoard = (page) => page.evaluate(() => {
  const number = (id) => Number(document.getElementById(id).textContent);
  const gates = {};
  for (const card of document.querySelectorAll("article.gate")) {
    const counts = { denials: {} };
    for (const cell of card.querySelectorAll("dd[data-count]")) counts[cell.dataset.count] = Number(cell.textContent);
    for (const item of card.querySelectorAll("li[data-status]")) {
      counts.denials[item.dataset.status] = Number(item.textContent.split(": ").pop());
    }
    gates[card.getAttribute("aria-label")] = counts;
  }
  return {
    totals: {
      entries: number("total-entries"), exits: number("total-exits"), occupancy: number("total-occupancy"),
      refused: number("total-refused"), forced: number("total-forced"),
    },
    gates,
  };
});

// Waits until the page's totals are `expected.totals`; whether they came.
async function waitForTotals(page, expected, within) {
  try {
    await page.waitForFunction((want) => {
      const number = (id) => Number(document.getElementById(id).textContent);
      return number("total-entries") === want.entries && number("total-exits") === want.exits &&
        number("total-occupancy") === want.occupancy && number("total-refused") === want.refused &&
        number("total-forced") === want.forced;
    }, expected.totals, { timeout: within, polling: 50 });
    return true;
  } catch {
    return false;
  }
}

// Waits for `expected` and checks every number of it: totals and gates.
async function expectBoard(page, expected, within, what) {
  await waitForTotals(page, expected, within);
  const shown = await readBoard(page);
  check(same(shown, expected), what + ": " + show(expected) + (same(shown, expected) ? "" : ", got " + show(shown)));
}

const browser = await chromium.launch({
  executablePath: process.env.PRESENCE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const consoleErrors = [];
const foreignRequests = [];
const liveRequests = [];
// While the server restarts, the board's failed reconnects are expected.
let outage = false;
function watch(page, name) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (outage && /net::ERR_|Failed to load resource/.test(message.text())) return;
    consoleErrors.push(name + ": " + message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(name + ": " + String(error)));
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.origin !== origin && url.protocol !== "data:") foreignRequests.push(name + ": " + request.url());
    if (url.pathname.endsWith("/live")) liveRequests.push(request);
  });
}

async function axe(page, what) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, "axe, " + what + ": no serious or critical violations " + show(serious));
  if (violations.length) console.log("axe, " + what + ", minor: " + show(violations));
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Every change of the totals, the announcements and the connection state,
  // with its time (Date.now(): the same clock as this script's).
  await context.addInitScript(() => {
    window.__seen = { entries: [], summary: [], connection: [] };
    document.addEventListener("DOMContentLoaded", () => {
      for (const [id, list] of [["total-entries", "entries"], ["summary", "summary"], ["connection", "connection"]]) {
        const element = document.getElementById(id);
        new MutationObserver(() => window.__seen[list].push({ text: element.textContent, at: Date.now() }))
          .observe(element, { childList: true, characterData: true, subtree: true });
      }
    });
  });
  const page = await context.newPage();
  watch(page, "board");

  await page.goto(fixture.boardUrl);
  await page.waitForSelector("#board:not([hidden])", { timeout: 20000 });
  check(!(await page.evaluate(() => location.search)).includes("apikey"), "the key is removed from the address bar");
  await expectBoard(page, fixture.initial, 10000, "the board opens with the counts so far");

  for (const request of fixture.scans) await send(request);
  await expectBoard(page, fixture.afterScans, 20000, "scans change the totals, each gate's numbers and refusals by status");
  check(!(await page.isVisible("#key-form")), "the key form is gone once the board shows");

  // SPEC §8: a decision shows within 2 s. One scan at a time, from its
  // answer to the moment the page's entries changed, at random points of the
  // server's read cycle.
  const delays = [];
  let lastEntryAt = 0;
  for (const request of fixture.samples) {
    const want = String(Number(await page.textContent("#total-entries")) + 1);
    lastEntryAt = await send(request);
    const shown = await page.waitForFunction((w) => {
      const change = window.__seen.entries.find((c) => c.text === w);
      return change && change.at;
    }, want, { timeout: 20000, polling: 50 }).then((handle) => handle.jsonValue()).catch(() => null);
    delays.push(shown === null ? null : shown - lastEntryAt);
    await page.waitForTimeout(Math.round(Math.random() * 1000));
  }
  console.log("board delays after a decision's answer (ms): " + delays.join(" "));
  check(delays.every((delay) => delay !== null && delay <= UPDATE_WITHIN_MS),
    "each decision shows within " + UPDATE_WITHIN_MS + " ms of its answer: " + show(delays));
  await expectBoard(page, fixture.afterSamples, 10000, "the sampled entries are all counted");

  // The active gate's chart: its bars are the snapshot's entries per minute
  // (the tallest full height), they add up to the gate's entries (all made
  // within 30 minutes), and the minute of the latest entry has a bar.
  const chart = await page.evaluate((name) => {
    const gate = latest.gates.find((g) => g.name === name);
    const svg = document.querySelector(`article.gate[aria-label="${name}"] svg.spark`);
    return {
      perMinute: gate.entriesPerMinute, firstMinute: latest.firstMinute, label: svg.getAttribute("aria-label"),
      heights: [...svg.querySelectorAll("rect")].map((bar) => Number(bar.getAttribute("height"))),
    };
  }, fixture.activeGate);
  const peak = Math.max(...chart.perMinute);
  const fullHeight = Math.max(...chart.heights);
  check(chart.heights.length === 30 && chart.perMinute.length === 30 && fullHeight > 0 &&
    chart.heights.every((height, i) => Math.abs(height - chart.perMinute[i] / peak * fullHeight) < 0.01),
    "the chart's bars are the entries per minute " + show(chart.perMinute) + ": " + show(chart.heights));
  const entriesOfGate = fixture.afterSamples.gates[fixture.activeGate].entries;
  check(chart.perMinute.reduce((sum, n) => sum + n, 0) === entriesOfGate && chart.label.includes(entriesOfGate + " in total"),
    "the chart counts the gate's " + entriesOfGate + " entries: " + chart.label);
  const sinceFirst = lastEntryAt - chart.firstMinute;
  const minute = Math.floor(sinceFirst / 60000);
  check(chart.perMinute[minute] > 0 || (sinceFirst % 60000 < 500 && chart.perMinute[minute - 1] > 0),
    "the bar of the latest entry's minute (" + minute + ") shows it");

  // A forced offline passage: counted as an entry and as forced, at its gate.
  await send(fixture.forced);
  await expectBoard(page, fixture.afterForced, 20000, "a forced offline passage shows in the totals and at its gate");

  // The quiet scanner is flagged; once the active gates scan again, theirs are not.
  await page.waitForSelector("#silent-warning:not([hidden])", { timeout: fixture.silentAfterMs + 30000 }).catch(() => {});
  for (const request of fixture.keepAlive) await send(request);
  await expectBoard(page, fixture.afterKeepAlive, 20000, "the active gates' scans are counted");
  const scanners = await page.evaluate(() => [...document.querySelectorAll("#scanners tr")]
    .map((row) => ({ gate: row.cells[1].textContent, state: row.cells[3].textContent })));
  const stateAt = (gate) => scanners.filter((s) => s.gate === gate).map((s) => s.state);
  check(same(stateAt(fixture.silentGate), ["⚠ Silent"]), "the silent gate's scanner is flagged: " + show(scanners));
  check(same(stateAt(fixture.activeGate), ["OK"]), "the active gate's scanner is not: " + show(scanners));
  const warning = await page.evaluate(() => {
    const element = document.getElementById("silent-warning");
    return element.hidden ? "" : element.textContent;
  });
  check(warning.includes(fixture.silentGate) && !warning.includes(fixture.activeGate),
    "the warning names " + fixture.silentGate + " and not " + fixture.activeGate + ": '" + warning + "'");

  // A dropped stream: cut it, scan meanwhile, and the board catches up
  // exactly (whole snapshots: nothing lost, nothing counted twice).
  await page.evaluate(() => controller.abort());
  for (const request of fixture.late) await send(request);
  await expectBoard(page, fixture.afterDrop, 30000, "after a dropped stream the board catches up");

  // A restarted server: the page reconnects by itself and shows the scans
  // made while it was down, once.
  outage = true;
  const connectionBefore = await page.evaluate(() => window.__seen.connection.length);
  await ask({ do: "restart" });
  await expectBoard(page, fixture.afterRestart, 60000, "after a server restart the board shows the scans made meanwhile");
  outage = false;
  const connection = await page.evaluate((from) => window.__seen.connection.slice(from).map((c) => c.text), connectionBefore);
  check(connection.some((text) => text.includes("Reconnecting")) && connection[connection.length - 1] === "Live",
    "the page lost the server and reconnected by itself: " + show(connection));
  await page.waitForTimeout(2500);
  const settled = await readBoard(page);
  check(same(settled, fixture.afterRestart), "and stays there (no double count): " + show(settled));

  // The key travels in a header, never in an address.
  const keyHeaders = await Promise.all(liveRequests.map((request) => request.allHeaders()));
  check(liveRequests.length >= 3 && keyHeaders.every((headers) => headers["x-api-key"] === fixture.apiKey) &&
    liveRequests.every((request) => !request.url().includes(fixture.apiKey) && !request.url().includes("apikey")),
    "each of the " + liveRequests.length + " live requests sends the key in X-Api-Key, not in its address");

  // Screen readers: the totals are announced (politely, whole) only when they
  // changed, at most every 10 s, and the latest ones come.
  const finalTotals = fixture.afterRestart.totals;
  const finalSummary = "In venue " + finalTotals.occupancy + ". Entries " + finalTotals.entries + ", exits " +
    finalTotals.exits + ", refused " + finalTotals.refused + ", forced offline " + finalTotals.forced + ".";
  const summarized = await page.waitForFunction((want) => document.getElementById("summary").textContent === want,
    finalSummary, { timeout: ANNOUNCE_EVERY_MS + 5000, polling: 100 }).then(() => true).catch(() => false);
  const announcements = await page.evaluate(() => window.__seen.summary);
  const region = await page.evaluate(() => {
    const summary = document.getElementById("summary");
    return [summary.getAttribute("aria-live"), summary.getAttribute("aria-atomic"),
      document.querySelectorAll(".totals [aria-live], .totals[aria-live]").length];
  });
  check(summarized && same(region, ["polite", "true", 0]) && announcements.length > 0 &&
    announcements.every((a, i) => i === 0 || (a.text !== announcements[i - 1].text &&
      a.at - announcements[i - 1].at >= ANNOUNCE_EVERY_MS - 100)),
    "the totals are announced politely, on change, at most every " + ANNOUNCE_EVERY_MS + " ms: " +
    show(announcements.map((a) => a.text)) + " " + show(region));

  await page.screenshot({ path: path.join(fixture.screenshotDir, "board.png"), fullPage: true });
  await axe(page, "the board");

  await page.setViewportSize({ width: 1920, height: 1080 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(fixture.screenshotDir, "board-wall.png"), fullPage: true });
  await axe(page, "the board on a 1920x1080 wall screen");

  await page.setViewportSize({ width: 360, height: 780 });
  await page.waitForTimeout(300);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 360, "the page fits 360 px (scroll width " + width + ")");
  await page.screenshot({ path: path.join(fixture.screenshotDir, "board-phone.png"), fullPage: true });
  await axe(page, "the board on a 360 px phone");

  // Keyboard: a page opened without a key shows the key form, focused.
  const keyless = await context.newPage();
  watch(keyless, "keyless");
  await keyless.goto(fixture.boardUrl.replace(/\?.*$/, ""));
  await keyless.waitForSelector("#key-form:not([hidden])", { timeout: 10000 });
  check(await keyless.evaluate(() => document.activeElement && document.activeElement.id === "key-input"),
    "without a key the page asks for one, with the focus in the field");
  await axe(keyless, "the key form");
  await keyless.keyboard.type(fixture.apiKey);
  await keyless.keyboard.press("Enter");
  await keyless.waitForSelector("#board:not([hidden])", { timeout: 20000 }).catch(() => {});
  check(await keyless.evaluate(() => !document.getElementById("board").hidden), "a key typed and entered opens the board");

  // A venue the server stops knowing mid-stream: the page says so, keeps the
  // last numbers and stops asking (the feed itself is replayed here).
  const snapshot = await page.evaluate(() => JSON.stringify(latest));
  const gone = await context.newPage();
  watch(gone, "venue gone");
  let goneRequests = 0;
  await gone.route((url) => url.pathname.endsWith("/live"), (route) => {
    goneRequests += 1;
    return route.fulfill({
      status: 200,
      headers: { "Content-Type": "text/event-stream" },
      body: "event: board\nid: 1\ndata: " + snapshot + "\n\nevent: unknown-venue\ndata: {}\n\n",
    });
  });
  await gone.goto(fixture.boardUrl);
  await gone.waitForSelector("#problem:not([hidden])", { timeout: 10000 }).catch(() => {});
  await gone.waitForTimeout(3000);
  const goneState = await gone.evaluate(() => ({
    problem: document.getElementById("problem").textContent,
    connection: document.getElementById("connection").textContent,
    entries: document.getElementById("total-entries").textContent,
  }));
  check(goneState.problem.includes("no longer known") && goneState.connection === "Stopped" &&
    goneState.entries === String(finalTotals.entries) && goneRequests === 1,
    "an unknown-venue event stops the board with a clear message, the last numbers kept: " +
    show(goneState) + ", " + goneRequests + " live request(s)");

  check(consoleErrors.length === 0, "no console or page errors " + show(consoleErrors));
  check(foreignRequests.length === 0, "no requests to other hosts " + show(foreignRequests));
} catch (error) {
  check(false, "the browser test stopped: " + (error && error.stack ? error.stack : error));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.length + " check(s) failed");
  process.exit(1);
}
console.log("all board checks passed");
process.exit(0);
