#!/usr/bin/env node
// The acceptance scenario of the demo page, with real headless Chromium pages:
//
//   1. Alice (moderator) and Bob join a room through the page (dev tokens); each
//      decodes the other's video and receives the other's audio.
//   2. Carol joins; all three receive each other's media.
//   3. Alice mutes Bob's microphone: Bob is told (`muted`), Carol sees him muted; Bob
//      unmutes himself and Carol sees that too.
//   4. Alice sends a chat message: everyone gets it; Dave joins late and gets it in
//      the history of his `joined`.
//   5. Alice kicks Dave: Dave sees `kicked`, the others `participant-left` (kicked).
//   6. Carol's page closes: /colibri/stats `endpoints` drops by one, and Alice and Bob
//      see Carol leave.
//
// Usage: node scenario.js http://127.0.0.1:PORT [--room NAME] [--timeout-ms N]
// Prints one JSON report line on stdout; exit 0 = pass, 1 = a check failed, 2 = error.
// Run it in a network namespace with only `lo` (run-in-netns.sh).
"use strict";

const L = require("./lib");

const args = L.parseArgs(process.argv.slice(2), { "timeout-ms": "85000" });
const base = (args._[0] || "").replace(/\/$/, "");
if (!base) {
  console.error("usage: node scenario.js CONTROL_URL [--room NAME] [--timeout-ms N]");
  process.exit(2);
}
const room = args.room || `acceptance-${process.pid}-${Date.now() % 100000}`;
const MEDIA_MS = 25000;
const SIGNAL_MS = 10000;

