// Viaduct demo page: joins a room over the control service's WebSocket (`GET /ws`),
// answers the server's SDP offers, shows a tile per remote participant, chat, the
// participant list and moderator controls. No build step, no dependencies.
//
// Signalling (one JSON object per text frame, field `type`):
//   client → server: join, answer, mute, kick, chat, leave, ping
//   server → client: joined, offer, participant-joined/-updated/-left, muted, kicked,
//                    chat, error, pong
// The server always offers. In its offer the first two m-lines (mid "0" audio, mid "1"
// video) carry our own media to the bridge; every later m-line carries one remote
// participant's source, with `a=msid:<endpoint id> <track id>`.
//
// Test hooks live on `window.viaduct` (see the end of this file).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // Everything the page knows; `viaduct.state()` returns a copy of the public part.
  const state = {
    auth: null, // "dev" | "jwt", from /api/config
    joined: false,
    endpoint: null,
    room: null,
    name: null,
    role: null,
    participants: new Map(), // endpoint id → Participant (the others)
    chat: [], // Chat messages, oldest first
    departures: [], // {endpoint, name, reason} for every participant-left seen
    lastError: null, // {code, message} from the server, or from the page itself
    errors: [], // every error, in order
    kicked: null, // {by} once kicked
    mutedBy: null, // {by, audio, video} from the last moderator mute
    audioMuted: false,
    videoMuted: false,
    offers: 0, // offers answered
    revision: null, // revision of the last offer answered
    closed: null, // {code, reason} when the socket closed
  };

  let ws = null;
  let pc = null;
  let localStream = null;
  let offerChain = Promise.resolve(); // offers are handled one at a time, in order
  let pingTimer = null;
  const tiles = new Map(); // endpoint id → {el, video, audio, videoTrack, audioTrack}

  // ---------------------------------------------------------------- UI helpers

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function showNotice(text) {
    const el = $("notice");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function recordError(code, message) {
    state.lastError = { code, message };
    state.errors.push(state.lastError);
    setStatus(`error: ${code}${message ? ` (${message})` : ""}`, true);
  }

  function nameOf(endpoint) {
    if (endpoint === state.endpoint) return state.name || "me";
    const p = state.participants.get(endpoint);
    return p ? p.name : endpoint;
  }

  function isModerator() {
    return state.role === "moderator";
  }

  // ---------------------------------------------------------------- signalling

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  async function fetchJson(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      // not JSON: handled below
    }
    if (!r.ok) {
      const reason = body && (body.message || body.reason);
      throw new Error(`${url.split("?")[0]}: HTTP ${r.status}${reason ? `: ${reason}` : ""}`);
    }
    return body;
  }

  /** The JWT to connect with: from /dev/token in dev mode, from `?jwt=` otherwise. */
  async function getToken(room, name, moderator) {
    if (state.auth === "dev") {
      const q = new URLSearchParams({ room, name, moderator: String(moderator) });
      const body = await fetchJson(`/dev/token?${q}`);
      return body.token;
    }
    const jwt = params.get("jwt");
    if (!jwt) throw new Error("this server needs a token: open the page with ?jwt=…&room=…");
    return jwt;
  }

  async function join(room, name, moderator) {
    if (ws) return;
    state.room = room;
    state.name = name;
    state.kicked = null;
    state.closed = null;
    state.lastError = null;
    state.departures = [];
    state.mutedBy = null;
    state.audioMuted = false;
    state.videoMuted = false;
    renderLocalMute();
    showNotice("");
    setStatus("getting camera and microphone…");
    localStream = await getLocalMedia();
    $("local-video").srcObject = localStream;

    setStatus("getting a token…");
    const token = await getToken(room, name, moderator);

    setStatus("connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({ token });
    // A jwt-mode token may admit to any room (`room: "*"`): then the room is asked for.
    if (state.auth !== "dev") q.set("room", room);
    ws = new WebSocket(`${scheme}://${location.host}/ws?${q}`);
    ws.onopen = () => {
      send({ type: "join", name });
      pingTimer = setInterval(() => send({ type: "ping" }), 20000);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        recordError("client_bad_message", "the server sent something that is not JSON");
        return;
      }
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      state.closed = { code: ev.code, reason: ev.reason };
      const wasJoined = state.joined;
      teardown();
      if (state.kicked) {
        setStatus(`removed from the room by ${state.kicked.byName || state.kicked.by}`, true);
      } else if (wasJoined) {
        setStatus(`disconnected (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`, true);
      } else if (!state.lastError) {
        setStatus(`could not join (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`, true);
      }
    };
    ws.onerror = () => {
      // onclose follows with the details
    };
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "joined":
        onJoined(msg);
        break;
      case "offer":
        offerChain = offerChain.then(() => onOffer(msg)).catch((e) => {
          recordError("client_offer", String(e && e.message ? e.message : e));
        });
        break;
      case "participant-joined":
      case "participant-updated":
        upsertParticipant(msg.participant);
        break;
      case "participant-left":
        onParticipantLeft(msg.endpoint, msg.reason);
        break;
      case "muted":
        onMutedByModerator(msg);
        break;
      case "kicked":
        state.kicked = { by: msg.by, byName: nameOf(msg.by) };
        showNotice(`You were removed from the room by ${nameOf(msg.by)}.`);
        break;
      case "chat":
        addChat(msg.message);
        break;
      case "error":
        recordError(msg.code, msg.message);
        break;
      case "pong":
        break;
      default:
        console.debug("viaduct: ignoring message", msg);
    }
  }

  function onJoined(msg) {
    state.joined = true;
    state.endpoint = msg.endpoint;
    state.room = msg.room;
    state.name = msg.name;
    state.role = msg.role;
    state.participants.clear();
    for (const p of msg.participants || []) upsertParticipant(p);
    state.chat = [];
    $("chat-log").replaceChildren();
    for (const c of msg.chat || []) addChat(c);

    $("join-form").hidden = true;
    $("call").hidden = false;
    $("room-label").textContent = `room ${msg.room}`;
    $("local-name").textContent = `${msg.name} (me${isModerator() ? ", moderator" : ""})`;
    for (const el of document.querySelectorAll(".moderator-only")) el.hidden = !isModerator();
    setStatus(`joined as ${msg.role}`);
    renderParticipants();
  }

  // ---------------------------------------------------------------- WebRTC

  /** Camera and microphone; a synthetic source when there is none (so a page can still join). */
  async function getLocalMedia() {
    const small = params.get("lowres") === "1";
    const video = small
      ? { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15 } }
      : { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } };
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (e) {
      console.warn("viaduct: getUserMedia failed, sending a test pattern", e);
      showNotice(`No camera/microphone (${e.name}): sending a test pattern and a tone.`);
      return syntheticMedia();
    }
  }

  function syntheticMedia() {
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext("2d");
    let frame = 0;
    setInterval(() => {
      frame++;
      g.fillStyle = `hsl(${frame % 360}, 60%, 40%)`;
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.fillStyle = "#fff";
      g.font = "24px sans-serif";
      g.fillText(`${state.name || ""} ${frame}`, 20, 130);
    }, 66);
    const stream = canvas.captureStream(15);
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    gain.gain.value = 0.05;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    for (const t of dest.stream.getAudioTracks()) stream.addTrack(t);
    return stream;
  }

  function ensurePeerConnection() {
    if (pc) return pc;
    pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    pc.ontrack = onTrack;
    pc.onconnectionstatechange = () => {
      if (!pc) return;
      if (pc.connectionState === "connected") setStatus(`connected as ${state.role}`);
      if (pc.connectionState === "failed") setStatus("media connection failed", true);
    };
    return pc;
  }

  /** Answer one server offer: SRD → (first time: attach our tracks) → answer → SLD → send. */
  async function onOffer(msg) {
    const conn = ensurePeerConnection();
    await conn.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    attachLocalTracks(conn);
    // A tile whose media went inactive and whose participant is gone has no reason to stay.
    const active = new Set(parseSections(msg.sdp).filter((s) => s.direction !== "inactive").map((s) => s.endpoint));
    for (const endpoint of [...tiles.keys()]) {
      if (!active.has(endpoint) && !state.participants.has(endpoint)) removeTile(endpoint);
    }
    const answer = await conn.createAnswer();
    await conn.setLocalDescription(answer);
    // No trickle: the bridge is ICE-lite and learns our address from our checks.
    send({ type: "answer", sdp: conn.localDescription.sdp, revision: msg.revision });
    state.offers++;
    state.revision = msg.revision;
  }

  /**
   * Our own media goes on the transceivers of mid "0" (audio) and "1" (video), which the
   * bridge offers recvonly. replaceTrack rather than addTrack: addTrack could pick a
   * transceiver of a remote participant's m-line.
   */
  function attachLocalTracks(conn) {
    for (const t of conn.getTransceivers()) {
      let track = null;
      if (t.mid === "0") track = localStream.getAudioTracks()[0] || null;
      else if (t.mid === "1") track = localStream.getVideoTracks()[0] || null;
      else continue;
      if (t.direction !== "sendonly") t.direction = "sendonly";
      if (t.sender.track !== track) {
        t.sender.replaceTrack(track);
        if (t.sender.setStreams) t.sender.setStreams(localStream);
      }
    }
  }

  function onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return; // a remote m-line without msid: nothing to attribute it to
    const endpoint = stream.id;
    const tile = ensureTile(endpoint);
    const track = ev.track;
    if (track.kind === "video") {
      tile.videoTrack = track;
      tile.video.srcObject = new MediaStream([track]);
    } else {
      tile.audioTrack = track;
      tile.audio.srcObject = new MediaStream([track]);
    }
    // Autoplay may be refused until the user interacts with the page: retry on a click.
    for (const el of [tile.video, tile.audio]) {
      if (el.srcObject) el.play().catch(() => document.addEventListener("click", () => el.play().catch(() => {}), { once: true }));
    }
  }

  // ---------------------------------------------------------------- participants

  function upsertParticipant(p) {
    if (!p || !p.endpoint || p.endpoint === state.endpoint) return;
    state.participants.set(p.endpoint, p);
    const tile = ensureTile(p.endpoint);
    updateTile(tile, p);
    renderParticipants();
  }

  function onParticipantLeft(endpoint, reason) {
    const p = state.participants.get(endpoint);
    state.departures.push({ endpoint, name: p ? p.name : null, reason });
    state.participants.delete(endpoint);
    removeTile(endpoint);
    renderParticipants();
    const who = p ? p.name : endpoint;
    const how = { left: "left", kicked: "was removed", disconnected: "disconnected", expired: "lost connection" }[reason] || reason;
    setStatus(`${who} ${how}`);
  }

  function ensureTile(endpoint) {
    let tile = tiles.get(endpoint);
    if (tile) return tile;
    const el = $("tile-template").content.firstElementChild.cloneNode(true);
    el.dataset.endpoint = endpoint;
    tile = { el, video: el.querySelector("video"), audio: el.querySelector("audio"), videoTrack: null, audioTrack: null };
    tiles.set(endpoint, tile);
    $("tiles").appendChild(el);
    updateTile(tile, state.participants.get(endpoint) || { endpoint, name: "…" });
    return tile;
  }

  function updateTile(tile, p) {
    tile.el.querySelector(".tile-name").textContent = p.name + (p.role === "moderator" ? " (moderator)" : "");
    tile.el.querySelector(".mic-off").hidden = !p.audio_muted;
    tile.el.querySelector(".cam-off").hidden = !p.video_muted;
  }

  function removeTile(endpoint) {
    const tile = tiles.get(endpoint);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.audio.srcObject = null;
    tile.el.remove();
    tiles.delete(endpoint);
  }

  function renderParticipants() {
    const list = $("participants");
    const items = [];
    const me = document.createElement("li");
    me.append(span("who", `${state.name || "me"} (me)`), span("role", state.role || ""));
    items.push(me);
    for (const p of state.participants.values()) {
      const li = document.createElement("li");
      li.dataset.endpoint = p.endpoint;
      const flags = [p.audio_muted ? "mic off" : null, p.video_muted ? "camera off" : null].filter(Boolean);
      li.append(span("who", p.name), span("role", [p.role === "moderator" ? "moderator" : null, ...flags].filter(Boolean).join(", ")));
      if (isModerator()) {
        li.append(
          button("mute", () => moderatorMute(p.endpoint, true, undefined), `Mute ${p.name}'s microphone`, p.audio_muted),
          button("stop cam", () => moderatorMute(p.endpoint, undefined, true), `Stop ${p.name}'s camera`, p.video_muted),
          button("kick", () => {
            if (confirm(`Remove ${p.name} from the room?`)) kick(p.endpoint);
          }, `Remove ${p.name} from the room`),
        );
      }
      items.push(li);
    }
    list.replaceChildren(...items);
    $("participant-count").textContent = `(${state.participants.size + 1})`;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function button(label, onClick, title, disabled = false) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = label;
    b.title = title;
    b.disabled = disabled;
    b.addEventListener("click", onClick);
    return b;
  }

  // ---------------------------------------------------------------- mute, kick, chat

  /** Our own microphone/camera on or off; the server tells the others. */
  function setSelfMute(audio, video) {
    const msg = { type: "mute" };
    if (audio !== undefined && audio !== null) {
      state.audioMuted = !!audio;
      for (const t of localStream ? localStream.getAudioTracks() : []) t.enabled = !audio;
      msg.audio = !!audio;
    }
    if (video !== undefined && video !== null) {
      state.videoMuted = !!video;
      for (const t of localStream ? localStream.getVideoTracks() : []) t.enabled = !video;
      msg.video = !!video;
    }
    renderLocalMute();
    return send(msg);
  }

  function renderLocalMute() {
    $("toggle-audio").textContent = state.audioMuted ? "Unmute mic" : "Mute mic";
    $("toggle-audio").setAttribute("aria-pressed", String(state.audioMuted));
    $("toggle-video").textContent = state.videoMuted ? "Start camera" : "Stop camera";
    $("toggle-video").setAttribute("aria-pressed", String(state.videoMuted));
    $("local-mic-badge").hidden = !state.audioMuted;
    $("local-cam-badge").hidden = !state.videoMuted;
  }

  /** A moderator muted us: the bridge already stopped forwarding; reflect it locally. */
  function onMutedByModerator(msg) {
    state.mutedBy = { by: msg.by, audio: !!msg.audio, video: !!msg.video };
    if (msg.audio) {
      state.audioMuted = true;
      for (const t of localStream ? localStream.getAudioTracks() : []) t.enabled = false;
    }
    if (msg.video) {
      state.videoMuted = true;
      for (const t of localStream ? localStream.getVideoTracks() : []) t.enabled = false;
    }
    renderLocalMute();
    const what = [msg.audio ? "microphone" : null, msg.video ? "camera" : null].filter(Boolean).join(" and ");
    showNotice(`${nameOf(msg.by)} turned off your ${what || "media"}. You can turn it back on.`);
  }

  /** A moderator asks `target` (an endpoint id, or "*" for everyone else) to mute. */
  function moderatorMute(target, audio, video) {
    const msg = { type: "mute", target };
    if (audio !== undefined && audio !== null) msg.audio = !!audio;
    if (video !== undefined && video !== null) msg.video = !!video;
    return send(msg);
  }

  function kick(target) {
    return send({ type: "kick", target });
  }

  function sendChat(text) {
    text = String(text || "").trim();
    if (!text) return false;
    if (text.length > 1000) {
      recordError("client_too_large", "a chat message has at most 1000 characters");
      return false;
    }
    return send({ type: "chat", text });
  }

  function addChat(c) {
    if (!c) return;
    state.chat.push(c);
    const li = document.createElement("li");
    const time = document.createElement("time");
    const d = new Date(c.ts);
    time.dateTime = d.toISOString();
    time.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(time, span("from", c.from === state.endpoint ? `${c.name} (me)` : c.name), document.createTextNode(c.text));
    const log = $("chat-log");
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }

  // ---------------------------------------------------------------- leaving

  function leave() {
    send({ type: "leave" });
    if (ws) ws.close(1000, "left");
    teardown();
    setStatus("left the room");
    return true;
  }

  function teardown() {
    state.joined = false;
    clearInterval(pingTimer);
    pingTimer = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    }
    ws = null;
    if (pc) pc.close();
    pc = null;
    offerChain = Promise.resolve();
    for (const endpoint of [...tiles.keys()]) removeTile(endpoint);
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    localStream = null;
    $("local-video").srcObject = null;
    $("call").hidden = true;
    $("join-form").hidden = false;
  }

  // ---------------------------------------------------------------- stats

  /** The m-sections of an SDP: mid, kind, direction, msid stream (endpoint) and SSRCs. */
  function parseSections(sdp) {
    const sections = [];
    let cur = null;
    for (const line of (sdp || "").split(/\r?\n/)) {
      if (line.startsWith("m=")) {
        cur = { kind: line.slice(2).split(" ")[0], mid: null, direction: "sendrecv", endpoint: null, ssrcs: [] };
        sections.push(cur);
      } else if (!cur) {
        continue;
      } else if (line.startsWith("a=mid:")) {
        cur.mid = line.slice(6).trim();
      } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) {
        cur.direction = line.slice(2);
      } else if (line.startsWith("a=msid:")) {
        cur.endpoint = line.slice(7).split(" ")[0];
      } else if (line.startsWith("a=ssrc:")) {
        const m = /^a=ssrc:(\d+) (\S+?)(?::(.*))?$/.exec(line);
        if (m) {
          const ssrc = Number(m[1]);
          if (!cur.ssrcs.includes(ssrc)) cur.ssrcs.push(ssrc);
          if (m[2] === "msid" && !cur.endpoint && m[3]) cur.endpoint = m[3].split(" ")[0];
        }
      }
    }
    return sections;
  }

  /** A summary of pc.getStats(): media per remote endpoint, our sending, the transport. */
  async function stats() {
    const out = {
      endpoint: state.endpoint,
      connectionState: pc ? pc.connectionState : "closed",
      iceConnectionState: pc ? pc.iceConnectionState : "closed",
      remote: {},
      outbound: { audio: null, video: null },
      transport: null,
      candidatePair: null,
    };
    if (!pc) return out;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));

    const sections = parseSections(pc.remoteDescription && pc.remoteDescription.sdp).filter(
      (s) => s.mid !== "0" && s.mid !== "1" && s.endpoint && s.direction !== "inactive",
    );
    const bySsrc = new Map();
    const byMid = new Map();
    for (const s of sections) {
      for (const ssrc of s.ssrcs) bySsrc.set(ssrc, s);
      byMid.set(s.mid, s);
    }
    const midOfTrack = new Map();
    for (const t of pc.getTransceivers()) if (t.receiver && t.receiver.track) midOfTrack.set(t.receiver.track.id, t.mid);

    for (const s of byId.values()) {
      if (s.type === "inbound-rtp") {
        let section = bySsrc.get(s.ssrc);
        if (!section) {
          const mid = s.mid !== undefined ? s.mid : midOfTrack.get(s.trackIdentifier);
          const candidate = byMid.get(mid);
          // A section that lists its SSRCs owns only those (an old SSRC on a reused m-line is not its).
          if (candidate && candidate.ssrcs.length === 0) section = candidate;
        }
        if (!section) continue;
        const r = (out.remote[section.endpoint] ||= {
          name: nameOf(section.endpoint),
          video: { packetsReceived: 0, framesDecoded: 0, framesReceived: 0, bytesReceived: 0, packetsLost: 0, frameWidth: 0, frameHeight: 0, codec: null },
          audio: { packetsReceived: 0, bytesReceived: 0, packetsLost: 0, codec: null },
        });
        const m = s.kind === "video" ? r.video : r.audio;
        m.packetsReceived += s.packetsReceived || 0;
        m.bytesReceived += s.bytesReceived || 0;
        m.packetsLost += s.packetsLost || 0;
        if (s.kind === "video") {
          m.framesDecoded += s.framesDecoded || 0;
          m.framesReceived += s.framesReceived || 0;
          m.frameWidth = Math.max(m.frameWidth, s.frameWidth || 0);
          m.frameHeight = Math.max(m.frameHeight, s.frameHeight || 0);
        }
        const codec = s.codecId && byId.get(s.codecId);
        if (codec) m.codec = codec.mimeType;
      } else if (s.type === "outbound-rtp") {
        const o = (out.outbound[s.kind] ||= { packetsSent: 0, bytesSent: 0, framesEncoded: 0, codec: null });
        o.packetsSent += s.packetsSent || 0;
        o.bytesSent += s.bytesSent || 0;
        if (s.kind === "video") o.framesEncoded += s.framesEncoded || 0;
        const codec = s.codecId && byId.get(s.codecId);
        if (codec) o.codec = codec.mimeType;
      } else if (s.type === "transport") {
        out.transport = {
          dtlsState: s.dtlsState,
          tlsVersion: s.tlsVersion,
          dtlsCipher: s.dtlsCipher,
          srtpCipher: s.srtpCipher,
          iceState: s.iceState,
          dtlsRole: s.dtlsRole,
          selectedCandidatePairId: s.selectedCandidatePairId,
        };
      }
    }
    const pairId = out.transport && out.transport.selectedCandidatePairId;
    const pair = pairId && byId.get(pairId);
    if (pair) {
      const describe = (c) => (c ? `${c.address || c.ip}:${c.port} ${c.candidateType} ${c.protocol}` : null);
      out.candidatePair = {
        local: describe(byId.get(pair.localCandidateId)),
        remote: describe(byId.get(pair.remoteCandidateId)),
        state: pair.state,
        nominated: pair.nominated,
        currentRoundTripTime: pair.currentRoundTripTime,
        bytesSent: pair.bytesSent,
        bytesReceived: pair.bytesReceived,
      };
    }
    return out;
  }

  // ---------------------------------------------------------------- page wiring

  function publicState() {
    return JSON.parse(
      JSON.stringify({
        joined: state.joined,
        endpoint: state.endpoint,
        room: state.room,
        name: state.name,
        role: state.role,
        auth: state.auth,
        participants: [...state.participants.values()],
        chat: state.chat,
        departures: state.departures,
        lastError: state.lastError,
        errors: state.errors,
        kicked: state.kicked,
        mutedBy: state.mutedBy,
        audioMuted: state.audioMuted,
        videoMuted: state.videoMuted,
        offers: state.offers,
        revision: state.revision,
        closed: state.closed,
        connectionState: pc ? pc.connectionState : null,
        remoteTiles: [...tiles.keys()],
      }),
    );
  }

  async function startJoin() {
    const room = $("room").value.trim();
    const name = $("name").value.trim();
    const moderator = $("moderator").checked;
    if (!room || !name) return;
    $("join").disabled = true;
    try {
      await join(room, name, moderator);
    } catch (e) {
      teardown();
      recordError("client_join", String(e && e.message ? e.message : e));
    } finally {
      $("join").disabled = false;
    }
  }

  /** The (unverified) claims of a JWT, or {} — only to prefill the form. */
  function jwtClaims(token) {
    try {
      const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
      return JSON.parse(json) || {};
    } catch (_) {
      return {};
    }
  }

  async function init() {
    $("room").value = params.get("room") || "";
    $("name").value = params.get("name") || "";
    $("moderator").checked = params.get("moderator") === "1" || params.get("moderator") === "true";

    $("join-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      startJoin();
    });
    $("toggle-audio").addEventListener("click", () => setSelfMute(!state.audioMuted, undefined));
    $("toggle-video").addEventListener("click", () => setSelfMute(undefined, !state.videoMuted));
    $("mute-all").addEventListener("click", () => moderatorMute("*", true, undefined));
    $("leave").addEventListener("click", leave);
    $("chat-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (sendChat($("chat-input").value)) $("chat-input").value = "";
    });
    window.addEventListener("pagehide", () => {
      if (ws) send({ type: "leave" });
    });

    try {
      const config = await fetchJson("/api/config");
      state.auth = config.auth;
    } catch (e) {
      recordError("client_config", String(e.message || e));
      return;
    }
    $("moderator-field").hidden = state.auth !== "dev";
    $("auth-note").textContent =
      state.auth === "dev"
        ? "Development mode: the server hands out tokens to anyone."
        : "This server needs a token in the page address (?jwt=…).";
    if (state.auth !== "dev" && params.get("jwt")) {
      // A Jitsi-style token names the room and the user: prefill what the URL lacks.
      const claims = jwtClaims(params.get("jwt"));
      if (!$("room").value && claims.room && claims.room !== "*") $("room").value = claims.room;
      const user = claims.context && claims.context.user;
      if (!$("name").value && user && user.name) $("name").value = user.name;
    }
    setStatus("not connected");
    if (params.get("autojoin") === "1") startJoin();
  }

  // Hooks for tests and the console.
  window.viaduct = {
    state: publicState,
    stats,
    sendChat,
    kick,
    /** mute(target, audio, video): target null/"self"/own id = own mute (true or false), else a moderator mute. */
    mute(target, audio, video) {
      if (target === null || target === undefined || target === "self" || target === state.endpoint) {
        return setSelfMute(audio, video);
      }
      return moderatorMute(target, audio, video);
    },
    leave,
    join: (room, name, moderator) => {
      $("room").value = room;
      $("name").value = name;
      $("moderator").checked = !!moderator;
      return startJoin();
    },
  };

  init();
})();
