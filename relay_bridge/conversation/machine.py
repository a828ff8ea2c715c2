"""The conversation of one call: a pure state machine that owns turn-taking.

Theory of operation. ``Conversation.handle(event, now)`` takes one event (an app message, caller
speech, a recognition, a DTMF key, a mark echo, audio the speaker rendered, a frame the pacer sent)
and returns the actions that follow (messages to the app, chunks to render, audio and marks to queue,
a ``clear``, a language switch, the end of the call). It reads no clock but ``now`` and does no I/O;
the call carries the actions out, in order, before it hands over the next event, so each event is
handled against a state no other task can change halfway. (That is what once took generation
counters: a barge-in that came while an app message was half handled.)

It alone owns:

- **Talk cycles.** App text goes through the chunker into chunks of the current cycle; ``last``
  closes the cycle. ``play`` and ``sendDigits`` are cycles of their own, queued behind what the app
  said before (protocols.md 1.4, 2.3). Chunks are rendered one at a time, in order: the next goes to
  the speaker once the previous one's audio is queued, so the speaker never works ahead of the queue
  and the chunk being rendered is always known.
- **What was heard** (the mark ledger): a cycle opens with a start mark queued right before its first
  audio, and every chunk's audio is followed by a mark carrying the cycle's text so far. Echoes say
  what the caller heard (``tokensPlayed``, ``agentSpeaking``), and the ledger answers an interrupt's
  ``utteranceUntilInterrupt`` and ``durationUntilInterruptMs``.
- **Barge-in and preemption.** Caller speech that lasted (``interruptSensitivity``) or a key, while
  agent output is queued or unheard and the output allows it (``interruptible``), cuts everything:
  rendering stops, playback is cleared, ``interrupt`` reports what was heard, and later tokens start
  a new cycle, as on Twilio. A new cycle from the app while everything ahead of it is ``preemptible``
  cuts the same way, reports the fragment heard as ``tokensPlayed`` and sends no ``interrupt``.
- **Barge-ins that are not** (holds). With false barge-ins resumed (the default) or
  ``ignoreBackchannel``, speech that would cut the agent holds it instead: the pacer stops it at once
  (as a barge-in's ``clear`` would) but keeps what was not heard, and the utterance is recognised as
  it goes on (``Probe``). The first recognition with words that are not an acknowledgement makes it
  a barge-in after all (``interrupt``, the rest of the reply dropped, the utterance a prompt); an
  utterance that ends with no words, or with only acknowledgements (``ignoreBackchannel``), releases
  the hold: the agent goes on from where it stopped, the app hears of none of it. With
  ``echoPromptFiltering`` the agent is not held (holding would silence the echo it has to hear):
  the utterance is judged as it goes on while the agent speaks, and what repeats the agent's own
  words is neither a barge-in nor a prompt.
- **What the app is told** about input over agent speech (``reportInputDuringAgentSpeech``):
  whether an utterance that did not cut the agent becomes a prompt is decided when it starts.
- **Languages**: the voice and the recognition language, switched by ``language`` messages and a
  token's own ``lang`` among the call's languages.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from relay_bridge.conversation.events import (
    Action,
    CancelRender,
    ClearPlayback,
    Dtmf,
    EndCall,
    EndReason,
    Event,
    FirstAudio,
    HoldPlayback,
    MarkEcho,
    MarkSent,
    Note,
    PartialRecognised,
    Probe,
    QueueAudio,
    QueueMark,
    Recognised,
    RecogniseIn,
    ReleasePlayback,
    Render,
    Rendered,
    RenderFailed,
    Rewound,
    SendToApp,
    SpeechChunk,
    SpeechEnded,
    SpeechStarted,
    SpeechSustained,
    StreamStopped,
    Warn,
)
from relay_bridge.conversation.judge import Judge, Verdict, backchannels_for, words
from relay_bridge.engines.base import match_language
from relay_bridge.protocols import relay
from relay_bridge.protocols.marks import EchoKind, MarkLedger, fragment
from relay_bridge.protocols.printable import printable
from relay_bridge.protocols.relay import Interruptible
from relay_bridge.settings import SessionSettings
from relay_bridge.speech.chunker import TextChunker

MAX_REFUSED_LANGUAGES = 32  # distinct unknown token languages reported once each
MAX_OPEN_CYCLES = 64  # talk cycles whose first-token time waits for their first audio
MAX_REPORTED_PARAMETERS = 10  # refused session parameters reported one by one; the rest in one line
SPEECH, DTMF = Interruptible.SPEECH, Interruptible.DTMF


@dataclasses.dataclass
class _Utterance:
    """What the conversation decided about one utterance of the caller's."""

    report: bool = True  # it goes to the app (a prompt, partial prompts)
    judged: bool = False  # it came over agent speech that it may cut: its recognitions decide
    decided: bool = False  # judged, and found to be a barge-in (or dismissed)
    onset_at: float = 0.0  # when speech over the agent began (the hearing stage's estimate); 0: not over it