L.runScenario("chromium", Number(args["timeout-ms"]), async (ctx) => {
  const { report } = ctx;
  const T = report.timings_ms;
  report.room = room;

  const config = await L.getJson(`${base}/api/config`);
  report.auth = config.body && config.body.auth;
  if (report.auth !== "dev") throw new Error(`the control service must run with --auth dev (/api/config: ${JSON.stringify(config)})`);
  report.endpoints = { initial: await L.endpointCount(base) };

  ctx.browser = await L.launch();
  report.chromium = ctx.browser.version();
  const open = async (name, moderator) => {
    const p = await L.openPage(ctx.browser, base, { room, name, moderator: moderator ? "1" : "0", autojoin: "1", lowres: "1" }, name);
    ctx.cleanups.push(() => L.closePage(p));
    return p;
  };

  // 1. Two participants.
  const alice = await open("Alice", true);
  const bob = await open("Bob", false);
  T.join_alice = (await L.waitJoined(alice)).ms;
  T.join_bob = (await L.waitJoined(bob)).ms;
  report.roles = { Alice: alice.role, Bob: bob.role };
  L.check(report, alice.role === "moderator", `Alice's role is ${alice.role}, not moderator`);
  L.check(report, bob.role === "participant", `Bob's role is ${bob.role}, not participant`);
  await L.waitUntil("Alice and Bob to see each other", () => Promise.all([L.state(alice), L.state(bob)]),
    ([a, b]) => a.participants.some((p) => p.endpoint === bob.endpoint) && b.participants.some((p) => p.endpoint === alice.endpoint),
    SIGNAL_MS);
  const two = await L.waitMesh([alice, bob], MEDIA_MS);
  T.media_two = two.ms;
  report.two_party = two.pairs;
  L.log("two-party media:", JSON.stringify(two.pairs));

  // 2. A third participant: a full mesh of media through the bridge.
  const carol = await open("Carol", false);
  T.join_carol = (await L.waitJoined(carol)).ms;
  const three = await L.waitMesh([alice, bob, carol], MEDIA_MS);
  T.media_three = three.ms;
  await L.sleep(1000); // let the counters grow a little past the first frames
  const settled = await Promise.all([alice, bob, carol].map(L.stats));
  report.media_pairs = L.pairRecords([alice, bob, carol], settled);
  report.transport = {};
  [alice, bob, carol].forEach((p, i) => {
    report.transport[p.label] = { ...settled[i].transport, candidatePair: settled[i].candidatePair, connectionState: settled[i].connectionState };
    const sent = settled[i].outbound;
    report.transport[p.label].sent = { audioPackets: sent.audio && sent.audio.packetsSent, videoPackets: sent.video && sent.video.packetsSent, framesEncoded: sent.video && sent.video.framesEncoded };
  });
  L.log("three-party media:", JSON.stringify(report.media_pairs));
  for (const pr of report.media_pairs) {
    L.check(report, pr.framesDecoded > 0 && pr.audioPackets > 0, `${pr.receiver} has no media from ${pr.sender}: ${JSON.stringify(pr)}`);
  }
  for (const [who, t] of Object.entries(report.transport)) {
    L.check(report, t.dtlsState === "connected", `${who}: DTLS state ${t.dtlsState}`);
    L.check(report, t.candidatePair && /^127\.0\.0\.1:/.test(t.candidatePair.remote || ""), `${who}: selected pair ${JSON.stringify(t.candidatePair)}`);
  }

  // 3. Moderator mute, seen by the target and the others; the target unmutes itself.
  report.mute = {};
  await alice.page.evaluate((id) => window.viaduct.mute(id, true), bob.endpoint);
  try {
    const r = await L.waitUntil("Bob to be muted by Alice", () => L.state(bob), (s) => s.mutedBy && s.audioMuted, SIGNAL_MS);
    report.mute.target_told = r.value.mutedBy;
    report.mute.by_ok = r.value.mutedBy.by === alice.endpoint && r.value.mutedBy.audio === true;
    L.check(report, report.mute.by_ok, `Bob's muted message: ${JSON.stringify(r.value.mutedBy)}`);
    const seen = await L.waitUntil("Carol to see Bob muted", () => L.state(carol),
      (s) => s.participants.some((p) => p.endpoint === bob.endpoint && p.audio_muted), SIGNAL_MS);
    report.mute.others_see_muted_ms = seen.ms;
    // The bridge stops forwarding Bob's audio (Bob's page still sends: a disabled
    // track sends silence): Carol's count of Bob's audio packets stands still.
    const bobAudioAtCarol = async () => {
      const r = (await L.stats(carol)).remote[bob.endpoint];
      return r ? r.audio.packetsReceived : 0;
    };
    await L.sleep(300); // what was in flight when the mute landed
    const m0 = await bobAudioAtCarol();
    await L.sleep(1500);
    report.mute.audio_packets_while_muted = (await bobAudioAtCarol()) - m0;
    L.check(report, report.mute.audio_packets_while_muted <= 5, `Bob's audio still reached Carol while muted: ${report.mute.audio_packets_while_muted} packets in 1.5 s`);
    await bob.page.evaluate(() => window.viaduct.mute(null, false));
    const unmuted = await L.waitUntil("Carol to see Bob unmuted", () => L.state(carol),
      (s) => s.participants.some((p) => p.endpoint === bob.endpoint && !p.audio_muted), SIGNAL_MS);
    report.mute.others_see_unmuted_ms = unmuted.ms;
    const u0 = await bobAudioAtCarol();
    const resumed = await L.waitUntil("Bob's audio to reach Carol again", bobAudioAtCarol, (n) => n - u0 >= 10, SIGNAL_MS);
    report.mute.audio_resumed_ms = resumed.ms;
    // Bob (a participant) may not mute others.
    await bob.page.evaluate((id) => window.viaduct.mute(id, true), carol.endpoint);
    const denied = await L.waitUntil("Bob's mute of Carol to be refused", () => L.state(bob),
      (s) => s.lastError && s.lastError.code === "forbidden", SIGNAL_MS);
    report.mute.participant_refused = denied.value.lastError.code;
  } catch (e) {
    L.check(report, false, `mute: ${e.message}`);
  }

  // 4. Chat, then a late joiner gets the history.
  const text = `hello from Alice ${Date.now()}`;
  await alice.page.evaluate((t) => window.viaduct.sendChat(t), text);
  report.chat = { text, delivered: {} };
  for (const p of [bob, carol]) {
    try {
      const r = await L.waitUntil(`${p.label} to get the chat message`, () => L.state(p), (s) => s.chat.some((c) => c.text === text), SIGNAL_MS);
      const msg = r.value.chat.find((c) => c.text === text);
      report.chat.delivered[p.label] = true;
      T[`chat_${p.label}`] = r.ms;
      L.check(report, msg.from === alice.endpoint && msg.name === "Alice" && Number.isFinite(msg.ts), `chat message fields: ${JSON.stringify(msg)}`);
    } catch (e) {
      report.chat.delivered[p.label] = false;
      L.check(report, false, e.message);
    }
  }
  await L.sleep(300);
  report.chat.echo_to_sender = (await L.state(alice)).chat.some((c) => c.text === text);
  const dave = await open("Dave", false);
  const daveJoined = await L.waitJoined(dave);
  T.join_dave = daveJoined.ms;
  report.chat.history_len = daveJoined.state.chat.length;
  report.chat.history_late_joiner = daveJoined.state.chat.some((c) => c.text === text && c.from === alice.endpoint);
  L.check(report, report.chat.history_late_joiner, `Dave's history lacks the message: ${JSON.stringify(daveJoined.state.chat)}`);
  report.chat.late_joiner_sees = daveJoined.state.participants.map((p) => p.name).sort();
  L.check(report, report.chat.late_joiner_sees.join() === "Alice,Bob,Carol", `Dave's participants: ${report.chat.late_joiner_sees}`);
  try {
    report.endpoints.with_four = (await L.waitUntil("4 endpoints in /colibri/stats", () => L.endpointCount(base),
      (n) => n === report.endpoints.initial + 4, SIGNAL_MS)).value;
  } catch (e) {
    L.check(report, false, e.message);
  }

  // 5. The moderator kicks Dave.
  report.kick = { others_reason: {} };
  await alice.page.evaluate((id) => window.viaduct.kick(id), dave.endpoint);
  try {
    const k = await L.waitUntil("Dave to see kicked", () => L.state(dave), (s) => s.kicked, SIGNAL_MS);
    report.kick.kicked_saw = true;
    report.kick.by_ok = k.value.kicked.by === alice.endpoint;
    T.kick_seen = k.ms;
    const closed = await L.waitUntil("Dave's socket to close", () => L.state(dave), (s) => s.closed, SIGNAL_MS);
    report.kick.close = closed.value.closed; // {code, reason} of the server's close frame
    L.check(report, report.kick.by_ok, `Dave's kicked.by is ${k.value.kicked.by}, not Alice ${alice.endpoint}`);
  } catch (e) {
    report.kick.kicked_saw = false;
    L.check(report, false, e.message);
  }
  for (const p of [alice, bob, carol]) {
    try {
      const r = await L.waitUntil(`${p.label} to see Dave leave`, () => L.state(p),
        (s) => s.departures.some((d) => d.endpoint === dave.endpoint), SIGNAL_MS);
      report.kick.others_reason[p.label] = r.value.departures.find((d) => d.endpoint === dave.endpoint).reason;
    } catch (e) {
      report.kick.others_reason[p.label] = null;
    }
    L.check(report, report.kick.others_reason[p.label] === "kicked", `${p.label} saw Dave leave with reason ${report.kick.others_reason[p.label]}`);
  }
  await L.closePage(dave);

  // 6. A page closes: the bridge's endpoint goes away.
  try {
    report.endpoints.before = (await L.waitUntil("3 endpoints after the kick", () => L.endpointCount(base),
      (n) => n === report.endpoints.initial + 3, SIGNAL_MS)).value;
  } catch (e) {
    report.endpoints.before = await L.endpointCount(base);
    L.check(report, false, e.message);
  }
  const t0 = Date.now();
  await L.closePage(carol);
  try {
    const r = await L.waitUntil("endpoints to drop by one", () => L.endpointCount(base), (n) => n === report.endpoints.before - 1, SIGNAL_MS, 100);
    report.endpoints.after = r.value;
    report.endpoints.drop_ms = Date.now() - t0;
  } catch (e) {
    report.endpoints.after = await L.endpointCount(base);
    L.check(report, false, e.message);
  }
  report.leave = {};
  for (const p of [alice, bob]) {
    try {
      const r = await L.waitUntil(`${p.label} to see Carol leave`, () => L.state(p),
        (s) => s.departures.some((d) => d.endpoint === carol.endpoint), SIGNAL_MS);
      report.leave[p.label] = r.value.departures.find((d) => d.endpoint === carol.endpoint).reason;
    } catch (e) {
      report.leave[p.label] = null;
      L.check(report, false, e.message);
    }
  }
  // Two people are left: still media both ways.
  const after = await Promise.all([alice, bob].map(L.stats));
  report.after_leave = L.pairRecords([alice, bob], after);
  report.errors = {};
  for (const p of [alice, bob]) {
    const s = await L.state(p);
    report.errors[p.label] = s.errors;
    L.check(report, s.errors.every((e) => e.code === "forbidden"), `${p.label} got errors: ${JSON.stringify(s.errors)}`);
  }
});
