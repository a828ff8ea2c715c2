"""One call: a Media Streams socket from the provider, a ConversationRelay socket to the app.

Theory of operation. The call reads ``connected``/``start``, opens the app socket (the bridge is
its client, as Twilio is), sends ``setup``, and then runs five tasks in one nursery: the provider
reader (audio to the listener, ``dtmf``, ``mark`` echoes, ``stop``), the app reader (``text`` to
the chunker and speaker, ``end``), the speaker, the pacer and the listener's prompt sender. Whichever
side ends the call cancels the nursery; teardown closes both sockets, shielded and time-bounded.

Barge-in is cancellation (architecture principle 8): caller speech (or a key, under ``any``/``dtmf``)
while agent audio is queued or unheard cancels synthesis, drops queued audio, sends ``clear``, and
sends ``interrupt`` with what the mark ledger says was heard. Tokens that arrive after the interrupt
start a new talk cycle, as on Twilio, where the app is expected to stop its own stream.
``interruptSensitivity`` sets how much voiced speech it takes: ``high`` cuts at speech start.

Preemption (protocols.md 1.4) is the app's own cut: a new talk cycle (``text`` or ``play``) arriving
while everything still ahead of it is ``preemptible`` cuts that output the same way, reports the
fragment heard as ``tokensPlayed``, and sends no ``interrupt``. If anything ahead is not preemptible
the new cycle simply queues.

Input over agent speech that does not cut it is reported only as ``reportInputDuringAgentSpeech``
allows (Twilio's default since May 2025 is ``none``).

Bounds (``CallLimits``). Inbound audio is admitted at real time plus a small burst allowance; the
rest is dropped and counted, so a peer cannot queue unbounded work. Both sockets are pinged and
must answer within a deadline, and every send must complete within one: a peer that stops reading
ends the call as failed instead of holding it, so a call whose caller hung up is gone within seconds
whatever the app does. A call longer than ``max_duration_s`` is ended.

What callers and apps say is logged on the ``bridge.transcripts`` logger, which the process keeps
quiet unless it logs at DEBUG or ``logging.log_transcripts`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from numpy.typing import NDArray
from trio_websocket import ConnectionClosed, WebSocketConnection

from bridge.audio.budget import RealTimeBudget
from bridge.call.engines import SpeechEngines
from bridge.call.handoff import ERROR_RTP_TIMEOUT, ERROR_WEBSOCKET_ENDED, SessionReport
from bridge.call.listener import Listener, Recognition
from bridge.call.media import MediaCache, load_media
from bridge.call.playback import Playback
from bridge.call.settings import CallSettings, session_for_call
from bridge.call.speaker import Speaker, SpeechChunk
from bridge.engines.base import match_language
from bridge.protocols import media_streams as ms
from bridge.protocols import relay
from bridge.protocols import telnyx_media as tx
from bridge.protocols.fields import FrameError, parse_object
from bridge.protocols.marks import EchoKind, MarkLedger, fragment
from bridge.protocols.printable import escape_controls, printable
from bridge.protocols.provider import ProviderCodec, ProviderSniffer, StartEvent
from bridge.speech.chunker import TextChunker
from bridge.speech.endpointer import SAMPLE_RATE, SpeechEnded, SpeechStarted

logger = logging.getLogger(__name__)
transcript_logger = logging.getLogger("bridge.transcripts")

START_TIMEOUT_S = 10.0
TEARDOWN_TIMEOUT_S = 2.0
PROVIDER_IDLE_TIMEOUT_S = 10.0  # Twilio sends a media frame every 20 ms for as long as the call lasts
INBOUND_BURST_S = 2.0  # inbound audio ahead of real time that is still accepted (network jitter)
MAX_RECORDED_EVENTS = 10_000  # events kept per call for the timeline; counts are kept regardless
MAX_RECORDED_CHARS = 200  # of each text in a recorded event (a play URL may be 8 K characters)
MAX_REFUSED_LANGUAGES = 32  # distinct unknown token languages reported once each
MAX_OPEN_CYCLES = 64  # talk cycles whose first-token time waits for their first audio
WARNINGS_PER_KIND = 10  # per call: more warnings about the same kind of bad input are only counted
# interruptSensitivity -> voiced speech needed before a barge-in (high: at speech start, ~60 ms)
SENSITIVITY_SUSTAIN_MS = {"high": 0, "medium": 240, "low": 480}
SETUP_PARAMETERS = {"from": "from_", "to": "to", "direction": "direction", "callerName": "caller_name",
                    "forwardedFrom": "forwarded_from", "parentCallSid": "parent_call_sid",
                    "callType": "call_type", "callStatus": "call_status"}


def closed(side: str, exc: ConnectionClosed) -> str:
    """The end reason for a call whose ``side`` socket closed."""
    return f"{side} socket closed ({exc.reason.code if exc.reason else '?'})"


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        call_sid, stream_sid = (escape_controls(str(extra.get(k, "-")))[:64] for k in ("call_sid", "stream_sid"))
        return f"[{call_sid} {stream_sid}] {msg}", kwargs


@dataclass(frozen=True)
class CallLimits:
    """What a call may cost (the ``[server]`` keys of the same names)."""

    max_duration_s: float = 14400.0  # Twilio's own maximum call length: 4 hours
    ping_interval_s: float = 10.0
    pong_timeout_s: float = 10.0
    send_timeout_s: float = 5.0


@dataclass
class CallStats:
    """What happened on a call, for logs, the demo timeline and benchmarks."""

    call_sid: str = ""
    stream_sid: str = ""
    session_id: str = ""
    end_reason: str = ""
    invalid_provider_frames: int = 0
    invalid_app_frames: int = 0
    frames_sent: int = 0
    max_lead_ms: float = 0.0
    speculations_used: int = 0
    speculations_wasted: int = 0
    inbound_dropped: int = 0  # inbound media frames dropped for arriving faster than real time
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)  # the first MAX_RECORDED_EVENTS
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, name: str, **data: Any) -> None:
        self.counts[name] += 1
        if len(self.events) < MAX_RECORDED_EVENTS:
            data = {k: v[:MAX_RECORDED_CHARS] if isinstance(v, str) else v for k, v in data.items()}
            self.events.append((trio.current_time(), name, data))

    def count(self, name: str) -> int:
        return self.counts[name]

    def summary(self) -> str:
        return (f"{self.count('prompt')} prompt(s), {self.count('interrupt')} interrupt(s), "
                f"{self.frames_sent} frames sent (lead up to {self.max_lead_ms:.0f} ms), speculative "
                f"recognitions {self.speculations_used} used / {self.speculations_wasted} discarded, "
                f"{self.invalid_provider_frames + self.invalid_app_frames} invalid frame(s), "
                f"{self.inbound_dropped} inbound frame(s) dropped")


class Call:
    def __init__(self, provider_ws: WebSocketConnection, engines: SpeechEngines, settings: CallSettings,
                 start: StartEvent, codec: ProviderCodec, media_cache: MediaCache | None = None, *,
                 limits: CallLimits | None = None) -> None:
        self.provider_ws = provider_ws
        self.limits = limits or CallLimits()
        self._inbound = RealTimeBudget(SAMPLE_RATE, burst_s=INBOUND_BURST_S)
        self.engines = engines
        self.started_at = trio.current_time()
        self.settings = settings
        self.start = start
        self.codec = codec
        self.stats = CallStats(call_sid=start.call_sid, stream_sid=start.stream_sid)
        ids = {"call_sid": start.call_sid, "stream_sid": start.stream_sid}
        self.log = CallLogger(logger, ids)
        self.transcript_log = CallLogger(transcript_logger, ids)
        self.session, self._refused_parameters = session_for_call(settings.session, start.custom_parameters,
                                                                  engines.languages)
        self._refused_parameters.extend(start.dropped_parameters)  # over the codec's size limits
        self.tts_language = self.session.speech_language  # switched by "language" messages
        self.languages = self._call_languages(start.custom_parameters.get("languages"))
        self.handoff_data: str | None = None
        self._media_cache = media_cache if media_cache is not None else MediaCache(settings.play.cache_bytes)
        self.relay = relay.RelayBridge()
        self.ledger = MarkLedger()
        self.playback = Playback(self._send_provider, codec, self.ledger, lead_ms=settings.playback.lead_ms)
        self.speaker = Speaker(engines, self.playback, max_ahead_ms=settings.playback.max_synthesized_ahead_ms,
                               logger=self.log, load_media=self._load_media, on_play_error=self._on_play_error)
        endpointer = settings.endpointer
        if self.session.speech_timeout_ms is not None:
            endpointer = dataclasses.replace(endpointer, end_of_speech_silence_ms=self.session.speech_timeout_ms)
        self.listener = Listener(engines, endpointer, language=self.session.recognition_language,
                                 hints=self.session.hints,
                                 on_speech_started=self._on_speech_started, on_speech_ended=self._on_speech_ended,
                                 on_utterance=self._on_utterance, logger=self.log,
                                 on_speech_sustained=self._on_speech_sustained,
                                 sustain_ms=SENSITIVITY_SUSTAIN_MS[self.session.interrupt_sensitivity],
                                 on_partial=self._on_partial if self.session.partial_prompts else None)
        self.chunker = TextChunker()
        self.cycle = 1
        self._cycle_open = False  # text of the current cycle has arrived without its last: true
        self._held_language = self.tts_language  # the voice of the text the chunker holds
        self._cycle_first_token: dict[int, float] = {}
        self._agent_speaking = False
        self._preemptible: dict[int, bool] = {}  # talk cycles with output ahead -> may a new one cut them
        # Barge-ins so far. An app message whose handling spans a barge-in arrived before the interrupt,
        # so it is dropped with everything else that was queued.
        self._cuts = 0
        self._app_close = relay.CLOSE_NORMAL
        self._app_stuck = False  # a send to the app timed out: the socket may hold half a frame
        self._input_warnings: Counter[str] = Counter()
        # When each reader last finished handling a frame; inf while it handles one (see _dispatching).
        self._busy_until = {"provider": -math.inf, "app": -math.inf}
        self._refused_token_languages: set[str] = set()
        self.app_ws: WebSocketConnection | None = None
        self._scope = trio.CancelScope()
        self.playback.on_first_audio = self._on_first_audio

    # -- ending -------------------------------------------------------------------------------

    def warn_input(self, kind: str, msg: str, *args: object) -> None:
        """A warning about bad peer input; after ``WARNINGS_PER_KIND`` of one kind they are only counted,
        so a peer cannot flood the log (the call's end says how many were left out)."""
        self._input_warnings[kind] += 1
        if self._input_warnings[kind] <= WARNINGS_PER_KIND:
            self.log.warning(msg, *args)

    def end(self, reason: str) -> None:
        """End the call; the first reason given is the one kept. Teardown closes both sockets."""
        if not self.stats.end_reason:
            self.stats.end_reason = reason
        self._scope.cancel()

    # -- sending: the only two places a closed socket is handled ---------------------------------

    async def _send_provider(self, frame: str) -> None:
        try:
            with trio.fail_after(self.limits.send_timeout_s):
                await self.provider_ws.send_message(frame)
        except ConnectionClosed as exc:
            self.end(closed("provider", exc))
        except trio.TooSlowError:
            self.log.warning("a send to the provider took over %.1f s; ending the call", self.limits.send_timeout_s)
            self.end("provider stopped reading")

    async def send_app(self, msg: relay.RelayMessage | str) -> None:
        assert self.app_ws is not None
        if self._app_stuck:
            return
        try:
            with trio.fail_after(self.limits.send_timeout_s):
                await self.app_ws.send_message(msg if isinstance(msg, str) else relay.serialize_relay_message(msg))
        except ConnectionClosed as exc:
            self.end(closed("app", exc))
        except trio.TooSlowError:
            self._app_stuck = True
            self.log.warning("a send to the app took over %.1f s; ending the call", self.limits.send_timeout_s)
            self.end("app stopped reading")

    async def _keep_alive(self, ws: WebSocketConnection, side: str) -> None:
        """Ping ``side`` every interval; no pong within the deadline ends the call (a half-open socket).

        Not while this call held up that side's reader during the wait (see ``_dispatching``): the pong
        may be waiting behind our own backpressure. The next ping asks again.
        """
        while True:
            await trio.sleep(self.limits.ping_interval_s)
            sent_at = trio.current_time()
            with trio.move_on_after(self.limits.pong_timeout_s) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed as exc:
                    self.end(closed(side, exc))
                    return
            if waited.cancelled_caught and self._busy_until[side] >= sent_at:
                self.log.debug("no pong from the %s yet, but its reader was held up by this call", side)
            elif waited.cancelled_caught:
                self.log.warning("no pong from the %s within %.1f s; ending the call", side,
                                 self.limits.pong_timeout_s)
                self.end(f"{side} did not answer a ping")
                return

    async def _limit_duration(self) -> None:
        await trio.sleep(self.limits.max_duration_s)
        self.log.warning("the call reached server.max_call_duration_s (%.0f s); ending it", self.limits.max_duration_s)
        self.end("maximum call duration reached")

    # -- the call -----------------------------------------------------------------------------

    async def run(self, app_ws: WebSocketConnection) -> None:
        """Run the call until either side ends it; always closes the app socket."""
        self.app_ws = app_ws
        try:
            with self._scope:
                setup = self._setup_message()
                self.stats.session_id = setup.session_id
                await self.send_app(setup)
                self.log.info("call started; session %s", setup.session_id)
                for problem in self._refused_parameters[:WARNINGS_PER_KIND]:  # a flood of them is one line more
                    self.log.warning("session parameter refused: %s", problem)
                    await self.send_app(relay.Error(f"Invalid session parameter: {problem}"))
                if len(self._refused_parameters) > WARNINGS_PER_KIND:
                    more = len(self._refused_parameters) - WARNINGS_PER_KIND
                    self.log.warning("%d more session parameter(s) refused", more)
                    await self.send_app(relay.Error(f"Invalid session parameters: {more} more refused"))
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.listener.run)
                    nursery.start_soon(self.speaker.run)
                    nursery.start_soon(self.playback.run)
                    nursery.start_soon(self._read_provider)
                    nursery.start_soon(self._read_app)
                    nursery.start_soon(self._keep_alive, self.provider_ws, "provider")
                    nursery.start_soon(self._keep_alive, app_ws, "app")
                    nursery.start_soon(self._limit_duration)
                    if self.session.welcome_greeting:
                        await self._speak(self.session.welcome_greeting, last=True,
                                          interruptible=self.session.welcome_greeting_interruptible)
        finally:
            self.stats.frames_sent = self.playback.frames_sent
            self.stats.max_lead_ms = self.playback.max_lead_s * 1000
            self.stats.speculations_used = self.listener.speculations_used
            self.stats.speculations_wasted = self.listener.speculations_wasted
            left_out = {k: n - WARNINGS_PER_KIND for k, n in self._input_warnings.items() if n > WARNINGS_PER_KIND}
            if left_out:
                self.log.warning("further warnings not logged: %s",
                                 ", ".join(f"{n} {kind}" for kind, n in sorted(left_out.items())))
            if self.stats.inbound_dropped:
                self.log.warning("%d inbound media frame(s) arrived faster than real time and were dropped",
                                 self.stats.inbound_dropped)
            with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                report = self.session_report()
                if (report.status == "failed" and not app_ws.closed and self._app_close == relay.CLOSE_NORMAL
                        and not self._app_stuck):
                    # A session-level failure is reported to the app before its socket closes.
                    await self.send_app(relay.Error(f"Session ended ({report.error_code}): {self.stats.end_reason}"))
                await app_ws.aclose(*self._app_close)

    def _setup_message(self) -> relay.Setup:
        if isinstance(self.start, tx.TelnyxStart):
            return tx.telnyx_setup(self.start, session_id=str(uuid.uuid4()))  # Telnyx session ids are UUIDs
        params = self.start.custom_parameters
        known = {attr: params[name] for name, attr in SETUP_PARAMETERS.items() if name in params}
        return relay.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=self.start.call_sid,
                           account_sid=self.start.account_sid, custom_parameters=dict(params), **known)

    async def _read_provider(self) -> None:
        while True:
            try:
                with trio.fail_after(PROVIDER_IDLE_TIMEOUT_S):
                    raw = await self.provider_ws.get_message()
            except ConnectionClosed as exc:
                self.end(closed("provider", exc))
                return
            except trio.TooSlowError:
                self.log.warning("no frame from the provider for %.0f s; ending the call", PROVIDER_IDLE_TIMEOUT_S)
                self.end("provider went silent")
                return
            with self._dispatching("provider"):
                if not await self._on_provider_frame(raw):
                    return

    async def _on_provider_frame(self, raw: str | bytes) -> bool:
        """Handle one frame from the provider; False once the stream has ended."""
        for event in self.codec.feed(raw):
            match event:
                case ms.Media(track="inbound"):
                    if self._inbound.admit(len(event.payload), trio.current_time()):
                        await self.listener.feed(event.payload)
                    else:
                        self.stats.inbound_dropped += 1
                case ms.Media():
                    pass
                case ms.Dtmf():
                    await self._on_dtmf(event.digit)
                case ms.Mark():
                    await self._on_mark_echo(event.name)
                case ms.Stop():
                    self.end("provider sent stop")
                    return False
                case tx.ProviderError():
                    self.warn_input("provider error frames", "provider error frame: %s %s: %s", event.code,
                                    printable(event.title), printable(event.detail))
                case ms.InvalidFrame():
                    self.stats.invalid_provider_frames += 1
                    self.warn_input("invalid provider frames", "dropped an invalid Media Streams frame: %s: %s",
                                    event.reason, printable(event.raw, 120))
                case _:
                    self.warn_input("unexpected provider events", "unexpected Media Streams event %s",
                                    type(event).__name__)
        return True

    async def _read_app(self) -> None:
        assert self.app_ws is not None
        while True:
            try:
                raw = await self.app_ws.get_message()
            except ConnectionClosed as exc:
                self.log.warning("the app closed its socket; ending the call")
                self.end(closed("app", exc))
                return
            with self._dispatching("app"):
                if not await self._on_app_frame(raw):
                    return

    async def _on_app_frame(self, raw: str | bytes) -> bool:
        """Handle one frame from the app; False once the session has ended."""
        msg = self.relay.receive(raw)
        match msg:
            case relay.InvalidAppFrame():
                self.stats.invalid_app_frames += 1
                self.warn_input("invalid app frames", "invalid app frame: %s", msg.reason)
                await self.send_app(msg.reply)
                if msg.close is not None:
                    self.log.warning("closing the app socket: %s", msg.close[1])
                    self._app_close = msg.close  # teardown closes it, shielded and time-bounded
                    self.end("app sent too many malformed messages")
                    return False
            case relay.Text():
                await self._on_text(msg)
            case relay.End():
                self.log.info("app ended the session (handoffData %s)",
                              "present" if msg.handoff_data else "absent")
                self.stats.record("end", handoff_data=msg.handoff_data)
                self.handoff_data = msg.handoff_data
                self.end("app sent end")
                return False
            case relay.SendDigits():
                await self._on_send_digits(msg.digits)
            case relay.Play():
                await self._on_play(msg)
            case relay.Language():
                await self._on_language(msg)
        return True

    @contextmanager
    def _dispatching(self, side: str) -> Iterator[None]:
        """Mark ``side``'s reader as busy with a frame: while it waits on this call (a full speech queue, say),
        the socket's library cannot read that peer's pongs either, so a late pong is not the peer's fault."""
        self._busy_until[side] = math.inf
        try:
            yield
        finally:
            self._busy_until[side] = trio.current_time()

    @property
    def provider(self) -> str:
        return provider_of(self.start)

    def session_report(self) -> SessionReport:
        """How the session ended, for the session-ended callback (protocols.md 2.6)."""
        reason = self.stats.end_reason
        error: tuple[int, str] | None = None
        if reason == "app sent end":
            status = "ended"
        elif reason == "provider sent stop" or reason.startswith("provider socket closed"):
            status = "completed"
        else:
            status, error = "failed", ERROR_RTP_TIMEOUT if reason == "provider went silent" else ERROR_WEBSOCKET_ENDED
        return SessionReport(session_id=self.stats.session_id, call_sid=self.start.call_sid,
                             account_sid=self.start.account_sid, status=status,
                             duration_s=trio.current_time() - self.started_at, handoff_data=self.handoff_data,
                             error_code=error[0] if error else None, error_message=error[1] if error else "")

    # -- languages ----------------------------------------------------------------------------

    def _call_languages(self, wanted: object) -> tuple[str, ...]:
        """The languages this call may switch to: the ``languages`` parameter (the ``<Language>`` elements
        of the call, space- or comma-separated codes), else every language the config declares. The
        session's own languages are always among them."""
        declared = self.engines.languages
        if not isinstance(wanted, str) or not wanted.strip():
            return declared
        chosen = [self.session.language, self.session.speech_language, self.session.recognition_language]
        for code in wanted.replace(",", " ").split():
            found = match_language(code, declared)
            if found is None:
                self._refused_parameters.append(
                    f"languages: {printable(code, 64)} is not a declared language ({', '.join(declared)}); left out")
            else:
                chosen.append(found)
        return tuple(dict.fromkeys(c for c in chosen if match_language(c, declared)))

    def _declared(self, code: str) -> str | None:
        return match_language(code, self.languages)

    async def _refuse_language(self, field_name: str, code: str) -> None:
        problem = (f"{field_name} {code!r} is not one of this session's languages "
                   f"({', '.join(self.languages)}); the language is unchanged")
        self.warn_input("refused languages", "%s", problem)
        await self.send_app(relay.Error(problem))

    async def _on_language(self, msg: relay.Language) -> None:
        """Switch the voice and/or the recognition language among the declared languages (2.5, rows 3)."""
        for field_name, code in (("ttsLanguage", msg.tts_language),
                                 ("transcriptionLanguage", msg.transcription_language)):
            if code is None:
                continue
            found = self._declared(code)
            if found is None:
                await self._refuse_language(field_name, code)
            elif field_name == "ttsLanguage":
                self.tts_language = found
            else:
                self.listener.language = found
        self.stats.record("language", tts=self.tts_language, transcription=self.listener.language)
        self.log.info("language: speaking %s, recognising %s", self.tts_language, self.listener.language)

    async def _token_language(self, lang: str | None) -> str:
        """The voice for a text token: its own ``lang`` (highest precedence, 2.5 row 4) or the session's."""
        if lang is None:
            return self.tts_language
        found = self._declared(lang)
        if found is None:
            # Once per code, not once per token of a stream (and only for the first few codes).
            if lang not in self._refused_token_languages and len(self._refused_token_languages) < MAX_REFUSED_LANGUAGES:
                self._refused_token_languages.add(lang)
                await self._refuse_language("lang", lang)
            return self.tts_language
        return found

    # -- play -----------------------------------------------------------------------------------

    async def _load_media(self, url: str) -> NDArray[np.int16]:
        return await load_media(url, self.settings.play, self._media_cache)

    async def _on_play(self, msg: relay.Play) -> None:
        """Queue a media URL behind what the app has said so far, as a talk cycle of its own."""
        self.stats.record("play", source=msg.source, loop=msg.loop)
        self.log.info("play %s (x%d) queued", printable(msg.source, 120), msg.loop)
        chunk = SpeechChunk(0, "", final=True, play=msg.source, loop=msg.loop,
                            interruptible=self._interruptible(msg.interruptible))
        await self._queue_cycle(chunk, preemptible=self.session.preemptible if msg.preemptible is None
                                else msg.preemptible, preempts=True)

    async def _on_play_error(self, chunk: SpeechChunk, problem: str) -> None:
        self.warn_input("play errors", "%s", problem)
        self.stats.record("play_error", source=chunk.play, problem=problem)
        await self.send_app(relay.Error(f"Cannot play {chunk.play}: {problem}"))

    # -- app text to speech -------------------------------------------------------------------

    def _interruptible(self, flag: bool | None) -> str:
        """A message's own ``interruptible`` (true: any input, false: none), else the session's."""
        if flag is None:
            return self.session.interruptible
        return "any" if flag else "none"

    async def _on_text(self, msg: relay.Text) -> None:
        cuts = self._cuts
        language = await self._token_language(msg.lang)
        await self._speak(msg.token, last=msg.last, interruptible=self._interruptible(msg.interruptible),
                          preemptible=msg.preemptible, language=language, cuts=cuts)

    async def _speak(self, token: str, *, last: bool, interruptible: str, preemptible: bool | None = None,
                     language: str = "", cuts: int | None = None) -> None:
        cuts = self._cuts if cuts is None else cuts
        cycle = self.cycle
        language = language or self.tts_language
        if not self._cycle_open:
            await self._preempt(cycle)
        elif language != self._held_language:
            # The voice changes mid-cycle (a "language" message, or a token's own lang): text the chunker
            # holds back for a boundary came before the change, so it is spoken in the voice it was sent in.
            for text in self.chunker.flush():
                await self.speaker.submit(SpeechChunk(cycle, text, final=False, interruptible=interruptible,
                                                      language=self._held_language))
        if self._cuts != cuts:
            return  # a barge-in came while this token was being handled: it was queued before the interrupt
        self._held_language = language
        if token.strip() and (preemptible is not None or cycle not in self._preemptible):
            self._preemptible[cycle] = self.session.preemptible if preemptible is None else preemptible
        if cycle not in self._cycle_first_token and token.strip():
            if len(self._cycle_first_token) >= MAX_OPEN_CYCLES:  # cycles that never reached the caller
                self._cycle_first_token.pop(next(iter(self._cycle_first_token)))
            self._cycle_first_token[cycle] = trio.current_time()
            self.stats.record("first_token", cycle=cycle)
        chunks = self.chunker.feed(token)
        self._cycle_open = not last
        if last:
            chunks += self.chunker.flush()
            self.cycle += 1
        if last and not chunks:
            chunks = [""]  # still close the cycle with its final mark
        for i, text in enumerate(chunks):
            # A barge-in during one of these awaits moves the speaker past this cycle: the rest is dropped.
            await self.speaker.submit(SpeechChunk(cycle, text, final=last and i == len(chunks) - 1,
                                                  interruptible=interruptible, language=language))

    async def _on_send_digits(self, digits: str) -> None:
        """Queue DTMF tones behind whatever the app has said so far, as a talk cycle of their own."""
        self.stats.record("send_digits", digits=digits)
        self.log.info("sendDigits %r queued", digits)
        # Only text and play may be preempted, and only they preempt.
        await self._queue_cycle(SpeechChunk(0, "", final=True, digits=digits, interruptible=self.session.interruptible),
                                preemptible=False, preempts=False)

    async def _queue_cycle(self, chunk: SpeechChunk, *, preemptible: bool, preempts: bool) -> None:
        """Queue ``chunk`` (a play or digits) as a talk cycle of its own, behind what the app said before."""
        cuts = self._cuts
        if self._cycle_open:
            await self._speak("", last=True, interruptible=self.session.interruptible, cuts=cuts)
        if preempts:
            await self._preempt(self.cycle)
        if self._cuts != cuts:
            return  # queued before a barge-in that came meanwhile: dropped with the rest
        cycle, self.cycle = self.cycle, self.cycle + 1
        self._preemptible[cycle] = preemptible
        await self.speaker.submit(dataclasses.replace(chunk, cycle=cycle))

    async def _preempt(self, cycle: int) -> None:
        """A new talk cycle is starting: cut what is ahead of it if all of that is preemptible."""
        if not self.agent_active:
            self._preemptible.clear()
            return
        ahead = [flag for c, flag in self._preemptible.items() if c < cycle]
        if not ahead or not all(ahead):
            return
        now = trio.current_time()
        heard, fragment = self.ledger.heard(now), self._fragment_heard(now)
        self._preemptible.clear()
        dropped = self.speaker.cancel(keep_from_cycle=cycle)
        await self.playback.clear()
        self.stats.record("preempted", heard=heard.text, fragment=fragment)
        self._cycle_first_token = {c: t for c, t in self._cycle_first_token.items() if c >= cycle}
        self.log.info("preempted by a new message: %d chunk(s) dropped", dropped)
        self.transcript_log.info("preempted: heard %r", heard.text)
        if fragment:
            await self._info("tokens-played", "tokensPlayed", fragment)
        await self._set_agent_speaking(False)

    def _on_first_audio(self, cycle: int, at: float) -> None:
        first_token = self._cycle_first_token.pop(cycle, None)
        if first_token is not None:
            self.log.info("cycle %d: first text token to first audio frame %.0f ms", cycle,
                          (at - first_token) * 1000)
        self.stats.record("first_audio", cycle=cycle)

    async def _on_mark_echo(self, name: str) -> None:
        echo = self.ledger.echo(name, trio.current_time())
        self.playback.notify()
        if echo.kind is EchoKind.UNKNOWN:
            self.warn_input("unknown mark echoes", "echo of unknown mark %s ignored", printable(name))
        mark = echo.mark
        if echo.kind is not EchoKind.PLAYED or mark is None:
            return
        for cycle in [c for c in self._preemptible if c < mark.cycle or (c == mark.cycle and mark.final)]:
            del self._preemptible[cycle]  # heard in full
        if mark.chunk:
            self.stats.record("played", cycle=mark.cycle, text=mark.chunk)
            await self._info("tokens-played", "tokensPlayed", mark.chunk)
        if mark.final:
            if not self.agent_active:
                await self._set_agent_speaking(False)
        elif not mark.chunk:  # a cycle's start mark: the caller starts hearing the cycle now
            await self._set_agent_speaking(True)

    async def _info(self, event: str, name: str, value: str) -> None:
        if self.session.subscribed(event):
            await self.send_app(relay.Info(name, value))

    async def _set_agent_speaking(self, on: bool) -> None:
        if on != self._agent_speaking:
            self._agent_speaking = on
            await self._info("speaker-events", "agentSpeaking", "on" if on else "off")

    # -- caller input -------------------------------------------------------------------------

    @property
    def agent_active(self) -> bool:
        return self.speaker.active or self.playback.active

    def _interruptible_by(self, kind: str) -> bool:
        """Whether ``kind`` of caller input may cut what the caller hears now (or is about to hear)."""
        # The first mark still to come back closes the audio the caller hears now. Between marks (a
        # chunk's audio is paced out before its closing mark is sent) that mark is still in our queue.
        mark = self.ledger.first_pending() or self.playback.first_queued_mark()
        current = self.speaker.current
        if mark is not None:
            setting = mark.interruptible
        elif current is not None:
            setting = current.interruptible
        else:
            setting = self.session.interruptible
        return setting in (kind, "any")

    async def _on_speech_started(self, event: SpeechStarted) -> None:
        self.stats.record("speech_started", start=event.start)
        await self._info("speaker-events", "clientSpeaking", "on")
        if self.agent_active:
            self.listener.report = self.session.reports("speech")  # unless it turns into a barge-in

    async def _on_speech_sustained(self) -> None:
        if self.agent_active and self._interruptible_by("speech"):
            self.listener.report = True
            await self.barge_in("speech")

    async def _on_speech_ended(self, event: SpeechEnded) -> None:
        await self._info("speaker-events", "clientSpeaking", "off")

    async def _on_dtmf(self, digit: str) -> None:
        self.stats.record("dtmf", digit=digit)
        report = self.session.dtmf_detection
        if self.agent_active and self._interruptible_by("dtmf"):
            await self.barge_in("dtmf")
        elif self.agent_active and not self.session.reports("dtmf"):
            report = False
            self.log.info("key %s over agent speech not reported", digit)
        if report:
            await self.send_app(relay.DtmfDigit(digit))

    def _fragment_heard(self, now: float) -> str:
        """The words of the chunk being heard that got through (read before a ``clear``)."""
        cycle, position = self.ledger.position(now)
        if cycle is None:
            return ""
        mark = self.ledger.first_pending()
        if mark is not None:
            return fragment(mark.chunk, mark.start, mark.position, position) if mark.cycle == cycle else ""
        queued = self.playback.first_queued_mark()  # the chunk is still being paced out
        if queued is None or queued.cycle != cycle:
            return ""
        start = self.ledger.chunk_start(cycle)
        return fragment(queued.chunk, start, start + queued.samples, position)

    async def barge_in(self, cause: str) -> None:
        now = trio.current_time()
        heard, cut = self.ledger.heard(now), self._fragment_heard(now)
        utterance = " ".join(t for t in (heard.text, cut) if t)
        self._cuts += 1
        self.cycle += 1
        self._cycle_open = False
        self._preemptible.clear()
        self.chunker.reset()
        dropped = self.speaker.cancel(keep_from_cycle=self.cycle)
        await self.playback.clear()
        self.stats.record("interrupt", cause=cause, heard=utterance, duration_ms=heard.duration_ms)
        self._cycle_first_token = {c: t for c, t in self._cycle_first_token.items() if c >= self.cycle}
        self.log.info("barge-in by %s after %.0f ms of agent speech; %d chunk(s) dropped", cause,
                      heard.duration_ms, dropped)
        self.transcript_log.info("barge-in: heard %r", utterance)
        if cut:  # the fragment of the chunk cut off, as Twilio reports it just before the interrupt
            await self._info("tokens-played", "tokensPlayed", cut)
        await self.send_app(relay.Interrupt(utterance, heard.duration_ms))
        await self._set_agent_speaking(False)

    async def _on_utterance(self, utt: Recognition) -> None:
        self.stats.record("prompt", text=utt.text, speech_end=utt.speech_end)
        self.log.info("prompt of %d character(s) (recognised %.0f ms after the end-of-speech wait)", len(utt.text),
                      max(0.0, utt.finished_at - utt.ended_at) * 1000)
        self.transcript_log.info("prompt %r", utt.text)
        await self.send_app(relay.Prompt(utt.text, utt.language or self.listener.language, last=True))

    async def _on_partial(self, text: str, language: str) -> None:
        self.stats.record("partial", text=text)
        self.transcript_log.debug("partial prompt %r", text)
        await self.send_app(relay.Prompt(text, language or self.listener.language, last=False))


