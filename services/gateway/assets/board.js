// The venue board (SPEC §8). Reads GET /presence/v1/venues/{venueId}/live, a
// Server-Sent Events stream, with fetch() so the API key travels in the
// X-Api-Key header (EventSource cannot send headers). Every event is a whole
// snapshot, so after a drop or a gateway restart the first event makes the
// board exact again: nothing is added up on this side.
"use strict";

const KEY_STORAGE = "presence.board.apikey";
const MAX_BACKOFF_MS = 15000;
// Heartbeats come every 15 s; a stream quiet for longer than this is dead.
const STALL_MS = 40000;
// Screen readers hear the totals at most this often (the latest ones, and only
// when they changed): a busy venue changes them every second.
const ANNOUNCE_EVERY_MS = 10000;

const venue = decodeURIComponent(location.pathname.split("/")[2] || "");
const $ = (id) => document.getElementById(id);

let apiKey = null;
let backoffMs = 1000;
let latest = null;
let clockOffsetMs = 0;
let controller = null;
// Set when the server says the venue is gone: no more reconnecting.
let stopped = false;
let announcedAt = 0;
let announceTimer = null;
let pendingAnnouncement = "";

function takeKey() {
  const params = new URLSearchParams(location.search);
  const fromAddress = params.get("apikey");
  if (fromAddress) {
    sessionStorage.setItem(KEY_STORAGE, fromAddress);
    params.delete("apikey");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }
  return sessionStorage.getItem(KEY_STORAGE);
}

function askForKey(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  apiKey = null;
  $("board").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = message || "";
  setConnection("Not connected", "");
  $("key-input").focus();
}

function setConnection(text, state) {
  const element = $("connection");
  if (element.textContent !== text) element.textContent = text;
  element.className = "connection " + state;
}

// Ends the board for good, saying why; the last numbers stay on screen.
function stop(message) {
  stopped = true;
  if (controller) controller.abort();
  setConnection("Stopped", "lost");
  $("problem").textContent = message;
  $("problem").hidden = false;
}

function reconnectLater(reason) {
  if (stopped) return;
  setConnection(reason + " Reconnecting in " + Math.round(backoffMs / 1000) + " s…", "lost");
  setTimeout(connect, backoffMs);
  backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
}

