"""A simulated caller: a Twilio Media Streams or Telnyx media streaming client with a mouth, an ear and a recorder.

Every 20 ms tick it sends one inbound frame (the clip being spoken, or line silence) and plays one
frame of agent audio from its playout buffer, exactly as Twilio's media server does: audio is
played in arrival order, a ``mark`` is echoed when the audio before it has played (at once if
nothing is buffered), and ``clear`` drops the buffer and echoes every pending mark. Both
directions are recorded tick by tick, so the stereo WAV is time-aligned by construction.

As a Telnyx caller (``provider="telnyx"``) it streams in the chosen ``encoding`` and ``sample_rate``
and expects the agent's audio back in the same format; mouth, ear and recordings stay 8 kHz mu-law,
converted at the socket. With ``reorder_seed`` its media frames go out of order the way Telnyx's may:
each block of ``REORDER_BLOCK`` consecutive frames is sent in a seeded random order, one per tick.
"""

from __future__ import annotations

import random
import wave
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import trio
from numpy.typing import NDArray
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from relay_bridge.audio.dtmf import detect_dtmf
from relay_bridge.audio.g711 import SILENCE_BYTE, ulaw_decode, ulaw_encode
from relay_bridge.audio.telephony import FRAME_SAMPLES
from relay_bridge.audio.transcode import EdgeTranscoder
from relay_bridge.protocols import media_streams as ms
from relay_bridge.protocols import telnyx_media as tx
from relay_bridge.protocols.wsquirks import closing_pongs_only
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.timeline import Timeline

TICK_S = 0.02
REORDER_BLOCK = 3  # within the bridge's hold-back, so reordering alone never loses a frame
TELNYX_STREAM_ID = "32de0dea-53cb-4b21-89a4-9e1819c043bc"
TELNYX_CALL_CONTROL_ID = "v3:" + "T" * 40
TELNYX_CALL_SESSION_ID = "ff55a038-6f5d-11ef-9692-02420aeffb1f"
TELNYX_CALL_LEG_ID = "428c31b6-7af4-4b6f-92e7-7a7e6a4f1d44"
TELNYX_USER_ID = "3e6f995f-85f7-4705-9741-53b116d28237"
SILENT_FRAME = bytes([SILENCE_BYTE]) * FRAME_SAMPLES


@dataclass(frozen=True)
class Spoken:
    clip: Clip
    onset: float  # clock time the first frame with speech energy was sent
    end: float  # clock time the last such frame was sent


@dataclass
class EarStats:
    media_arrivals: list[float] = field(default_factory=list)
    leads_ms: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)  # when each mark arrived
    marks_echoed: int = 0
    frames_played: int = 0
    last_agent_frame_at: float = 0.0
    wire_payload_bytes: list[int] = field(default_factory=list)  # size of each media payload as received