def provider_of(start: StartEvent) -> str:
    """The provider whose stream began with ``start``."""
    return "telnyx" if isinstance(start, tx.TelnyxStart) else "twilio"


def _is_start(raw: str | bytes) -> bool:
    try:
        return parse_object(raw).get("event") == "start"
    except FrameError:
        return False


async def open_call(provider_ws: WebSocketConnection,
                    timeout_s: float = START_TIMEOUT_S) -> tuple[ProviderCodec, StartEvent | None]:
    """Read the stream's opening frames; return the provider's codec and the ``start`` (None if it never came)."""
    sniffer = ProviderSniffer()
    ignored = 0
    with trio.move_on_after(timeout_s):
        while True:
            try:
                raw = await provider_ws.get_message()
            except ConnectionClosed:
                return sniffer.codec or ms.MediaStreamsBridge(), None
            for event in sniffer.feed(raw):
                if isinstance(event, ms.Start | tx.TelnyxStart):
                    assert sniffer.codec is not None
                    logger.info("%s stream %s started", sniffer.provider, printable(event.stream_sid, 64))
                    return sniffer.codec, event
                if isinstance(event, ms.InvalidFrame) and _is_start(raw):
                    # A stream the bridge cannot serve (e.g. a codec it does not speak): no later frame fixes it.
                    logger.error("refused the stream's 'start': %s; closing the stream", event.reason)
                    return sniffer.codec or ms.MediaStreamsBridge(), None
                if not isinstance(event, ms.Connected):
                    ignored += 1
                    if ignored <= WARNINGS_PER_KIND:  # a peer cannot flood the log before its start either
                        logger.warning("ignored before 'start': %s", event.reason if isinstance(event, ms.InvalidFrame)
                                       else type(event).__name__)
    logger.warning("no 'start' within %.1f s (%d frame(s) ignored); closing the stream", timeout_s, ignored)
    return sniffer.codec or ms.MediaStreamsBridge(), None
