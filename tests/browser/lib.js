// Shared helpers of the browser scenarios: Debian's headless Chromium through
// playwright-core (no bundled browser), pages of the demo page, bounded waits, and
// the control service's HTTP API. Logs go to stderr; stdout carries only the report.
"use strict";

const fs = require("fs");
const { chromium } = require("playwright-core");

function log(...args) {
  const t = ((Date.now() - START) / 1000).toFixed(2).padStart(6);
  console.error(`[${t}s]`, ...args);
}
const START = Date.now();

/** Chromium's executable: $CHROMIUM, else Debian's. */
function chromiumPath() {
  const candidates = [process.env.CHROMIUM, "/usr/lib/chromium/chromium", "/usr/bin/chromium"].filter(Boolean);
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return c;
    } catch (_) {
      // next
    }
  }
  throw new Error(`no Chromium found (tried ${candidates.join(", ")}); set $CHROMIUM`);
}

/** The flags of shared/reference/real-peers.md: fake devices, fake UI, loopback ICE. */
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
  // Pages in background tabs must keep their timers and media running.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

async function launch() {
  const executablePath = chromiumPath();
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  log(`chromium ${browser.version()} (${executablePath})`);
  return browser;
}

/** A demo page in its own browser context (its own cookies, devices, peer connection). */
async function openPage(browser, baseUrl, query, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const console_ = [];
  page.on("console", (m) => {
    const line = `${m.type()}: ${m.text()}`;
    console_.push(line);
    if (m.type() === "error" || m.type() === "warning") log(`${label} console ${line}`);
  });
  page.on("pageerror", (e) => log(`${label} page error: ${e.message}`));
  const url = `${baseUrl}/?${new URLSearchParams(query)}`;
  await page.goto(url, { timeout: 15000 });
  return { label, page, context, console: console_, closed: false };
}

async function closePage(p) {
  if (p.closed) return;
  p.closed = true;
  await p.context.close().catch(() => {});
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `probe()` until `check(value)` is true; throws after `timeoutMs` with the last
 * value in the message. Returns {value, ms}.
 */
async function waitUntil(what, probe, check, timeoutMs, intervalMs = 200) {
  const t0 = Date.now();
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      lastError = null;
      if (check(last)) return { value: last, ms: Date.now() - t0 };
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - t0 > timeoutMs) {
      const detail = lastError ? `error: ${lastError.message}` : `last: ${JSON.stringify(last)}`.slice(0, 1500);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})`);
    }
    await sleep(intervalMs);
  }
}

const state = (p) => p.page.evaluate(() => window.viaduct.state());
const stats = (p) => p.page.evaluate(() => window.viaduct.stats());

/** Waits until the page has joined; returns its state. */
async function waitJoined(p, timeoutMs = 15000) {
  const { value, ms } = await waitUntil(
    `${p.label} to join`,
    () => state(p),
    (s) => s.joined || s.lastError,
    timeoutMs,
  );
  if (!value.joined) throw new Error(`${p.label} could not join: ${JSON.stringify(value.lastError)}`);
  p.endpoint = value.endpoint;
  p.role = value.role;
  log(`${p.label} joined as ${value.endpoint} (${value.role}) in ${ms} ms`);
  return { state: value, ms };
}

/** True when `s` (a stats() summary) has decoded video and audio packets from `endpoint`. */
function hasMediaFrom(s, endpoint) {
  const r = s.remote[endpoint];
  return !!r && r.video.framesDecoded > 0 && r.audio.packetsReceived > 0;
}

/**
 * Waits until every page has media from every other page; returns one record per
 * (receiver, sender) pair and the wait time.
 */
async function waitMesh(pages, timeoutMs) {
  const t0 = Date.now();
  const probe = async () => Promise.all(pages.map((p) => stats(p)));
  const full = (all) => pages.every((p, i) => pages.every((q) => q === p || hasMediaFrom(all[i], q.endpoint)));
  const { value } = await waitUntil(
    `media between ${pages.map((p) => p.label).join(", ")}`,
    probe,
    full,
    timeoutMs,
    300,
  );
  return { ms: Date.now() - t0, pairs: pairRecords(pages, value), stats: value };
}

function pairRecords(pages, all) {
  const pairs = [];
  pages.forEach((p, i) => {
    for (const q of pages) {
      if (q === p) continue;
      const r = all[i].remote[q.endpoint];
      pairs.push({
        receiver: p.label,
        sender: q.label,
        framesDecoded: r ? r.video.framesDecoded : 0,
        videoPackets: r ? r.video.packetsReceived : 0,
        audioPackets: r ? r.audio.packetsReceived : 0,
        frameWidth: r ? r.video.frameWidth : 0,
        frameHeight: r ? r.video.frameHeight : 0,
        videoCodec: r ? r.video.codec : null,
        audioCodec: r ? r.audio.codec : null,
      });
    }
  });
  return pairs;
}

async function getJson(url, timeoutMs = 5000) {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch (_) {
    body = text;
  }
  return { status: r.status, body };
}

/** `endpoints` of the control service's /colibri/stats. */
async function endpointCount(baseUrl) {
  const r = await getJson(`${baseUrl}/colibri/stats`);
  if (r.status !== 200) throw new Error(`/colibri/stats: HTTP ${r.status}`);
  return r.body.endpoints;
}

/** Parses `URL [--flag value]...` arguments. */
function parseArgs(argv, defaults) {
  const out = { ...defaults, _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const key = a.slice(2);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) out[key] = true;
      else out[key] = argv[++i];
    } else {
      out._.push(a);
    }
  }
  return out;
}

/**
 * Runs `body(ctx)` with an overall deadline; prints the report as one JSON line on
 * stdout and exits 0 when it passed, 1 when a check failed, 2 on an error or timeout.
 */
async function runScenario(name, overallMs, body) {
  const report = { scenario: name, ok: false, failures: [], timings_ms: {} };
  const ctx = { report, browser: null, cleanups: [] };
  let code = 2;
  const timer = setTimeout(() => {
    report.failures.push(`overall timeout of ${overallMs} ms`);
    finish(2);
  }, overallMs);
  let finished = false;
  async function finish(c) {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    report.elapsed_ms = Date.now() - START;
    report.ok = c === 0;
    process.stdout.write(`${JSON.stringify(report)}\n`);
    const closing = (async () => {
      for (const f of ctx.cleanups.reverse()) await f().catch(() => {});
      if (ctx.browser) await ctx.browser.close().catch(() => {});
    })();
    await Promise.race([closing, sleep(5000)]);
    process.exit(c);
  }
  try {
    await body(ctx);
    code = report.failures.length === 0 ? 0 : 1;
  } catch (e) {
    report.failures.push(`error: ${e.message}`);
    log(e.stack || e.message);
    code = 2;
  }
  await finish(code);
}

/** Records a failed check (the scenario carries on). */
function check(report, cond, message) {
  if (!cond) {
    report.failures.push(message);
    log(`FAIL ${message}`);
  }
  return !!cond;
}

module.exports = {
  log,
  sleep,
  launch,
  openPage,
  closePage,
  waitUntil,
  waitJoined,
  waitMesh,
  pairRecords,
  hasMediaFrom,
  state,
  stats,
  getJson,
  endpointCount,
  parseArgs,
  runScenario,
  check,
};