class SimulatedCaller:
    def __init__(self, url: str, timeline: Timeline, *, call_sid: str = "CA" + "0" * 32,
                 stream_sid: str = "MZ" + "0" * 32, account_sid: str = "AC" + "0" * 32,
                 custom_parameters: dict[str, Any] | None = None, provider: Literal["twilio", "telnyx"] = "twilio",
                 encoding: str = "PCMU", sample_rate: int = 8000, reorder_seed: int | None = None,
                 from_: str = "", to: str = "") -> None:
        self.url = url
        self.timeline = timeline
        self.codec: ms.MediaStreamsProvider | tx.TelnyxMediaProvider
        self._edge: EdgeTranscoder | None = None
        if provider == "telnyx":
            self.codec = tx.TelnyxMediaProvider(
                stream_id=TELNYX_STREAM_ID, call_control_id=TELNYX_CALL_CONTROL_ID,
                call_session_id=TELNYX_CALL_SESSION_ID, user_id=TELNYX_USER_ID, call_leg_id=TELNYX_CALL_LEG_ID,
                encoding=encoding, sample_rate=sample_rate, from_=from_, to=to)
            self._edge = EdgeTranscoder(encoding, sample_rate)
        elif (encoding, sample_rate) != ("PCMU", 8000) or reorder_seed is not None:
            raise ValueError("a Twilio caller streams 8 kHz PCMU, in order")
        else:
            self.codec = ms.MediaStreamsProvider(stream_sid=stream_sid, account_sid=account_sid, call_sid=call_sid)
        self.provider = provider
        self.custom_parameters = custom_parameters or {}
        self._reorder = random.Random(reorder_seed) if reorder_seed is not None else None
        self._block: list[str] = []  # media frames waiting to be shuffled
        self._outbox: deque[str] = deque()  # shuffled media frames, one sent per tick
        self.media_out_of_order = 0  # media frames sent before one created earlier
        self.ear = EarStats()
        self.left: list[bytes] = []  # mu-law the caller sent, per tick
        self.right: list[bytes] = []  # mu-law the caller heard, per tick
        self.invalid_frames: list[str] = []
        self._mouth: deque[bytes] = deque()
        self._playout: deque[bytes | str] = deque()  # frames and mark names
        self._ws: WebSocketConnection | None = None
        self._tick_event = trio.Event()
        self._closed = trio.Event()
        self._t_start = 0.0
        self._ticks = 0

    # -- running a call -----------------------------------------------------------------------

    async def run(self, script: Callable[[SimulatedCaller], Awaitable[None]],
                  connect: Callable[[], AbstractAsyncContextManager[WebSocketConnection]] | None = None) -> None:
        """Connect (to ``url``, or through ``connect``), start the stream and run ``script``."""
        try:
            await self._run(script, connect)
        except Exception as exc:
            if not closing_pongs_only(exc):  # a ping from the bridge as the caller hung up: not a failure
                raise

    async def _run(self, script: Callable[[SimulatedCaller], Awaitable[None]],
                   connect: Callable[[], AbstractAsyncContextManager[WebSocketConnection]] | None) -> None:
        async with (connect() if connect is not None else open_websocket_url(self.url)) as ws:
            self._ws = ws
            await ws.send_message(self.codec.connected())
            await ws.send_message(self.codec.start(self.custom_parameters))
            stream = self.codec.stream_id if isinstance(self.codec, tx.TelnyxMediaProvider) else self.codec.stream_sid
            self.timeline.add("caller", "call connected", f"{self.provider} stream {stream[:10]}…")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, nursery.cancel_scope)
                nursery.start_soon(self._tick)
                try:
                    await script(self)
                finally:
                    nursery.cancel_scope.cancel()

    async def _send(self, frame: str) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_message(frame)
        except ConnectionClosed:
            self._closed.set()

    @property
    def bridge_closed(self) -> bool:
        return self._closed.is_set()

    async def _tick(self) -> None:
        self._t_start = trio.current_time()
        while True:
            self._ticks += 1
            await trio.sleep_until(self._t_start + self._ticks * TICK_S)
            mouth = self._mouth.popleft() if self._mouth else SILENT_FRAME
            if not self._closed.is_set():
                wire = mouth if self._edge is None else self._edge.from_ulaw(mouth)
                await self._send_media(self.codec.media(wire, timestamp_ms=self._ticks * 20))
            self.left.append(mouth)
            self.right.append(await self._play_one())
            self._tick_event.set()
            self._tick_event = trio.Event()

    async def _send_media(self, frame: str) -> None:
        if self._reorder is None:
            await self._send(frame)
            return
        self._block.append(frame)
        if len(self._block) == REORDER_BLOCK:
            order = list(range(REORDER_BLOCK))
            self._reorder.shuffle(order)
            self.media_out_of_order += sum(1 for i, j in enumerate(order) if any(k < j for k in order[i + 1 :]))
            self._outbox.extend(self._block[j] for j in order)
            self._block = []
        if self._outbox:
            await self._send(self._outbox.popleft())

    async def _flush_media(self) -> None:
        """Send every media frame still held for reordering (in order), as the line closes."""
        while self._outbox:
            await self._send(self._outbox.popleft())
        for frame in self._block:
            await self._send(frame)
        self._block = []

    async def _play_one(self) -> bytes:
        frame = SILENT_FRAME
        if self._playout and isinstance(self._playout[0], bytes):
            frame = self._playout.popleft()  # type: ignore[assignment]
            self.ear.frames_played += 1
            self.ear.last_agent_frame_at = trio.current_time()
        await self._echo_ready_marks()
        return frame.ljust(FRAME_SAMPLES, bytes([SILENCE_BYTE]))[:FRAME_SAMPLES]

    async def _echo_ready_marks(self) -> None:
        while self._playout and isinstance(self._playout[0], str):
            name = self._playout.popleft()
            assert isinstance(name, str)
            self.ear.marks_echoed += 1
            await self._send(self.codec.mark(name))

    async def _receive(self, scope: trio.CancelScope) -> None:
        assert self._ws is not None
        try:
            while True:
                raw = await self._ws.get_message()
                event = self.codec.receive(raw)
                now = trio.current_time()
                match event:
                    case ms.Media():
                        self.ear.wire_payload_bytes.append(len(event.payload))
                        if self._edge is not None:
                            event = ms.Media(event.track, event.number, event.timestamp_ms,
                                             self._edge.to_ulaw(event.payload))
                        buffered = sum(1 for x in self._playout if isinstance(x, bytes))
                        if not buffered and now - self.ear.last_agent_frame_at > 0.1:
                            self.timeline.add("caller", "hears agent")
                        for i in range(0, len(event.payload), FRAME_SAMPLES):
                            self._playout.append(event.payload[i : i + FRAME_SAMPLES])
                        self.ear.media_arrivals.append(now)
                        self.ear.leads_ms.append((buffered + len(event.payload) / FRAME_SAMPLES) * TICK_S * 1000)
                    case ms.Mark():
                        self.ear.marks.append(now)
                        self._playout.append(event.name)
                        if not any(isinstance(x, bytes) for x in self._playout):
                            await self._echo_ready_marks()
                    case ms.Clear():
                        self.ear.clears.append(now)
                        self.timeline.add("caller", "clear received")
                        marks = [x for x in self._playout if isinstance(x, str)]
                        self._playout.clear()
                        for name in marks:
                            self.ear.marks_echoed += 1
                            await self._send(self.codec.mark(name))
                    case ms.InvalidFrame():
                        self.invalid_frames.append(event.reason)
                        self.timeline.add("caller", "invalid frame", event.reason)
        except ConnectionClosed:
            self._closed.set()
            self.timeline.add("caller", "bridge closed")

    # -- the script's verbs -------------------------------------------------------------------

    def start_saying(self, clip: Clip) -> Spoken:
        """Queue a clip for the mouth; return when its speech will start and end on the wire.

        A frame is stamped with the time it is sent, which is when the bridge can first have it.
        """
        payload = ulaw_encode(clip.samples)
        first_tick = self._ticks + len(self._mouth)  # the tick task is waiting to send tick ``_ticks``
        self._mouth.extend(payload[i : i + FRAME_SAMPLES].ljust(FRAME_SAMPLES, bytes([SILENCE_BYTE]))
                           for i in range(0, len(payload), FRAME_SAMPLES))
        self.timeline.add("caller", "speaks", f"{clip.text!r} ({clip.seconds:.1f} s clip)")
        onset = self._t_start + (first_tick + clip.speech_start // FRAME_SAMPLES) * TICK_S
        end = self._t_start + (first_tick + max(0, (clip.speech_end - 1) // FRAME_SAMPLES)) * TICK_S
        return Spoken(clip=clip, onset=onset, end=end)

    async def say(self, clip: Clip) -> Spoken:
        """Speak a clip in real time; return when its speech started and ended."""
        spoken = self.start_saying(clip)
        await self.finish_saying()
        self.timeline.add("caller", "speech ended")
        return spoken

    async def finish_saying(self) -> None:
        while self._mouth:
            await self._tick_event.wait()

    async def press(self, digit: str) -> None:
        self.timeline.add("caller", "presses", digit)
        await self._send(self.codec.dtmf(digit))

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def wait_agent_audio(self) -> float:
        """Wait until agent audio is playing; return when it started."""
        while not (self._playout and isinstance(self._playout[0], bytes)) and not self._closed.is_set():
            await self._tick_event.wait()
        return trio.current_time()

    async def wait_agent_done(self, quiet_s: float = 0.6) -> None:
        """Wait until the agent has said something and then been silent for ``quiet_s``."""
        await self.wait_agent_audio()
        await self.wait_agent_quiet(quiet_s)

    async def wait_agent_quiet(self, quiet_s: float) -> None:
        """Wait until the caller has heard no agent audio for ``quiet_s``."""
        while not self._closed.is_set():
            idle = not any(isinstance(x, bytes) for x in self._playout)
            if idle and trio.current_time() - self.ear.last_agent_frame_at >= quiet_s:
                return
            await self._tick_event.wait()

    async def wait_bridge_closed(self) -> None:
        await self._closed.wait()

    async def hang_up(self) -> None:
        self.timeline.add("caller", "hangs up")
        if not self._closed.is_set():
            await self._flush_media()
            await self._send(self.codec.stop())
        if self._ws is not None:
            await self._ws.aclose()

    # -- results ------------------------------------------------------------------------------

    def heard_ms_between(self, start: float, end: float) -> float:
        """Agent audio the caller heard in a time window (non-silent frames), in ms."""
        return float(sum(self.agent_ticks_between(start, end)) * 20)

    def agent_ticks_between(self, start: float, end: float) -> list[bool]:
        """For each 20 ms tick of a time window: whether the caller heard agent audio (a non-silent frame)."""
        first = round((start - self._t_start) / TICK_S)
        last = round((end - self._t_start) / TICK_S)
        return [f != SILENT_FRAME for f in self.right[max(0, first - 1) : max(0, last)]]

    def heard_digits(self) -> str:
        """DTMF digits in the audio the caller heard."""
        return detect_dtmf(ulaw_decode(b"".join(self.right)))

    def write_wav(self, path: Path) -> None:
        left = ulaw_decode(b"".join(self.left))
        right = ulaw_decode(b"".join(self.right))
        n = min(len(left), len(right))
        stereo: NDArray[np.int16] = np.empty(2 * n, dtype=np.int16)
        stereo[0::2], stereo[1::2] = left[:n], right[:n]
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(stereo.astype("<i2").tobytes())
