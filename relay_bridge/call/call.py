"""One call: a provider's media socket, a ConversationRelay socket to the app, and the tasks between.

Theory of operation. The call sends ``setup`` to the app (the bridge is its client, as Twilio is)
and runs, in one nursery: the provider's reader (audio to the hearing stage's ``FrameQueue``; keys,
mark echoes and ``stop`` to the inbox), the app's reader (messages to the inbox, held back while
that queue is full), the hearing stage, the speaker, the pacer, the app's writer, two keep-alives and
the duration limit. One task, ``_converse``, takes the inbox's events one at a time to the
``Conversation`` (``relay_bridge.conversation``), which decides, and carries out its actions at once: none
of them waits (messages to the app go to the writer's queue, chunks to the speaker, audio and marks
to the pacer). The call itself decides nothing about the conversation.

Whichever side ends the call cancels the nursery; teardown sends what the app is still owed and closes
its socket, shielded and time-bounded.

Bounds (``CallLimits``). Inbound audio is admitted at real time plus a small burst allowance; the
rest is dropped and counted, so a peer cannot queue unbounded work. Both sockets are pinged and
must answer within a deadline, and every send must complete within one (``links.py``): a peer that
stops reading ends the call as failed instead of holding it, so a call whose caller hung up is gone
within seconds whatever the app does. A call longer than ``max_duration_s`` is ended.

What callers and apps say is logged on the ``relay_bridge.transcripts`` logger, which the process keeps
quiet unless it logs at DEBUG or ``logging.log_transcripts`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from relay_bridge.audio.budget import RealTimeBudget
from relay_bridge.audio.telephony import SAMPLE_RATE_HZ
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.hearing import Hearing
from relay_bridge.call.inbox import Inbox
from relay_bridge.call.links import AppLink, Lifetime, Link
from relay_bridge.call.meter import CallMeter
from relay_bridge.call.playback import Playback
from relay_bridge.call.record import WARNINGS_PER_KIND, CallLogger, CallStats
from relay_bridge.call.speaker import Speaker
from relay_bridge.conversation import events as ev
from relay_bridge.conversation.machine import Conversation
from relay_bridge.net.handoff import ERROR_RTP_TIMEOUT, ERROR_WEBSOCKET_ENDED, SessionReport
from relay_bridge.net.media import MediaCache, load_media
from relay_bridge.protocols import media_streams as ms
from relay_bridge.protocols import relay
from relay_bridge.protocols import telnyx_media as tx
from relay_bridge.protocols.printable import printable
from relay_bridge.protocols.provider import ProviderCodec, StartEvent
from relay_bridge.settings import CallLimits, CallSettings, session_for_call

logger = logging.getLogger(__name__)
transcript_logger = logging.getLogger("relay_bridge.transcripts")

TEARDOWN_TIMEOUT_S = 2.0
PROVIDER_IDLE_TIMEOUT_S = 10.0  # Twilio sends a media frame every 20 ms for as long as the call lasts
INBOUND_BURST_S = 2.0  # inbound audio ahead of real time that is still accepted (network jitter)
# interruptSensitivity -> voiced speech needed before a barge-in (high: at speech start, ~60 ms)
SENSITIVITY_SUSTAIN_MS = {"high": 0, "medium": 240, "low": 480}


class Call:
    def __init__(self, provider_ws: WebSocketConnection, engines: SpeechEngines, settings: CallSettings,
                 start: StartEvent, codec: ProviderCodec, media_cache: MediaCache | None = None, *,
                 limits: CallLimits | None = None) -> None:
        self.start = start
        self.codec = codec
        self.limits = limits or CallLimits()
        self.started_at = trio.current_time()
        self.stats = CallStats(call_sid=start.call_sid, stream_sid=start.stream_sid)
        ids = {"call_sid": start.call_sid, "stream_sid": start.stream_sid}
        self.log = CallLogger(logger, ids)
        self.transcript_log = CallLogger(transcript_logger, ids)
        self.metrics = engines.metrics
        self.meter = CallMeter(engines.metrics, self.log, self.started_at)
        session, refused = session_for_call(settings.session, start.custom_parameters, engines.languages)
        refused.extend(start.dropped_parameters)  # over the codec's size limits
        self.conversation = Conversation(session, declared=engines.languages,
                                         languages=start.custom_parameters.get("languages"), refused=refused,
                                         backchannels=settings.backchannels)
        self.handoff_data: str | None = None
        self._inbound = RealTimeBudget(SAMPLE_RATE_HZ, burst_s=INBOUND_BURST_S)
        media_cache = media_cache if media_cache is not None else MediaCache(settings.play.cache_bytes)
        self.relay = relay.RelayBridge()
        self.inbox: Inbox[ev.Event] = Inbox()
        self.lifetime = Lifetime(self.stats)
        self.to_provider = Link(provider_ws, "provider", self.lifetime, self.limits, self.log)
        self.to_app: AppLink | None = None
        self.playback = Playback(self.to_provider.send, codec, self.inbox, lead_ms=settings.playback.lead_ms,
                                 late=engines.metrics.outbound_late)
        self.speaker = Speaker(engines, self.playback, self.inbox, logger=self.log,
                               max_ahead_ms=settings.playback.max_synthesized_ahead_ms,
                               load_media=partial(load_media, settings=settings.play, cache=media_cache))
        # With the end-of-turn model a turn ends when it says so, or after the longer silence at most
        # (speechTimeout, when the call sets it, is that limit); without it, after the silence.
        endpointer = settings.endpointer
        smart = endpointer.turn_detection == "smart" and engines.turn_model is not None
        silence_ms = session.speech_timeout_ms or (endpointer.max_turn_silence_ms if smart
                                                   else endpointer.end_of_speech_silence_ms)
        endpointer = dataclasses.replace(endpointer, end_of_speech_silence_ms=silence_ms)
        self.hearing = Hearing(engines, endpointer, self.inbox, language=session.recognition_language,
                               hints=session.hints, logger=self.log, partials=session.partial_prompts,
                               sustain_ms=SENSITIVITY_SUSTAIN_MS[session.interrupt_sensitivity],
                               turn_threshold=session.eot_threshold if smart else None)
        self._input_warnings: Counter[str] = Counter()

    # -- ending -------------------------------------------------------------------------------

    def warn_input(self, kind: str, msg: str, *args: object) -> None:
        """A warning about bad peer input; after ``WARNINGS_PER_KIND`` of one kind they are only counted,
        so a peer cannot flood the log (the call's end says how many were left out)."""
        self._input_warnings[kind] += 1
        if self._input_warnings[kind] <= WARNINGS_PER_KIND:
            self.log.warning(msg, *args)

    def end(self, reason: ev.EndReason, detail: str = "") -> None:
        """End the call; the first reason given is the one kept. Teardown closes both sockets."""
        self.lifetime.end(reason, detail)

    async def _limit_duration(self) -> None:
        await trio.sleep(self.limits.max_duration_s)
        self.log.warning("the call reached server.max_call_duration_s (%.0f s); ending it", self.limits.max_duration_s)
        self.end(ev.EndReason.MAX_DURATION)

    # -- the call -----------------------------------------------------------------------------

    async def run(self, app_ws: WebSocketConnection) -> None:
        """Run the call until either side ends it; always closes the app socket."""
        self.to_app = to_app = AppLink(app_ws, self.lifetime, self.limits, self.log)
        try:
            with self.lifetime.scope:
                setup = relay.Setup.of(self.start.new_session_id(), self.start.call_details())
                self.stats.session_id = self.log.ids["session_id"] = setup.session_id
                await to_app.send_message(setup)
                self.log.info("call started; session %s", setup.session_id)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.hearing.run)
                    nursery.start_soon(self.speaker.run)
                    nursery.start_soon(self.playback.run)
                    nursery.start_soon(to_app.write)
                    nursery.start_soon(self._read_provider)
                    nursery.start_soon(self._read_app, to_app)
                    nursery.start_soon(self.to_provider.keep_alive)
                    nursery.start_soon(to_app.keep_alive)
                    nursery.start_soon(self._limit_duration)
                    self._carry_out(self.conversation.start(trio.current_time()))
                    nursery.start_soon(self._converse)
        finally:
            self.stats.frames_sent = self.playback.frames_sent
            self.stats.max_lead_ms = self.playback.max_lead_s * 1000
            self.stats.speculations_used = self.hearing.speculations_used
            self.stats.speculations_wasted = self.hearing.speculations_wasted
            left_out = {k: n - WARNINGS_PER_KIND for k, n in self._input_warnings.items() if n > WARNINGS_PER_KIND}
            if left_out:
                self.log.warning("further warnings not logged: %s",
                                 ", ".join(f"{n} {kind}" for kind, n in sorted(left_out.items())))
            if self.stats.inbound_dropped:
                self.log.warning("%d inbound media frame(s) arrived faster than they could be heard and were "
                                 "dropped", self.stats.inbound_dropped)
            with trio.move_on_after(TEARDOWN_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                await to_app.flush()  # what the app is still owed
                report = self.session_report()
                if (report.status == "failed" and not app_ws.closed and to_app.close == relay.CLOSE_NORMAL
                        and not to_app.stuck):
                    # A session-level failure is reported to the app before its socket closes.
                    error = relay.Error(f"Session ended ({report.error_code}): {self.stats.ended_because}",
                                        report.error_code or 0)
                    self.meter.sent(error)
                    await to_app.send_message(error)
                await app_ws.aclose(*to_app.close)

    async def _converse(self) -> None:
        """Hand each event to the conversation and carry out what it decides."""
        while True:
            event = await self.inbox.get()
            self._carry_out(self.conversation.handle(event, trio.current_time()))

    def _carry_out(self, actions: list[ev.Action]) -> None:
        now = trio.current_time()
        for action in actions:
            self.meter.action(action, now)
            match action:
                case ev.SendToApp():
                    assert self.to_app is not None
                    self.to_app.queue(action.message)
                case ev.Render():
                    self.speaker.render(action.chunk)
                case ev.CancelRender():
                    self.speaker.cancel(action.seq)
                case ev.QueueAudio():
                    self.playback.enqueue_audio(action.cycle, action.audio, action.repeat)
                case ev.QueueMark():
                    self.playback.enqueue_mark(action.name)
                case ev.ClearPlayback():
                    self.playback.clear(unheard=action.unheard)
                case ev.HoldPlayback():
                    self.playback.hold()
                case ev.ReleasePlayback():
                    self.playback.release()
                case ev.Probe():
                    self.hearing.probing = action.on
                case ev.RecogniseIn():
                    self.hearing.language = action.language
                case ev.EndCall():
                    if action.reason is ev.EndReason.APP_ENDED:
                        self.handoff_data = action.handoff_data
                    self.end(action.reason)
                case ev.Note():
                    self.stats.record(action.name, **action.data)
                    if action.message:
                        self.log.info("%s", action.message)
                    if action.transcript:
                        self.transcript_log.info("%s", action.transcript)
                case ev.Warn():
                    self.warn_input(action.kind, "%s", action.message)

    async def _read_provider(self) -> None:
        while True:
            try:
                with trio.fail_after(PROVIDER_IDLE_TIMEOUT_S):
                    raw = await self.to_provider.ws.get_message()
            except ConnectionClosed as exc:
                self.to_provider.closed_by_peer(exc)
                return
            except trio.TooSlowError:
                self.log.warning("no frame from the provider for %.0f s; ending the call", PROVIDER_IDLE_TIMEOUT_S)
                self.end(ev.EndReason.PROVIDER_SILENT)
                return
            with self.to_provider.held():
                if not await self._on_provider_frame(raw):
                    return

    async def _on_provider_frame(self, raw: str | bytes) -> bool:
        """Handle one frame from the provider; False once the stream has ended."""
        for event in self.codec.feed(raw):
            match event:
                case ms.Media(track="inbound"):
                    # Faster than real time, or the oldest unheard frame gave way: a frame is lost.
                    if (not self._inbound.admit(len(event.payload), trio.current_time())
                            or self.hearing.audio.put_nowait(event.payload)):
                        self.stats.inbound_dropped += 1
                        self.metrics.inbound_dropped.inc()
                case ms.Media():
                    pass
                case ms.Dtmf():
                    await self.inbox.put("provider", ev.Dtmf(event.digit))
                case ms.Mark():
                    await self.inbox.put("provider", ev.MarkEcho(event.name))
                case ms.Stop():
                    await self.inbox.put("provider", ev.StreamStopped())
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

    async def _read_app(self, to_app: AppLink) -> None:
        while True:
            try:
                raw = await to_app.ws.get_message()
            except ConnectionClosed as exc:
                self.log.warning("the app closed its socket; ending the call")
                to_app.closed_by_peer(exc)
                return
            msg = self.relay.receive(raw)
            if isinstance(msg, relay.InvalidAppFrame):
                self.stats.invalid_app_frames += 1
                self.warn_input("invalid app frames", "invalid app frame: %s", msg.reason)
                self.meter.error(relay.INVALID_MESSAGE_CODE)
                to_app.queue(msg.reply)
                if msg.close is not None:
                    self.log.warning("closing the app socket: %s", msg.close[1])
                    to_app.close = msg.close  # teardown closes it, shielded and time-bounded
                    self.end(ev.EndReason.APP_MALFORMED)
                    return
                continue
            with to_app.held():
                await self.inbox.put("app", msg)
            if isinstance(msg, relay.End):
                return

    @property
    def provider(self) -> str:
        return self.start.provider

    def session_report(self) -> SessionReport:
        """How the session ended, for the session-ended callback (protocols.md 2.6)."""
        reason = self.stats.end_reason
        status = reason.status if reason is not None else "failed"  # ended by a failure of its own
        error: tuple[int, str] | None = None
        if status == "failed":
            error = ERROR_RTP_TIMEOUT if reason is ev.EndReason.PROVIDER_SILENT else ERROR_WEBSOCKET_ENDED
        return SessionReport(session_id=self.stats.session_id, call_sid=self.start.call_sid,
                             account_sid=self.start.account_sid, status=status,
                             duration_s=trio.current_time() - self.started_at, handoff_data=self.handoff_data,
                             error_code=error[0] if error else None, error_message=error[1] if error else "")
