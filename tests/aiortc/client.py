#!/usr/bin/env python3
"""An aiortc participant for Viaduct's WebSocket signalling (`GET /ws?token=JWT`).

It gets a token (from `/dev/token` in dev mode, or `--token`), joins a room, answers
every server offer (our own media on the transceivers of mid "0" audio and "1" video,
as the protocol says), sends a synthetic moving picture and a tone, and counts the
video and audio frames it decodes per remote participant (the endpoint id is the msid
stream id of each remote m-line).

It stops after `--seconds`, or `--hold` seconds after it has media from every other
participant (at least `--expect` of them), sends `leave`, prints one JSON report line
on stdout and exits 0 when it received video and audio from every other participant
(1 otherwise; 2 on a setup error). Logs go to stderr.

Run it in a network namespace with only `lo` (see tests/browser/run-in-netns.sh):
aioice skips 127.0.0.1 by default, so the host address is patched to `$AIORTC_HOST`
(default 127.0.0.1) before aiortc is used.
"""

import argparse
import array
import asyncio
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice

HOST = os.environ.get("AIORTC_HOST", "127.0.0.1")
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [HOST]

import websockets  # noqa: E402
from aiortc import (  # noqa: E402
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import (  # noqa: E402
    AudioStreamTrack,
    MediaStreamError,
    VideoStreamTrack,
)
from av import AudioFrame, VideoFrame  # noqa: E402


def log(*args):
    print("[aiortc]", *args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ synthetic media


class MovingBars(VideoStreamTrack):
    """320x240 at 30 fps: a luma gradient that scrolls one step per frame."""

    def __init__(self, width=320, height=240):
        super().__init__()
        self.width, self.height = width, height
        self.frame_no = 0
        ramp = bytes((x * 255 // width) for x in range(width))
        self.ramp2 = ramp + ramp

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        shift = (self.frame_no * 4) % self.width
        self.frame_no += 1
        y, u, v = frame.planes
        row = self.ramp2[shift : shift + self.width]
        pad = bytes(y.line_size - self.width)
        y.update((row + pad) * self.height)
        u.update(bytes([90]) * u.buffer_size)
        v.update(bytes([160]) * v.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Tone(AudioStreamTrack):
    """A 440 Hz sine wave in the base class's 8 kHz, 20 ms framing."""

    def __init__(self):
        super().__init__()
        self.phase = 0

    async def recv(self):
        frame = await super().recv()  # silence with the right pts and pacing
        n = frame.samples
        rate = frame.sample_rate
        samples = array.array(
            "h",
            (int(6000 * math.sin(2 * math.pi * 440 * (self.phase + i) / rate)) for i in range(n)),
        )
        self.phase += n
        frame.planes[0].update(samples.tobytes())
        return frame


# ------------------------------------------------------------------ SDP


def parse_sections(sdp):
    """The m-sections of an SDP: mid, kind, direction, msid stream id (= endpoint)."""
    sections = []
    cur = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            cur = {"kind": line[2:].split(" ")[0], "mid": None, "direction": "sendrecv", "endpoint": None}
            sections.append(cur)
        elif cur is None:
            continue
        elif line.startswith("a=mid:"):
            cur["mid"] = line[6:].strip()
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            cur["direction"] = line[2:]
        elif line.startswith("a=msid:"):
            cur["endpoint"] = line[7:].split(" ")[0]
        elif line.startswith("a=ssrc:") and " msid:" in line and cur["endpoint"] is None:
            cur["endpoint"] = line.split(" msid:", 1)[1].split(" ")[0]
    return sections


# ------------------------------------------------------------------ the client


class Client:
    def __init__(self, ws, args):
        self.ws = ws
        self.args = args
        # max-bundle: with aiortc's default (balanced), a first offer with two video
        # m-lines leaves the second on a transport that BUNDLE then discards (it answers
        # port 9 and never receives on it).
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.audio = Tone()
        self.video = MovingBars()
        self.lock = asyncio.Lock()
        self.mid_endpoint = {}  # mid → endpoint id, for the remote m-lines now active
        self.remote = {}  # endpoint id → {"video_frames", "audio_frames", "video_size", ...}
        self.participants = {}  # endpoint id → Participant
        self.endpoint = None
        self.role = None
        self.chat = []
        self.errors = []
        self.departures = []
        self.kicked = None
        self.offers = 0
        self.joined_at = None
        self.first_media_at = {}  # endpoint → seconds since join
        self.complete_at = None
        self.was_complete = False
        self.closed = asyncio.Event()
        self.consumers = []
        self.started = time.monotonic()

        @self.pc.on("track")
        def on_track(track):
            self.consumers.append(asyncio.ensure_future(self.consume(track)))

        @self.pc.on("connectionstatechange")
        def on_state():
            log("connection state", self.pc.connectionState)

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def read_loop(self):
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self.errors.append({"code": "client_bad_message", "message": raw[:200]})
                    continue
                await self.on_message(msg)
        except websockets.ConnectionClosed as e:
            log("socket closed", e)
        finally:
            self.closed.set()

    async def on_message(self, msg):
        t = msg.get("type")
        if t == "joined":
            self.endpoint = msg["endpoint"]
            self.role = msg.get("role")
            self.joined_at = time.monotonic()
            for p in msg.get("participants", []):
                self.participants[p["endpoint"]] = p
            self.chat = list(msg.get("chat", []))
            log("joined as", self.endpoint, self.role, "with", list(self.participants))
        elif t == "offer":
            async with self.lock:
                try:
                    await self.answer(msg)
                except Exception as e:  # report it, keep going
                    log("offer failed:", repr(e))
                    self.errors.append({"code": "client_offer", "message": repr(e)})
        elif t in ("participant-joined", "participant-updated"):
            p = msg["participant"]
            if p["endpoint"] != self.endpoint:
                self.participants[p["endpoint"]] = p
        elif t == "participant-left":
            self.participants.pop(msg["endpoint"], None)
            self.departures.append({"endpoint": msg["endpoint"], "reason": msg.get("reason")})
        elif t == "chat":
            self.chat.append(msg["message"])
        elif t == "kicked":
            self.kicked = {"by": msg.get("by")}
        elif t == "error":
            log("server error", msg)
            self.errors.append({"code": msg.get("code"), "message": msg.get("message")})
        elif t == "muted":
            for track, flag in ((self.audio, msg.get("audio")), (self.video, msg.get("video"))):
                if flag:
                    log("muted by", msg.get("by"), track.kind)

    async def answer(self, msg):
        sdp = msg["sdp"]
        sections = parse_sections(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        # Our media: the transceivers of mid "0" (audio) and "1" (video), by mid.
        for tr in self.pc.getTransceivers():
            track = {"0": self.audio, "1": self.video}.get(tr.mid)
            if track is None:
                continue
            tr.direction = "sendonly"
            if tr.sender.track is None:
                tr.sender.replaceTrack(track)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.send({"type": "answer", "sdp": self.pc.localDescription.sdp, "revision": msg["revision"]})
        if os.environ.get("VIADUCT_AIORTC_DEBUG"):
            log(f"offer {msg['revision']}:\n{sdp}\nanswer:\n{self.pc.localDescription.sdp}")
        self.offers += 1
        self.mid_endpoint = {
            s["mid"]: s["endpoint"]
            for s in sections
            if s["mid"] not in ("0", "1") and s["endpoint"] and s["direction"] != "inactive"
        }
        log(f"answered offer {msg['revision']}: remote m-lines {self.mid_endpoint}")

    def mid_of(self, track):
        for tr in self.pc.getTransceivers():
            if tr.receiver.track is track:
                return tr.mid
        return None

    async def consume(self, track):
        mid = self.mid_of(track)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            endpoint = self.mid_endpoint.get(mid)
            if endpoint is None:
                continue
            r = self.remote.setdefault(
                endpoint, {"video_frames": 0, "audio_frames": 0, "video_size": None, "mids": []}
            )
            if mid not in r["mids"]:
                r["mids"].append(mid)
            if track.kind == "video":
                r["video_frames"] += 1
                r["video_size"] = [frame.width, frame.height]
            else:
                r["audio_frames"] += 1
            if endpoint not in self.first_media_at and r["video_frames"] and r["audio_frames"]:
                self.first_media_at[endpoint] = round(time.monotonic() - (self.joined_at or self.started), 3)

    async def receiver_stats(self):
        """RTP packets received per remote m-line and SSRC (aiortc's inbound-rtp stats)."""
        out = {}
        for tr in self.pc.getTransceivers():
            if tr.mid in (None, "0", "1"):
                continue
            try:
                report = await tr.receiver.getStats()
            except Exception as e:  # a stopped transceiver
                out[tr.mid] = {"error": repr(e)}
                continue
            packets = {
                str(s.ssrc): s.packetsReceived
                for s in report.values()
                if getattr(s, "type", None) == "inbound-rtp"
            }
            out[tr.mid] = {"kind": tr.kind, "endpoint": self.mid_endpoint.get(tr.mid), "packets": packets}
        return out

    def has_media_from(self, endpoint):
        r = self.remote.get(endpoint)
        m = self.args.min_frames
        return bool(r) and r["video_frames"] >= m and r["audio_frames"] >= m

    def complete(self):
        others = list(self.participants)
        done = len(others) >= max(1, self.args.expect) and all(self.has_media_from(e) for e in others)
        self.was_complete = self.was_complete or done
        return done

    def ok(self):
        """Had media from everyone at some point, and from everyone still here."""
        self.complete()
        return self.was_complete and all(self.has_media_from(e) for e in self.participants)

    def report(self, ok):
        others = list(self.participants)
        return {
            "client": "aiortc",
            "ok": ok,
            "endpoint": self.endpoint,
            "role": self.role,
            "room": self.args.room,
            "name": self.args.name,
            "participants": [{"endpoint": e, "name": p.get("name")} for e, p in self.participants.items()],
            "missing_media_from": [e for e in others if not self.has_media_from(e)],
            "remote": self.remote,
            "first_media_s": self.first_media_at,
            "receivers": getattr(self, "receivers", None),
            "offers_answered": self.offers,
            "connection_state": self.pc.connectionState,
            "ice_connection_state": self.pc.iceConnectionState,
            "chat": self.chat,
            "departures": self.departures,
            "kicked": self.kicked,
            "errors": self.errors,
            "elapsed_s": round(time.monotonic() - self.started, 3),
        }


# ------------------------------------------------------------------ main


def http_json(url):
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: HTTP {e.code}: {e.read()[:300]!r}") from None


async def run(args):
    base = args.url.rstrip("/")
    token = args.token
    if not token:
        config = http_json(f"{base}/api/config")
        if config.get("auth") != "dev":
            raise RuntimeError(f"the server is in {config.get('auth')!r} mode: pass --token")
        q = urllib.parse.urlencode({"room": args.room, "name": args.name, "moderator": str(args.moderator).lower()})
        token = http_json(f"{base}/dev/token?{q}")["token"]
    ws_url = "ws" + base[len("http"):] + "/ws?token=" + urllib.parse.quote(token)

    async with websockets.connect(ws_url, open_timeout=10, max_size=4 * 1024 * 1024) as ws:
        client = Client(ws, args)
        await client.send({"type": "join", "name": args.name})
        reader = asyncio.ensure_future(client.read_loop())
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not client.closed.is_set():
            if client.complete():
                if client.complete_at is None:
                    client.complete_at = time.monotonic()
                    log("media from every other participant:", list(client.participants))
                if time.monotonic() - client.complete_at >= args.hold:
                    break
            else:
                client.complete_at = None
            await asyncio.sleep(0.1)
        ok = client.ok()
        client.receivers = await client.receiver_stats()
        try:
            await client.send({"type": "leave"})
        except websockets.ConnectionClosed:
            pass
        await ws.close()
        reader.cancel()
        await client.pc.close()
        for c in client.consumers:
            c.cancel()
        return client.report(ok)


def main():
    if os.environ.get("VIADUCT_AIORTC_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the control service, e.g. http://127.0.0.1:8080")
    ap.add_argument("--room", required=True)
    ap.add_argument("--name", default="aiortc")
    ap.add_argument("--token", help="a JWT (jwt mode); else one from /dev/token")
    ap.add_argument("--moderator", action="store_true", help="ask /dev/token for a moderator token")
    ap.add_argument("--seconds", type=float, default=20.0, help="stop after this long at most")
    ap.add_argument("--expect", type=int, default=1, help="wait for at least this many other participants")
    ap.add_argument("--hold", type=float, default=5.0, help="keep sending this long after media from everyone")
    ap.add_argument("--min-frames", type=int, default=10, help="video and audio frames that count as media")
    args = ap.parse_args()
    try:
        report = asyncio.run(run(args))
    except Exception as e:
        print(json.dumps({"client": "aiortc", "ok": False, "errors": [{"code": "client_setup", "message": repr(e)}]}))
        sys.exit(2)
    print(json.dumps(report), flush=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