async function connect() {
  if (!apiKey) return;
  controller = new AbortController();
  let stall = setTimeout(() => controller.abort(), STALL_MS);
  const alive = () => {
    clearTimeout(stall);
    stall = setTimeout(() => controller.abort(), STALL_MS);
  };
  let response;
  try {
    setConnection("Connecting…", "");
    response = await fetch("/presence/v1/venues/" + encodeURIComponent(venue) + "/live", {
      headers: { "X-Api-Key": apiKey, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (error) {
    clearTimeout(stall);
    reconnectLater("Connection lost.");
    return;
  }
  if (response.status === 401) { clearTimeout(stall); askForKey("This API key is not known."); return; }
  if (response.status === 403) { clearTimeout(stall); askForKey("This API key may not be used for this venue."); return; }
  if (response.status === 404) {
    clearTimeout(stall);
    stop("No venue " + venue + " is known to the server: check the address.");
    return;
  }
  if (!response.ok || !response.body) {
    clearTimeout(stall);
    reconnectLater("The server answered " + response.status + ".");
    return;
  }
  backoffMs = 1000;
  setConnection("Live", "live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      alive();
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    // Aborted by the stall timer or the network: reconnect below.
  }
  clearTimeout(stall);
  reconnectLater("Connection lost.");
}

function handleEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") type = value;
    if (field === "data") data.push(value);
  }
  if (type === "board" && data.length) {
    latest = JSON.parse(data.join("\n"));
    clockOffsetMs = latest.serverTime - Date.now();
    render(latest);
    setConnection("Live", "live");
  } else if (type === "unavailable") {
    setConnection("Live, but the numbers cannot be read now; showing the last ones.", "lost");
  } else if (type === "unknown-venue") {
    stop("Venue " + venue + " is no longer known to the server. The numbers shown are the last ones " +
      "received; reload the page to try again.");
  }
}

function refused(counts) {
  return Object.values(counts.denials || {}).reduce((sum, n) => sum + n, 0);
}

function setText(id, text) {
  const element = $(id);
  if (element.textContent !== String(text)) element.textContent = String(text);
}

function el(tag, attributes, children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
  for (const child of children || []) element.append(child);
  return element;
}

function sparkline(perMinute, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = perMinute.length * 4;
  const height = 30;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const peak = Math.max(1, ...perMinute);
  perMinute.forEach((people, i) => {
    const bar = document.createElementNS(ns, "rect");
    const h = (people / peak) * (height - 1);
    bar.setAttribute("x", String(i * 4));
    bar.setAttribute("y", String(height - 1 - h));
    bar.setAttribute("width", "3");
    bar.setAttribute("height", String(h));
    svg.append(bar);
  });
  const base = document.createElementNS(ns, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(height - 0.5));
  base.setAttribute("y2", String(height - 0.5));
  svg.append(base);
  return svg;
}

function gateCard(gate) {
  const perMinute = gate.entriesPerMinute;
  const last30 = perMinute.reduce((sum, n) => sum + n, 0);
  const lastMinute = perMinute[perMinute.length - 1] || 0;
  const stat = (name, count, value) =>
    el("div", {}, [el("dt", {}, [name]), el("dd", { "data-count": count }, [String(value)])]);
  const stats = [
    stat("Entries", "entries", gate.entries),
    stat("Exits", "exits", gate.exits),
    stat("Net", "occupancy", gate.occupancy),
    stat("Refused", "refused", refused(gate)),
    stat("Forced offline", "forced", gate.forced),
  ];
  const refusals = el("ul", { class: "refusals", "aria-label": "Refusals by status" },
    Object.entries(gate.denials || {}).map(([status, n]) =>
      el("li", { "data-status": status }, [status + ": " + n])));
  const chartLabel = "Entries per minute over the last 30 minutes at " + (gate.name || "gate " + gate.gateId) +
    ": " + last30 + " in total, " + lastMinute + " this minute";
  return el("article", { class: "gate", "data-gate-id": String(gate.gateId), "aria-label": gate.name || "Gate " + gate.gateId }, [
    el("h3", {}, [gate.name || "Gate " + gate.gateId]),
    el("dl", {}, stats),
    refusals,
    el("figure", {}, [
      sparkline(perMinute, chartLabel),
      el("figcaption", {}, ["Entries per minute, last 30 min (" + lastMinute + " this minute)"]),
    ]),
  ]);
}

function age(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return seconds + " s ago";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min " + (seconds % 60) + " s ago";
  return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min ago";
}

function gateName(snapshot, gateId) {
  const gate = snapshot.gates.find((g) => g.gateId === gateId);
  return gate && gate.name ? gate.name : "gate " + gateId;
}

function render(snapshot) {
  setText("venue-name", snapshot.venueId);
  const totals = snapshot.totals;
  setText("total-occupancy", totals.occupancy);
  setText("total-entries", totals.entries);
  setText("total-exits", totals.exits);
  setText("total-refused", refused(totals));
  setText("total-forced", totals.forced);
  announce("In venue " + totals.occupancy + ". Entries " + totals.entries + ", exits " + totals.exits +
    ", refused " + refused(totals) + ", forced offline " + totals.forced + ".");
  setText("doors", snapshot.doorsOpen ? "Doors are open." : "Doors are closed (no event with scans is between its doors-open time and its end).");
  const silent = snapshot.scanners.filter((s) => s.silent);
  const warning = $("silent-warning");
  warning.hidden = silent.length === 0;
  const threshold = snapshot.silentAfterMs >= 60000 ?
    Math.round(snapshot.silentAfterMs / 6000) / 10 + " min" : Math.round(snapshot.silentAfterMs / 1000) + " s";
  const warningText = silent.length === 0 ? "" :
    "Silent scanners (no scan for over " + threshold + " while doors are open): " +
    silent.map((s) => "scanner " + s.deviceId + " at " + gateName(snapshot, s.gateId)).join(", ") + ".";
  setText("silent-warning", warningText);
  $("gates").replaceChildren(...snapshot.gates.map(gateCard));
  $("scanners").replaceChildren(...snapshot.scanners.map((s) => el("tr", {}, [
    el("td", {}, ["Scanner " + s.deviceId]),
    el("td", {}, [gateName(snapshot, s.gateId)]),
    el("td", { "data-last-scan": String(s.lastScanAt) }, [age(Date.now() + clockOffsetMs - s.lastScanAt)]),
    el("td", s.silent ? { class: "silent" } : {}, [s.silent ? "⚠ Silent" : "OK"]),
  ])));
  setText("updated-at", snapshot.updatedAt ? new Date(snapshot.updatedAt).toLocaleTimeString() : "none yet");
  $("key-form").hidden = true;
  $("board").hidden = false;
}

// The totals for screen readers (#summary, a polite live region): the latest
// ones, at most every ANNOUNCE_EVERY_MS, and nothing when they did not change.
function announce(text) {
  pendingAnnouncement = text;
  if (announceTimer) return;
  announceTimer = setTimeout(() => {
    announceTimer = null;
    if ($("summary").textContent === pendingAnnouncement) return;
    $("summary").textContent = pendingAnnouncement;
    announcedAt = Date.now();
  }, Math.max(0, announcedAt + ANNOUNCE_EVERY_MS - Date.now()));
}

function tickAges() {
  for (const cell of document.querySelectorAll("[data-last-scan]")) {
    const text = age(Date.now() + clockOffsetMs - Number(cell.getAttribute("data-last-scan")));
    if (cell.textContent !== text) cell.textContent = text;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setText("venue-name", venue);
  document.title = "Venue " + venue + " · Presence board";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    apiKey = key;
    $("key-form").hidden = true;
    connect();
  });
  setInterval(tickAges, 1000);
  apiKey = takeKey();
  if (apiKey) connect(); else askForKey("");
});