class Conversation:
    def __init__(self, session: SessionSettings, *, declared: Sequence[str], languages: object = None,
                 refused: Sequence[str] = (), backchannels: Mapping[str, Sequence[str]] | None = None) -> None:
        """``declared``: the process's languages; ``languages``: the call's ``languages`` parameter (the
        codes it may switch among; every declared one if absent); ``refused``: session parameters
        already refused, reported to the app at ``start``; ``backchannels``: configured acknowledgement
        lists by language code (else the built-in ones)."""
        self.session = session
        self._refused = list(refused)
        self.languages = self._call_languages(declared, languages)
        self.tts_language = session.speech_language
        self.recognition_language = session.recognition_language
        self.ledger = MarkLedger()
        self.chunker = TextChunker()
        self.cycle = 1  # the talk cycle new app text goes to
        self._cycle_open = False  # text of the current cycle has arrived without its last
        self._held_language = self.tts_language  # the voice of the text the chunker holds
        self._seq = 0
        self._to_render: deque[SpeechChunk] = deque()  # waiting for the speaker, in order
        self._rendering: SpeechChunk | None = None  # with the speaker now
        self._cycles: dict[int, str] = {}  # cycles whose audio is being queued -> their text queued so far
        self._last_text_cycle = 0  # the last cycle a chunk with words was made for
        self._preemptible: dict[int, bool] = {}  # cycles with output ahead -> may a new one cut them
        self._first_token: dict[int, float] = {}  # cycle -> when its first token came
        self._agent_speaking = False
        self._utterance = _Utterance()  # the utterance in progress
        self._ended: deque[_Utterance] = deque()  # ended utterances awaiting recognition, in order
        self._undecided = 0  # judged utterances not yet decided
        self._held = False  # playback is held for them
        self._backchannels = dict(backchannels or {})
        self._judges: dict[str, Judge] = {}
        self._last_partial = ""
        self._refused_token_languages: set[str] = set()

    # -- the interface ------------------------------------------------------------------------

    @property
    def agent_active(self) -> bool:
        """Agent output is being rendered, queued, or not yet heard."""
        return self._rendering is not None or bool(self._to_render) or self.ledger.pending

    def start(self, now: float) -> list[Action]:
        """The session has begun (``setup`` sent): report refused parameters, speak the greeting."""
        out: list[Action] = []
        for problem in self._refused[:MAX_REPORTED_PARAMETERS]:
            out += [Warn("session parameters", f"session parameter refused: {problem}"),
                    SendToApp(relay.Error(f"Invalid session parameter: {problem}", relay.INVALID_PARAMETER_CODE))]
        if len(self._refused) > MAX_REPORTED_PARAMETERS:
            more = len(self._refused) - MAX_REPORTED_PARAMETERS
            out += [Warn("session parameters", f"{more} more session parameter(s) refused"),
                    SendToApp(relay.Error(f"Invalid session parameters: {more} more refused",
                                          relay.INVALID_PARAMETER_CODE))]
        if self.session.welcome_greeting:
            self._speak(out, now, self.session.welcome_greeting, last=True,
                        interruptible=self.session.welcome_greeting_interruptible)
        return out

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        match event:
            case relay.Text():
                language = self._token_language(out, event.lang)
                self._speak(out, now, event.token, last=event.last,
                            interruptible=self._interruptible(event.interruptible), preemptible=event.preemptible,
                            language=language)
            case relay.Play():
                self._play(out, now, event)
            case relay.SendDigits():
                out.append(Note("send_digits", {"digits": event.digits}, f"sendDigits {event.digits!r} queued"))
                # Only text and play may be preempted, and only they preempt.
                self._queue_cycle(out, now, SpeechChunk(0, 0, digits=event.digits, final=True,
                                                        interruptible=self.session.interruptible),
                                  preemptible=False, preempts=False)
            case relay.Language():
                self._language(out, event)
            case relay.End():
                out += [Note("end", {"handoff_data": event.handoff_data}, "app ended the session (handoffData "
                             f"{'present' if event.handoff_data else 'absent'})"),
                        EndCall(EndReason.APP_ENDED, event.handoff_data)]
            case SpeechStarted():
                self._speech_started(out, event)
            case SpeechSustained():
                if self.agent_active and self._interruptible_by(SPEECH) and not self._utterance.judged:
                    self._speech_over_agent(out, now)
            case SpeechEnded():
                self._ended.append(self._utterance)
                self._utterance = _Utterance()
                self._info(out, "speaker-events", relay.ClientSpeaking(False))
            case Recognised():
                self._recognised(out, now, event)
            case PartialRecognised():
                utterance = self._utterance
                if utterance.judged and not utterance.decided:
                    self._judge_partial(out, now, event)
                elif (self.session.partial_prompts and utterance.report and event.text
                      and event.text != self._last_partial):
                    self._last_partial = event.text
                    out += [Note("partial", {"text": event.text}, transcript=f"partial prompt {event.text!r}"),
                            SendToApp(relay.Prompt(event.text, event.language or self.recognition_language,
                                                   last=False))]
            case Dtmf():
                self._dtmf(out, now, event.digit)
            case MarkEcho():
                self._mark_echo(out, now, event.name)
            case MarkSent():
                self.ledger.mark_sent(event.name)
            case Rewound():
                self.ledger.rewound(list(event.names))
            case StreamStopped():
                out.append(EndCall(EndReason.PROVIDER_STOPPED))
            case Rendered():
                self._rendered(out, event)
            case RenderFailed():
                self._render_failed(out, event)
            case FirstAudio():
                self._first_audio(out, now, event.cycle)
        return out

    # -- languages ----------------------------------------------------------------------------

    def _call_languages(self, declared: Sequence[str], wanted: object) -> tuple[str, ...]:
        """The languages this call may switch to: the ``languages`` parameter (the ``<Language>`` elements
        of the call, space- or comma-separated codes), else every declared language. The session's own
        languages are always among them."""
        if not isinstance(wanted, str) or not wanted.strip():
            return tuple(declared)
        session = self.session
        chosen = [session.language, session.speech_language, session.recognition_language]
        for code in wanted.replace(",", " ").split():
            found = match_language(code, declared)
            if found is None:
                self._refused.append(f"languages: {printable(code, 64)} is not a declared language "
                                     f"({', '.join(declared)}); left out")
            else:
                chosen.append(found)
        return tuple(dict.fromkeys(c for c in chosen if match_language(c, declared)))

    def _refuse_language(self, out: list[Action], field_name: str, code: str) -> None:
        problem = (f"{field_name} {code!r} is not one of this session's languages "
                   f"({', '.join(self.languages)}); the language is unchanged")
        out += [Warn("refused languages", problem), SendToApp(relay.Error(problem, relay.INVALID_PARAMETER_CODE))]

    def _language(self, out: list[Action], msg: relay.Language) -> None:
        """Switch the voice and/or the recognition language among the call's languages (2.5, rows 3)."""
        for field_name, code in (("ttsLanguage", msg.tts_language),
                                 ("transcriptionLanguage", msg.transcription_language)):
            if code is None:
                continue
            found = match_language(code, self.languages)
            if found is None:
                self._refuse_language(out, field_name, code)
            elif field_name == "ttsLanguage":
                self.tts_language = found
            else:
                self.recognition_language = found
                out.append(RecogniseIn(found))
        out.append(Note("language", {"tts": self.tts_language, "transcription": self.recognition_language},
                        f"language: speaking {self.tts_language}, recognising {self.recognition_language}"))

    def _token_language(self, out: list[Action], lang: str | None) -> str:
        """The voice for a text token: its own ``lang`` (highest precedence, 2.5 row 4) or the session's."""
        if lang is None:
            return self.tts_language
        found = match_language(lang, self.languages)
        if found is None:
            # Once per code, not once per token of a stream (and only for the first few codes).
            if lang not in self._refused_token_languages and len(self._refused_token_languages) < MAX_REFUSED_LANGUAGES:
                self._refused_token_languages.add(lang)
                self._refuse_language(out, "lang", lang)
            return self.tts_language
        return found

    # -- agent output -------------------------------------------------------------------------

    def _interruptible(self, flag: bool | None) -> Interruptible:
        """A message's own ``interruptible`` (true: any input, false: none), else the session's."""
        return self.session.interruptible if flag is None else Interruptible.of_flag(flag)

    def _speak(self, out: list[Action], now: float, token: str, *, last: bool, interruptible: Interruptible,
               preemptible: bool | None = None, language: str = "") -> None:
        cycle = self.cycle
        language = language or self.tts_language
        if not self._cycle_open:
            self._preempt(out, now, cycle)
        elif language != self._held_language:
            # The voice changes mid-cycle (a "language" message, or a token's own lang): text the chunker
            # holds back for a boundary came before the change, so it is spoken in the voice it was sent in.
            for text in self.chunker.flush():
                self._render(out, SpeechChunk(0, cycle, text, interruptible=interruptible,
                                              language=self._held_language))
        self._held_language = language
        if token.strip() and (preemptible is not None or cycle not in self._preemptible):
            self._preemptible[cycle] = self.session.preemptible if preemptible is None else preemptible
        if cycle not in self._first_token and token.strip():
            if len(self._first_token) >= MAX_OPEN_CYCLES:  # cycles that never reached the caller
                self._first_token.pop(next(iter(self._first_token)))
            self._first_token[cycle] = now
            out.append(Note("first_token", {"cycle": cycle}))
        texts = self.chunker.feed(token)
        self._cycle_open = not last
        if last:
            texts += self.chunker.flush()
            self.cycle += 1
            if not texts:
                texts = [""]  # still close the cycle with its final mark
        for i, text in enumerate(texts):
            self._render(out, SpeechChunk(0, cycle, text, final=last and i == len(texts) - 1,
                                          interruptible=interruptible, language=language))

    def _play(self, out: list[Action], now: float, msg: relay.Play) -> None:
        """Queue a media URL behind what the app has said so far, as a talk cycle of its own."""
        out.append(Note("play", {"source": msg.source, "loop": msg.loop},
                        f"play {printable(msg.source, 120)} (x{msg.loop}) queued"))
        chunk = SpeechChunk(0, 0, play=msg.source, loop=msg.loop, final=True,
                            interruptible=self._interruptible(msg.interruptible))
        preemptible = self.session.preemptible if msg.preemptible is None else msg.preemptible
        self._queue_cycle(out, now, chunk, preemptible=preemptible, preempts=True)

    def _queue_cycle(self, out: list[Action], now: float, chunk: SpeechChunk, *, preemptible: bool,
                     preempts: bool) -> None:
        """Queue ``chunk`` (a play or digits) as a talk cycle of its own, behind what the app said before."""
        if self._cycle_open:
            self._speak(out, now, "", last=True, interruptible=self.session.interruptible)
        if preempts:
            self._preempt(out, now, self.cycle)
        cycle, self.cycle = self.cycle, self.cycle + 1
        self._preemptible[cycle] = preemptible
        self._render(out, dataclasses.replace(chunk, cycle=cycle))

    def _render(self, out: list[Action], chunk: SpeechChunk) -> None:
        """Number the chunk and hand it to the speaker now, or queue it behind the one being rendered."""
        self._seq += 1
        first = bool(chunk.text.strip()) and chunk.cycle != self._last_text_cycle
        if chunk.text.strip():
            self._last_text_cycle = chunk.cycle
        self._to_render.append(dataclasses.replace(chunk, seq=self._seq, first=first))
        self._next_render(out)

    def _next_render(self, out: list[Action]) -> None:
        if self._rendering is None and self._to_render:
            self._rendering = self._to_render.popleft()
            out.append(Render(self._rendering))

    def _finish_render(self, seq: int) -> SpeechChunk | None:
        """The chunk ``seq`` is done with the speaker: it, unless a barge-in or preemption cut it meanwhile."""
        chunk = self._rendering
        if chunk is None or chunk.seq != seq:
            return None
        self._rendering = None
        return chunk

    def _rendered(self, out: list[Action], event: Rendered) -> None:
        chunk = self._finish_render(event.seq)
        if chunk is None:
            return
        started = chunk.cycle in self._cycles
        if chunk.text.strip() or chunk.play or chunk.digits or (chunk.final and started):
            if not started:
                self._cycles[chunk.cycle] = ""
                # The cycle's start mark goes right before its first audio: its echo dates the playback start.
                self._queue_mark(out, chunk, "", "", final=False)
            if event.audio:
                self.ledger.note_queued(chunk.cycle, len(event.audio) * event.repeat)
                out.append(QueueAudio(chunk.cycle, event.audio, event.repeat))
            said = "" if chunk.play else chunk.text
            self._cycles[chunk.cycle] += said
            self._queue_mark(out, chunk, self._cycles[chunk.cycle].strip(), chunk.digits or said.strip(),
                             final=chunk.final)
            if chunk.final:
                del self._cycles[chunk.cycle]
        self._next_render(out)

    def _queue_mark(self, out: list[Action], chunk: SpeechChunk, text: str, said: str, *, final: bool) -> None:
        mark = self.ledger.place(chunk.cycle, text, said, final=final, interruptible=chunk.interruptible)
        out.append(QueueMark(mark.name))

    def _render_failed(self, out: list[Action], event: RenderFailed) -> None:
        chunk = self._finish_render(event.seq)
        if chunk is None:
            return
        if chunk.play and event.problem:
            out += [Warn("play errors", event.problem),
                    Note("play_error", {"source": chunk.play, "problem": event.problem}),
                    SendToApp(relay.Error(f"Cannot play {chunk.play}: {event.problem}", relay.CONVERSION_CODE))]
        self._next_render(out)

    def _first_audio(self, out: list[Action], now: float, cycle: int) -> None:
        first_token = self._first_token.pop(cycle, None)
        data: dict[str, Any] = {"cycle": cycle}
        if first_token is not None:
            data["after_first_token_ms"] = round((now - first_token) * 1000)
        out.append(Note("first_audio", data))

    # -- what the caller hears ----------------------------------------------------------------

    def _mark_echo(self, out: list[Action], now: float, name: str) -> None:
        echo = self.ledger.echo(name, now)
        if echo.kind is EchoKind.UNKNOWN:
            out.append(Warn("unknown mark echoes", f"echo of unknown mark {printable(name)} ignored"))
        mark = echo.mark
        if echo.kind is not EchoKind.PLAYED or mark is None:
            return
        for cycle in [c for c in self._preemptible if c < mark.cycle or (c == mark.cycle and mark.final)]:
            del self._preemptible[cycle]  # heard in full
        if mark.chunk:
            out.append(Note("played", {"cycle": mark.cycle, "text": mark.chunk}))
            self._info(out, "tokens-played", relay.TokensPlayed(mark.chunk))
        if mark.final:
            if not self.agent_active:
                self._set_agent_speaking(out, False)
        elif not mark.chunk:  # a cycle's start mark: the caller starts hearing the cycle now
            self._set_agent_speaking(out, True)

    def _info(self, out: list[Action], event: str, message: relay.RelayMessage) -> None:
        if self.session.subscribed(event):
            out.append(SendToApp(message))

    def _set_agent_speaking(self, out: list[Action], on: bool) -> None:
        if on != self._agent_speaking:
            self._agent_speaking = on
            self._info(out, "speaker-events", relay.AgentSpeaking(on))

    def _fragment_heard(self, now: float) -> str:
        """The words of the chunk being heard that got through (read before a ``clear``)."""
        cycle, position = self.ledger.position(now)
        mark = self.ledger.first_pending()
        if cycle is None or mark is None or mark.cycle != cycle:
            return ""
        return fragment(mark.chunk, mark.start, mark.position, position)

    def _cut(self, out: list[Action], keep_from_cycle: int) -> int:
        """Drop every chunk of a cycle before ``keep_from_cycle``, rendering, queued or unheard, and clear
        playback; return how many chunks were dropped before they were rendered."""
        dropped = [c for c in self._to_render if c.cycle < keep_from_cycle]
        self._to_render = deque(c for c in self._to_render if c.cycle >= keep_from_cycle)
        if self._rendering is not None and self._rendering.cycle < keep_from_cycle:
            out.append(CancelRender(self._rendering.seq))
            dropped.append(self._rendering)
            self._rendering = None
        self._cycles = {c: v for c, v in self._cycles.items() if c >= keep_from_cycle}
        out.append(ClearPlayback(self.ledger.unheard_sent))
        self.ledger.clear()
        self._first_token = {c: t for c, t in self._first_token.items() if c >= keep_from_cycle}
        self._next_render(out)
        return len(dropped)

    def _preempt(self, out: list[Action], now: float, cycle: int) -> None:
        """A new talk cycle is starting: cut what is ahead of it if all of that is preemptible."""
        if not self.agent_active:
            self._preemptible.clear()
            return
        ahead = [flag for c, flag in self._preemptible.items() if c < cycle]
        if not ahead or not all(ahead):
            return
        heard, cut = self.ledger.heard(now), self._fragment_heard(now)
        self._preemptible.clear()
        dropped = self._cut(out, cycle)
        out.append(Note("preempted", {"heard": heard.text, "fragment": cut},
                        f"preempted by a new message: {dropped} chunk(s) dropped",
                        f"preempted: heard {heard.text!r}"))
        if cut:
            self._info(out, "tokens-played", relay.TokensPlayed(cut))
        self._set_agent_speaking(out, False)

    # -- caller input -------------------------------------------------------------------------

    def _interruptible_by(self, kind: Interruptible) -> bool:
        """Whether ``kind`` of caller input may cut what the caller hears now (or is about to hear)."""
        # The first mark still to come back closes the audio the caller hears now (or opens what comes next).
        mark = self.ledger.first_pending()
        if mark is not None:
            setting = Interruptible(mark.interruptible)
        elif self._rendering is not None:
            setting = self._rendering.interruptible
        else:
            setting = self.session.interruptible
        return setting.allows(kind)

    def _speech_started(self, out: list[Action], event: SpeechStarted) -> None:
        out.append(Note("speech_started", {"start": event.start}))
        self._info(out, "speaker-events", relay.ClientSpeaking(True))
        self._last_partial = ""
        # Over agent speech it is reported only as the session says, unless it turns into a barge-in.
        self._utterance = _Utterance(report=self.session.reports(SPEECH) if self.agent_active else True,
                                     onset_at=event.at if self.agent_active else 0.0)

    def _speech_over_agent(self, out: list[Action], now: float) -> None:
        """Speech that may cut the agent has lasted long enough to: a barge-in, or a hold until its
        words say whether it is one."""
        session = self.session
        if not (session.echo_prompt_filtering or session.ignore_backchannel or session.resume_after_false_barge_in):
            self._utterance.report = True
            self._barge_in(out, now, "speech", onset_at=self._utterance.onset_at)
            return
        self._utterance.judged = True
        self._undecided += 1
        out.append(Probe(True))
        if not session.echo_prompt_filtering and not self._held:
            self._held = True
            self.ledger.pause(now)
            out += [HoldPlayback(), Note("hold", {"onset_at": self._utterance.onset_at},
                                         "caller speech over the agent: agent held until it is recognised")]

    def _judge(self, text: str, language: str, *, partial: bool) -> Verdict:
        language = language or self.recognition_language
        judge = self._judges.get(language)
        if judge is None:
            phrases = backchannels_for(language, self._backchannels) if self.session.ignore_backchannel else ()
            judge = self._judges[language] = Judge(phrases)
        agent_words = None
        if self.session.echo_prompt_filtering:
            agent_words = {w for chunk in self.ledger.chunks_around() for w in words(chunk)}
        verdict = judge.verdict(text, partial=partial, agent_words=agent_words)
        if verdict is Verdict.NOTHING and not self.session.resume_after_false_barge_in and self._held:
            return Verdict.WORDS  # a barge-in like any other speech, though it has no words
        return verdict

    def _judge_partial(self, out: list[Action], now: float, event: PartialRecognised) -> None:
        """A recognition of judged speech while it goes on: words make it a barge-in now."""
        if self._judge(event.text, event.language, partial=True) is Verdict.WORDS:
            self._decide(out, now, self._utterance, barge_in=True)

    def _decide(self, out: list[Action], now: float, utterance: _Utterance, *, barge_in: bool) -> None:
        """A judged utterance turned out to be a barge-in (``barge_in``) or not."""
        utterance.decided = True
        utterance.report = barge_in
        self._undecided -= 1
        if barge_in and self.agent_active:
            # Not held (echo filtering), the agent stops now: this utterance's onset to the cut.
            self._barge_in(out, now, "speech", onset_at=0.0 if self._held else utterance.onset_at)
        if utterance is self._utterance:
            out.append(Probe(False))
        if barge_in or not self._undecided:
            self._release(out, now)

    def _release(self, out: list[Action], now: float) -> None:
        """End a hold: what it kept plays on (after a cut, what comes next plays)."""
        if self._held:
            self._held = False
            self.ledger.resume(now)
            out.append(ReleasePlayback())

    def _dtmf(self, out: list[Action], now: float, digit: str) -> None:
        out.append(Note("dtmf", {"digit": digit}))
        report = self.session.dtmf_detection
        if self.agent_active and self._interruptible_by(DTMF):
            self._barge_in(out, now, "dtmf")
        elif self.agent_active and not self.session.reports(DTMF):
            report = False
            out.append(Note("dtmf_withheld", {"digit": digit}, f"key {digit} over agent speech not reported"))
        if report:
            out.append(SendToApp(relay.DtmfDigit(digit)))

    def _barge_in(self, out: list[Action], now: float, cause: str, *, onset_at: float = 0.0) -> None:
        """Cut the agent. ``onset_at``: when the speech that cut it began, when this cut is what stops it
        (not a hold before it), for the call's onset-to-clear figure."""
        heard, cut = self.ledger.heard(now), self._fragment_heard(now)
        utterance = " ".join(t for t in (heard.text, cut) if t)
        self.cycle += 1
        self._cycle_open = False
        self._preemptible.clear()
        self.chunker.reset()
        dropped = self._cut(out, self.cycle)
        out.append(Note("interrupt", {"cause": cause, "heard": utterance, "duration_ms": heard.duration_ms,
                                      "onset_at": onset_at},
                        f"barge-in by {cause} after {heard.duration_ms:.0f} ms of agent speech; "
                        f"{dropped} chunk(s) dropped", f"barge-in: heard {utterance!r}"))
        if cut:  # the fragment of the chunk cut off, as Twilio reports it just before the interrupt
            self._info(out, "tokens-played", relay.TokensPlayed(cut))
        out.append(SendToApp(relay.Interrupt(utterance, heard.duration_ms)))
        self._set_agent_speaking(out, False)
        self._release(out, now)

    def _recognised(self, out: list[Action], now: float, event: Recognised) -> None:
        utterance = self._ended.popleft() if self._ended else _Utterance()
        if utterance.judged and not utterance.decided:
            verdict = self._judge(event.text, event.language, partial=False)
            self._decide(out, now, utterance, barge_in=verdict is Verdict.WORDS)
            if verdict is not Verdict.WORDS:
                out.append(Note("dismissed", {"verdict": verdict.name.lower(), "text": event.text},
                                f"speech over the agent was {verdict.value}: "
                                f"{'agent resumed' if not self._held else 'agent still held'}, no prompt",
                                f"dismissed {event.text!r}"))
                return
        report = utterance.report
        if event.text and not report:
            out.append(Note("withheld", {"text": event.text}, "input over agent speech not reported"))
        elif event.text:
            out += [Note("prompt", {"text": event.text, "speech_end": event.speech_end,
                                    "speech_end_at": event.speech_end_at}, transcript=f"prompt {event.text!r}"),
                    SendToApp(relay.Prompt(event.text, event.language or self.recognition_language, last=True))]
        else:
            out.append(Note("no_words", {}, f"utterance of {event.seconds:.2f} s had no words; no prompt"))
