#!/usr/bin/env node
// Interop: a Chromium page and an aiortc client (tests/aiortc/client.py) join one room
// through Viaduct; each must receive the other's video and audio.
//
// Usage: node aiortc-scenario.js http://127.0.0.1:PORT [--python PATH] [--room NAME]
// The Python defaults to $VIADUCT_PYTHON, else tests/aiortc/.venv/bin/python.
// Prints one JSON report line on stdout; exit 0 = pass, 1 = a check failed, 2 = error.
"use strict";

const path = require("path");
const { spawn } = require("child_process");
const L = require("./lib");

const args = L.parseArgs(process.argv.slice(2), { "timeout-ms": "80000" });
const base = (args._[0] || "").replace(/\/$/, "");
if (!base) {
  console.error("usage: node aiortc-scenario.js CONTROL_URL [--python PATH] [--room NAME]");
  process.exit(2);
}
const python = args.python || process.env.VIADUCT_PYTHON || path.join(__dirname, "..", "aiortc", ".venv", "bin", "python");
const clientPy = path.join(__dirname, "..", "aiortc", "client.py");
const room = args.room || `interop-${process.pid}-${Date.now() % 100000}`;

/** Starts the aiortc client; resolves with {code, report, stderrTail} when it exits. */
function startAiortc(seconds) {
  const child = spawn(python, [clientPy, "--url", base, "--room", room, "--name", "Pyro", "--seconds", String(seconds), "--expect", "1", "--hold", "6"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const err = [];
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => {
    for (const line of String(d).split("\n")) {
      if (!line) continue;
      err.push(line);
      console.error(`  ${line}`);
    }
  });
  const done = new Promise((resolve) => {
    child.on("error", (e) => resolve({ code: -1, report: null, stderrTail: [String(e)] }));
    child.on("exit", (code, signal) => {
      const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
      let report = null;
      try {
        report = line ? JSON.parse(line) : null;
      } catch (_) {
        // reported as missing
      }
      resolve({ code: code === null ? signal : code, report, stderrTail: err.slice(-15) });
    });
  });
  return { child, done };
}

L.runScenario("aiortc+chromium", Number(args["timeout-ms"]), async (ctx) => {
  const { report } = ctx;
  const T = report.timings_ms;
  report.room = room;
  const config = await L.getJson(`${base}/api/config`);
  if (!config.body || config.body.auth !== "dev") throw new Error(`the control service must run with --auth dev: ${JSON.stringify(config)}`);

  ctx.browser = await L.launch();
  report.chromium = ctx.browser.version();
  const page = await L.openPage(ctx.browser, base, { room, name: "Chloe", moderator: "1", autojoin: "1", lowres: "1" }, "Chloe");
  ctx.cleanups.push(() => L.closePage(page));
  T.join_chromium = (await L.waitJoined(page)).ms;

  const py = startAiortc(40);
  ctx.cleanups.push(async () => {
    if (py.child.exitCode === null) py.child.kill("SIGTERM");
  });

  // The page sees the aiortc participant, then its media.
  const seen = await L.waitUntil("the page to see the aiortc participant", () => L.state(page),
    (s) => s.participants.some((p) => p.name === "Pyro"), 20000);
  const pyEndpoint = seen.value.participants.find((p) => p.name === "Pyro").endpoint;
  report.aiortc_endpoint = pyEndpoint;
  const t0 = Date.now();
  try {
    const m = await L.waitUntil("the page to decode the aiortc client's media", () => L.stats(page),
      (s) => L.hasMediaFrom(s, pyEndpoint), 30000, 300);
    T.chromium_media = Date.now() - t0;
    await L.sleep(1000);
    const s = await L.stats(page);
    const r = s.remote[pyEndpoint];
    report.chromium_from_aiortc = {
      framesDecoded: r.video.framesDecoded,
      videoPackets: r.video.packetsReceived,
      audioPackets: r.audio.packetsReceived,
      frameWidth: r.video.frameWidth,
      frameHeight: r.video.frameHeight,
      videoCodec: r.video.codec,
      audioCodec: r.audio.codec,
    };
    report.chromium_transport = { ...s.transport, candidatePair: s.candidatePair };
    void m;
  } catch (e) {
    report.chromium_from_aiortc = null;
    L.check(report, false, e.message);
  }

  // The aiortc client stops on its own once it has had media for a while.
  const res = await Promise.race([py.done, L.sleep(45000).then(() => null)]);
  if (!res) {
    py.child.kill("SIGTERM");
    throw new Error("the aiortc client did not finish in time");
  }
  report.aiortc_exit = res.code;
  report.aiortc = res.report;
  if (!res.report) throw new Error(`the aiortc client printed no report (exit ${res.code}): ${res.stderrTail.join(" | ")}`);
  const fromPage = res.report.remote && res.report.remote[page.endpoint];
  report.aiortc_from_chromium = fromPage || null;
  L.check(report, res.code === 0, `aiortc client exit ${res.code}: ${JSON.stringify(res.report.errors || [])}`);
  L.check(report, fromPage && fromPage.video_frames > 0 && fromPage.audio_frames > 0, `aiortc got no media from the page: ${JSON.stringify(res.report.remote)}`);
  L.check(report, report.chromium_from_aiortc && report.chromium_from_aiortc.framesDecoded > 0 && report.chromium_from_aiortc.audioPackets > 0, "the page got no media from aiortc");

  // The page sees the aiortc client leave.
  try {
    const r = await L.waitUntil("the page to see the aiortc client leave", () => L.state(page),
      (s) => s.departures.some((d) => d.endpoint === pyEndpoint), 10000);
    report.aiortc_left_reason = r.value.departures.find((d) => d.endpoint === pyEndpoint).reason;
  } catch (e) {
    L.check(report, false, e.message);
  }
});
