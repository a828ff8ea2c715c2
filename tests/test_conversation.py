"""The conversation state machine, table-driven: events in, actions out, under no clock but ``now``.

``Line`` runs a ``Conversation`` with an instant speaker and pacer: every chunk it renders at once
(100 ms of audio a word, a fixed tone for digits and plays), every mark is sent as soon as it is
queued, and the caller hears marks when the script says so. Each case is a script of steps and the
messages the app must get, in order; rows of the behaviour table (``tests/test_relay_behaviours.py``)
that are the conversation's decisions are proven here without sockets, tasks or engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from relay_bridge.conversation import events as ev
from relay_bridge.conversation.machine import Conversation
from relay_bridge.protocols import relay
from relay_bridge.protocols.marks import resent_name
from relay_bridge.settings import SessionSettings

WORD_BYTES = 800  # 100 ms of 8 kHz mu-law a word
TONE_BYTES = 1600


def said(msg: relay.RelayMessage) -> str:
    """An app message, short: "prompt:hello", "interrupt:One.|1000", "agentSpeaking:on", ..."""
    match msg:
        case relay.Prompt():
            return f"prompt{'' if msg.last else '~'}:{msg.voice_prompt}@{msg.lang}"
        case relay.Interrupt():
            return f"interrupt:{msg.utterance_until_interrupt}|{msg.duration_until_interrupt_ms:g}"
        case relay.AgentSpeaking():
            return f"agentSpeaking:{'on' if msg.on else 'off'}"
        case relay.ClientSpeaking():
            return f"clientSpeaking:{'on' if msg.on else 'off'}"
        case relay.TokensPlayed():
            return f"tokensPlayed:{msg.text}"
        case relay.DtmfDigit():
            return f"dtmf:{msg.digit}"
        case relay.Error():
            return f"error:{msg.description.split(' ')[0]}"
    raise AssertionError(msg)


@dataclass
class Line:
    conv: Conversation
    now: float = 0.0
    actions: list[ev.Action] = field(default_factory=list)
    sent_marks: list[str] = field(default_factory=list)  # sent, not yet echoed, in order
    rendered: list[ev.SpeechChunk] = field(default_factory=list)
    taken_back: list[str] = field(default_factory=list)  # marks a hold took back, to send again on release
    rewound: list[str] = field(default_factory=list)  # ... under their old names
    hold_render: bool = False  # leave the chunk with the "speaker" (it renders on ``finish_render``)
    _held: ev.SpeechChunk | None = None

    @classmethod
    def of(cls, languages: str | None = None, **session: Any) -> Line:
        session.setdefault("events", "speaker-events tokens-played")
        return cls(Conversation(SessionSettings(**session), declared=("en-US", "es-ES"), languages=languages))

    def start(self) -> Line:
        self._run(self.conv.start(self.now))
        return self

    def feed(self, event: ev.Event) -> Line:
        self._run(self.conv.handle(event, self.now))
        return self

    def _run(self, actions: list[ev.Action]) -> None:
        for action in actions:
            self.actions.append(action)
            match action:
                case ev.Render():
                    self.rendered.append(action.chunk)
                    if self.hold_render:
                        self._held = action.chunk
                    else:
                        self._run(self.conv.handle(self._render(action.chunk), self.now))
                case ev.QueueMark():  # the pacer sends it at once
                    self.sent_marks.append(action.name)
                    self._run(self.conv.handle(ev.MarkSent(action.name), self.now))
                case ev.ClearPlayback():
                    self.sent_marks.clear()  # their echoes come back as cleared: nothing to report
                    self.taken_back.clear()
                case ev.HoldPlayback():  # the pacer takes back every mark the caller has not heard
                    taken, self.sent_marks = self.sent_marks, []
                    self.taken_back += [resent_name(name) for name in taken]
                    self.rewound += taken
                    if taken:
                        self._run(self.conv.handle(ev.Rewound(tuple(taken)), self.now))
                case ev.ReleasePlayback():  # ... and sends them again
                    for name in self.taken_back:
                        self.sent_marks.append(name)
                        self._run(self.conv.handle(ev.MarkSent(name), self.now))
                    self.taken_back.clear()

    @staticmethod
    def _render(chunk: ev.SpeechChunk) -> ev.Rendered:
        if chunk.digits or chunk.play:
            return ev.Rendered(chunk.seq, b"\xff" * TONE_BYTES, repeat=chunk.loop)
        return ev.Rendered(chunk.seq, b"\xff" * WORD_BYTES * len(chunk.text.split()))

    def finish_render(self) -> Line:
        held, self._held = self._held, None
        assert held is not None
        self.hold_render = False
        self._run(self.conv.handle(self._render(held), self.now))
        return self

    def hear(self, marks: int | None = None, *, after_s: float = 0.0) -> Line:
        """The caller hears the next ``marks`` marks (all sent so far by default), ``after_s`` from now."""
        self.now += after_s
        n = len(self.sent_marks) if marks is None else marks
        for name in self.sent_marks[:n]:
            self._run(self.conv.handle(ev.MarkEcho(name), self.now))
        del self.sent_marks[:n]
        return self

    def wait(self, s: float) -> Line:
        self.now += s
        return self

    def text(self, token: str, last: bool = False, **kw: Any) -> Line:
        return self.feed(relay.Text(token=token, last=last, **kw))

    def speech(self, *, sustained: bool = True, words: str = "wait") -> Line:
        """Caller speech starts; ``sustained``, it lasts long enough to cut the agent, and its first
        recognition (``words``; "" for none yet) comes at once."""
        self.feed(ev.SpeechStarted(start=0))
        if not sustained:
            return self
        self.feed(ev.SpeechSustained())
        return self.feed(ev.PartialRecognised(words, "")) if words else self

    def utterance(self, words: str) -> Line:
        return self.feed(ev.SpeechEnded()).feed(ev.Recognised(words, "", seconds=1.0))

    @property
    def app(self) -> list[str]:
        return [said(a.message) for a in self.actions if isinstance(a, ev.SendToApp)]

    def of_kind(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def queued_text(self) -> list[str]:
        """The text of every chunk rendered, in order."""
        return [c.text or c.digits or c.play for c in self.rendered]


# --- prompts and partials ------------------------------------------------------------------------


def test_an_utterance_becomes_one_final_prompt_in_the_recognition_language() -> None:
    line = Line.of(language="es-ES").speech().utterance("hola")
    assert line.app == ["clientSpeaking:on", "clientSpeaking:off", "prompt:hola@es-ES"]


def test_partials_are_growing_prefixes_never_repeated_and_never_after_their_final() -> None:
    line = Line.of(partial_prompts=True).speech(words="")
    for text in ("I", "I", "I want", "I want to"):
        line.feed(ev.PartialRecognised(text, ""))
    line.utterance("I want to go")
    assert line.app == ["clientSpeaking:on", "prompt~:I@en-US", "prompt~:I want@en-US", "prompt~:I want to@en-US",
                        "clientSpeaking:off", "prompt:I want to go@en-US"]


def test_an_utterance_without_words_is_no_prompt() -> None:
    line = Line.of().speech().utterance("")
    assert line.app == ["clientSpeaking:on", "clientSpeaking:off"]
    assert [n.name for n in line.of_kind(ev.Note)][-1] == "no_words"


# --- speaking, marks and info --------------------------------------------------------------------


def test_a_reply_is_bracketed_by_agent_speaking_and_reported_chunk_by_chunk() -> None:
    line = Line.of().text("Hello there. ").text("How are you?", last=True).hear()
    assert line.app == ["agentSpeaking:on", "tokensPlayed:Hello there.", "tokensPlayed:How are you?",
                        "agentSpeaking:off"]
    assert not line.conv.agent_active


def test_no_info_unless_subscribed() -> None:
    line = Line.of(events="").text("Hello there.", last=True).hear().speech().utterance("hi")
    assert line.app == ["prompt:hi@en-US"]


def test_tokens_are_not_trimmed_and_speech_starts_before_last() -> None:
    line = Line.of().text("One two three four five six. ").text("Se").text("ven", last=False)
    assert "".join(line.queued_text).strip() == "One two three four five six."  # spoken before last arrives
    line.text(" eight.", last=True)
    assert line.queued_text[-1].strip() == "Seven eight."  # "Se" + "ven" + " eight.": the tokens' own spaces


def test_an_empty_last_token_closes_the_cycle() -> None:
    line = Line.of().text("Hello there.").text("", last=True).hear()
    assert line.app[-1] == "agentSpeaking:off" and not line.conv.agent_active


def test_the_greeting_is_spoken_first_with_its_own_interruptibility() -> None:
    line = Line.of(welcome_greeting="Welcome!", welcome_greeting_interruptible="none").start()
    assert line.queued_text == ["Welcome!"] and line.rendered[0].interruptible is relay.Interruptible.NONE
    line.speech().hear()
    assert "interrupt" not in " ".join(line.app)


def test_refused_session_parameters_are_errors_before_anything_else() -> None:
    conv = Conversation(SessionSettings(welcome_greeting="Hi."), declared=("en-US",), refused=["hints too long"])
    actions = conv.start(0.0)
    assert isinstance(actions[0], ev.Warn)
    assert [said(a.message) for a in actions if isinstance(a, ev.SendToApp)] == ["error:Invalid"]
    assert any(isinstance(a, ev.Render) for a in actions)


# --- barge-in ------------------------------------------------------------------------------------


def test_a_barge_in_reports_what_was_heard_and_purges_the_cycle() -> None:
    line = Line.of().text("One two. ").text("Three four five six. ")
    line.hear(2, after_s=0.0)  # the start mark and the first chunk's mark: "One two." heard
    line.wait(0.1).speech()
    assert line.app == ["agentSpeaking:on", "tokensPlayed:One two.", "clientSpeaking:on", "tokensPlayed:Three",
                        "interrupt:One two. Three|300", "agentSpeaking:off"]
    # The hold stopped the agent at the provider at once; the cut drops what it kept (no second clear).
    assert line.of_kind(ev.HoldPlayback) and line.of_kind(ev.ClearPlayback) == [ev.ClearPlayback(unheard=False)]
    line.text("Seven.", last=True)  # the rest of the interrupted stream: a new cycle
    assert line.rendered[-1].cycle > line.rendered[0].cycle
    assert line.conv.chunker.flush() == []


def test_an_interrupt_before_anything_was_heard_is_empty() -> None:
    line = Line.of().text("Hello there.", last=True).speech()
    assert "interrupt:|0" in line.app


def test_a_barge_in_while_a_chunk_renders_cancels_it_and_drops_its_late_audio() -> None:
    line = Line.of()
    line.hold_render = True
    line.text("Old reply here. And more. ", last=False)
    held = line.rendered[-1]
    line.speech()
    assert line.of_kind(ev.CancelRender) == [ev.CancelRender(held.seq)]
    line.finish_render()  # the speaker finished it anyway: nothing of it is queued
    assert line.of_kind(ev.QueueAudio) == []
    line.text("New reply.", last=True)
    assert [a.cycle for a in line.of_kind(ev.QueueAudio)] == [held.cycle + 1]


def test_text_of_a_cut_cycle_still_queued_for_the_speaker_is_dropped() -> None:
    line = Line.of()
    line.hold_render = True
    line.text("First sentence here. Second sentence here. ")  # one rendering, one waiting
    line.speech()
    assert line.conv.agent_active is False
    line.finish_render()
    assert len(line.rendered) == 1 and line.rendered[0].text.startswith("First")


@pytest.mark.parametrize(("interruptible", "by", "cut"), [
    ("any", "speech", True), ("any", "dtmf", True), ("speech", "speech", True), ("speech", "dtmf", False),
    ("dtmf", "dtmf", True), ("dtmf", "speech", False), ("none", "speech", False), ("none", "dtmf", False),
])
def test_interruptible_matrix(interruptible: str, by: str, cut: bool) -> None:
    line = Line.of(interruptible=interruptible).text("Hello there.", last=True)
    line.speech() if by == "speech" else line.feed(ev.Dtmf("5"))
    assert any(m.startswith("interrupt:") for m in line.app) is cut


@pytest.mark.parametrize(("flag", "session", "cut"), [(True, "none", True), (False, "any", False), (None, "any", True)])
def test_a_messages_own_interruptible_overrides_the_session(flag: bool | None, session: str, cut: bool) -> None:
    line = Line.of(interruptible=session).text("Hello there.", last=True, interruptible=flag).speech()
    assert any(m.startswith("interrupt:") for m in line.app) is cut


def test_the_flag_of_the_message_being_heard_decides() -> None:
    line = Line.of().text("Keep this.", last=True, interruptible=False).text("Cut this.", last=True)
    line.speech()
    assert not any(m.startswith("interrupt:") for m in line.app)  # "Keep this." is being heard
    line.hear(3)  # its start mark, its chunk, and its final mark... now "Cut this." is next
    line.speech()
    assert any(m.startswith("interrupt:") for m in line.app)


def test_sustained_speech_only_cuts_once_it_is_sustained() -> None:
    line = Line.of().text("Hello there.", last=True)
    line.speech(sustained=False)
    assert not any(m.startswith("interrupt:") for m in line.app)
    line.feed(ev.SpeechSustained()).feed(ev.PartialRecognised("hello", ""))
    assert any(m.startswith("interrupt:") for m in line.app)


@pytest.mark.parametrize(("report", "prompted"), [("none", False), ("dtmf", False), ("speech", True), ("any", True)])
def test_speech_over_agent_speech_that_does_not_cut_is_reported_as_configured(report: str, prompted: bool) -> None:
    line = Line.of(interruptible="none", report_input_during_agent_speech=report).text("Hello there.", last=True)
    line.speech().utterance("words")
    assert ("prompt:words@en-US" in line.app) is prompted


def test_speech_that_cuts_is_always_a_prompt() -> None:
    line = Line.of().text("Hello there.", last=True).speech().utterance("words")
    assert line.app[-1] == "prompt:words@en-US"


@pytest.mark.parametrize(("report", "delivered"), [("none", False), ("speech", False), ("dtmf", True), ("any", True)])
def test_keys_over_agent_speech_that_do_not_cut_are_reported_as_configured(report: str, delivered: bool) -> None:
    line = Line.of(interruptible="speech", report_input_during_agent_speech=report).text("Hello.", last=True)
    line.feed(ev.Dtmf("7"))
    assert ("dtmf:7" in line.app) is delivered


def test_keys_arrive_in_order_and_need_dtmf_detection() -> None:
    assert Line.of().feed(ev.Dtmf("1")).feed(ev.Dtmf("2")).app == ["dtmf:1", "dtmf:2"]
    assert Line.of(dtmf_detection=False).feed(ev.Dtmf("1")).app == []


def test_a_key_barge_in_is_reported_and_the_key_delivered() -> None:
    line = Line.of().text("Hello.", last=True).feed(ev.Dtmf("9"))
    assert line.app == ["interrupt:|0", "dtmf:9"]  # nothing was heard: agentSpeaking never went on


def test_cleared_marks_report_nothing() -> None:
    line = Line.of().text("One two. Three four. ", last=True)
    names = list(line.sent_marks)
    line.speech()
    before = list(line.app)
    for name in names:  # the provider echoes every pending mark after the clear
        line.feed(ev.MarkEcho(name))
    assert line.app == before


def test_an_echo_of_a_mark_never_sent_is_ignored_with_a_warning() -> None:
    line = Line.of().feed(ev.MarkEcho("c1-1"))
    assert line.app == [] and [w.kind for w in line.of_kind(ev.Warn)] == ["unknown mark echoes"]


# --- holds: speech over the agent that may not be a barge-in ------------------------------------


def held_reply(**session: Any) -> Line:
    """The caller heard "One two." of a two-chunk reply and starts speaking over "Three four five six."."""
    line = Line.of(**session).text("One two. ").text("Three four five six.", last=True)
    return line.hear(2).wait(0.1).speech(words="")


def test_speech_over_the_agent_holds_it_and_probes_before_anything_goes_to_the_app() -> None:
    line = held_reply()
    assert line.of_kind(ev.HoldPlayback) == [ev.HoldPlayback()] and line.of_kind(ev.Probe) == [ev.Probe(True)]
    assert line.of_kind(ev.ClearPlayback) == [] and line.app[-1] == "clientSpeaking:on"


def test_a_false_barge_in_resumes_the_reply_and_the_app_hears_nothing_of_it() -> None:
    line = held_reply().feed(ev.PartialRecognised("", "")).wait(0.8).utterance("")
    assert line.of_kind(ev.ReleasePlayback) == [ev.ReleasePlayback()] and line.of_kind(ev.ClearPlayback) == []
    line.hear()  # the marks the hold took back went out again and are heard
    assert [m for m in line.app if m.startswith(("interrupt", "prompt", "tokensPlayed"))] == [
        "tokensPlayed:One two.", "tokensPlayed:Three four five six."]
    assert line.app[-1] == "agentSpeaking:off" and not line.conv.agent_active


def test_echoes_of_the_marks_a_hold_took_back_are_ignored_and_the_heard_time_stops() -> None:
    line = held_reply()
    assert line.rewound
    for name in line.rewound:  # the provider's answer to the hold's clear
        line.feed(ev.MarkEcho(name))
    assert not line.of_kind(ev.Warn) and line.conv.agent_active
    line.wait(5.0).feed(ev.PartialRecognised("stop please", ""))  # five seconds on hold: none of it heard
    assert line.app[-2:] == ["interrupt:One two. Three|300", "agentSpeaking:off"]


def test_words_in_the_first_recognition_make_it_a_barge_in_and_release_the_hold() -> None:
    line = held_reply().feed(ev.PartialRecognised("Wait, I", ""))
    assert line.app[-3:] == ["tokensPlayed:Three", "interrupt:One two. Three|300", "agentSpeaking:off"]
    assert [type(a) for a in line.actions if isinstance(a, ev.ClearPlayback | ev.ReleasePlayback | ev.Probe)][-3:] == [
        ev.ClearPlayback, ev.ReleasePlayback, ev.Probe]
    line.utterance("Wait, I have a question.")
    assert line.app[-1] == "prompt:Wait, I have a question.@en-US"


def test_words_only_in_the_final_recognition_still_cut_and_prompt() -> None:
    line = held_reply().utterance("No.")
    assert "interrupt:One two. Three|300" in line.app and line.app[-1] == "prompt:No.@en-US"


@pytest.mark.parametrize(("ignore", "text", "cut"), [
    (True, "Okay.", False), (True, "Uh-huh, yeah.", False), (True, "Thank you.", False),
    (True, "Okay, but what about Tuesday?", True), (False, "Okay.", True), (True, "No.", True)])
def test_acknowledgements_pass_only_with_ignore_backchannel(ignore: bool, text: str, cut: bool) -> None:
    line = held_reply(ignore_backchannel=ignore).utterance(text)
    assert any(m.startswith("interrupt:") for m in line.app) is cut
    assert (line.app[-1] == f"prompt:{text}@en-US") is cut
    assert bool(line.of_kind(ev.ReleasePlayback)) and line.conv.agent_active is not cut


def test_a_partial_acknowledgement_keeps_the_hold_until_it_is_complete() -> None:
    line = held_reply(ignore_backchannel=True).feed(ev.PartialRecognised("Thank", ""))
    assert not any(m.startswith("interrupt:") for m in line.app) and not line.of_kind(ev.ReleasePlayback)
    line.utterance("Thank you.")
    assert line.of_kind(ev.ReleasePlayback) and not any(m.startswith(("interrupt", "prompt")) for m in line.app)


def test_a_configured_list_replaces_the_languages_own() -> None:
    conv = Conversation(SessionSettings(ignore_backchannel=True), declared=("en-US",),
                        backchannels={"en-US": ("roger",)})
    line = Line(conv).text("One two. ").text("Three four.", last=True).hear(2).speech(words="")
    assert not any(m.startswith("interrupt") for m in line.utterance("Roger.").app)
    line = Line(Conversation(SessionSettings(ignore_backchannel=True), declared=("en-US",),
                             backchannels={"en-US": ("roger",)}))
    line.text("One two. ").text("Three four.", last=True).hear(2).speech(words="").utterance("Okay.")
    assert any(m.startswith("interrupt") for m in line.app)


def test_with_false_barge_ins_off_speech_cuts_at_once_as_before() -> None:
    line = held_reply(resume_after_false_barge_in=False)
    assert not line.of_kind(ev.HoldPlayback) and line.app[-2:] == ["interrupt:One two. Three|300", "agentSpeaking:off"]


def test_a_key_during_a_hold_cuts_and_releases() -> None:
    line = held_reply().feed(ev.Dtmf("5"))
    assert "interrupt:One two. Three|300" in line.app and line.of_kind(ev.ReleasePlayback)
    line.utterance("")  # the held speech had no words: nothing more happens
    assert not line.of_kind(ev.Warn) and line.app[-1] == "clientSpeaking:off"


def test_a_second_utterance_keeps_the_hold_until_both_are_decided() -> None:
    line = held_reply().feed(ev.SpeechEnded())
    line.speech(words="")  # speaks again before the first is recognised
    line.feed(ev.Recognised("", "", seconds=0.3))
    assert not line.of_kind(ev.ReleasePlayback)
    line.utterance("")
    assert line.of_kind(ev.ReleasePlayback) == [ev.ReleasePlayback()] and not any(
        m.startswith("interrupt") for m in line.app)


def test_echo_filtering_judges_without_holding_and_drops_the_agents_own_words() -> None:
    line = held_reply(echo_prompt_filtering=True)
    assert not line.of_kind(ev.HoldPlayback) and line.of_kind(ev.Probe) == [ev.Probe(True)]
    line.feed(ev.PartialRecognised("three four", "")).utterance("Three four five.")
    assert not any(m.startswith(("interrupt", "prompt")) for m in line.app)
    assert line.conv.agent_active


def test_echo_filtering_still_lets_the_caller_cut_in() -> None:
    line = held_reply(echo_prompt_filtering=True).feed(ev.PartialRecognised("three can you stop", ""))
    assert line.app[-2:] == ["interrupt:One two. Three|300", "agentSpeaking:off"]


# --- preemption ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second", "preempted"), [
    ({"preemptible": True}, {}, True),
    ({}, {}, False),
    ({"preemptible": True}, {"play": True}, True),
])
def test_preemption(first: dict[str, Any], second: dict[str, Any], preempted: bool) -> None:
    line = Line.of().text("One two. Three four. ", last=True, **first)
    line.hear(2, after_s=0.0).wait(0.1)
    if second.get("play"):
        line.feed(relay.Play(source="https://media.example/a.wav"))
    else:
        line.text("New reply.", last=True)
    assert bool(line.of_kind(ev.ClearPlayback)) is preempted
    assert not any(m.startswith("interrupt:") for m in line.app)
    if preempted:
        assert line.app[-2:] == ["tokensPlayed:Three", "agentSpeaking:off"]


def test_preemption_after_the_output_finished_clears_nothing() -> None:
    line = Line.of().text("Done.", last=True, preemptible=True).hear()
    line.text("Next.", last=True)
    assert line.of_kind(ev.ClearPlayback) == []


# --- play and sendDigits -------------------------------------------------------------------------


def test_play_and_digits_are_cycles_of_their_own_behind_open_text() -> None:
    line = Line.of().text("Before the tones,")
    line.feed(relay.SendDigits("12")).feed(relay.Play(source="https://media.example/a.wav", loop=3))
    assert line.queued_text == ["Before the tones,", "12", "https://media.example/a.wav"]
    assert len({c.cycle for c in line.rendered}) == 3
    assert [a.repeat for a in line.of_kind(ev.QueueAudio)] == [1, 1, 3]
    line.hear()
    assert "tokensPlayed:12" in line.app


def test_a_play_that_fails_is_an_error_and_the_queue_goes_on() -> None:
    line = Line.of()
    line.hold_render = True
    line.feed(relay.Play(source="https://media.example/missing.wav")).text("After.", last=True)
    play = line.rendered[0]
    line.hold_render = False
    line.feed(ev.RenderFailed(play.seq, "HTTP 404"))
    assert line.app == ["error:Cannot"] and line.queued_text[-1] == "After."


def test_a_key_cuts_digits_and_what_was_queued_behind_them() -> None:
    line = Line.of()
    line.hold_render = True
    line.feed(relay.SendDigits("123")).text("Queued behind.", last=True)
    line.feed(ev.Dtmf("#"))
    line.finish_render()
    assert line.queued_text == ["123"] and line.of_kind(ev.QueueAudio) == []


# --- languages -----------------------------------------------------------------------------------


def test_a_tokens_lang_is_its_voice_and_an_undeclared_one_an_error_once() -> None:
    line = Line.of().text("Hola. ", lang="es-ES").text("Hello. ").text("Salut. ", lang="fr-FR")
    line.text("Encore.", lang="fr-FR", last=True)
    assert [c.language for c in line.rendered] == ["es-ES", "en-US", "en-US", "en-US"]
    assert line.app.count("error:lang") == 1


def test_a_language_message_switches_voice_and_recognition() -> None:
    line = Line.of().feed(relay.Language(tts_language="es-ES", transcription_language="es"))
    assert line.of_kind(ev.RecogniseIn) == [ev.RecogniseIn("es-ES")]
    line.text("Hola.", last=True).speech().utterance("hola")
    assert line.rendered[0].language == "es-ES" and line.app[-1] == "prompt:hola@es-ES"


def test_a_switch_mid_reply_keeps_the_old_voice_for_text_sent_before_it() -> None:
    line = Line.of().text("Held back for a boundary")
    line.feed(relay.Language(tts_language="es-ES", transcription_language=None)).text(" y más.", last=True)
    by_voice = {lang: "".join(c.text for c in line.rendered if c.language == lang) for lang in ("en-US", "es-ES")}
    assert by_voice == {"en-US": "Held back for a boundary", "es-ES": " y más."}


@pytest.mark.parametrize(("languages", "switched"), [(None, True), ("en-US", False), ("en-US es", True)])
def test_a_call_may_narrow_its_languages(languages: str | None, switched: bool) -> None:
    line = Line.of(languages=languages).feed(relay.Language(tts_language="es-ES", transcription_language=None))
    assert (line.conv.tts_language == "es-ES") is switched


# --- the end -------------------------------------------------------------------------------------


def test_end_and_stop_end_the_call_with_their_reasons() -> None:
    line = Line.of().feed(relay.End(handoff_data='{"to": "agent"}'))
    assert line.of_kind(ev.EndCall) == [ev.EndCall(ev.EndReason.APP_ENDED, '{"to": "agent"}')]
    assert Line.of().feed(ev.StreamStopped()).of_kind(ev.EndCall) == [ev.EndCall(ev.EndReason.PROVIDER_STOPPED)]
    assert ev.EndReason.APP_ENDED.status == "ended" and ev.EndReason.PROVIDER_STOPPED.status == "completed"
    assert ev.EndReason.PROVIDER_SILENT.status == "failed"


def test_first_audio_dates_the_reply_from_its_first_token() -> None:
    line = Line.of().text("Hello.", last=True).wait(0.25).feed(ev.FirstAudio(1))
    [note] = [n for n in line.of_kind(ev.Note) if n.name == "first_audio"]
    assert note.data == {"cycle": 1, "after_first_token_ms": 250}


def test_keys_during_the_welcome_greeting() -> None:
    cut = Line.of(welcome_greeting="Welcome to the line.").start().feed(ev.Dtmf("4"))
    assert cut.app == ["interrupt:|0", "dtmf:4"]
    kept = Line.of(welcome_greeting="Welcome to the line.", welcome_greeting_interruptible="none",
                   report_input_during_agent_speech="dtmf").start().feed(ev.Dtmf("4"))
    assert kept.app == ["dtmf:4"] and not kept.of_kind(ev.ClearPlayback)


def test_digits_sent_while_the_caller_talks_go_out_at_once_and_the_speech_is_still_a_prompt() -> None:
    line = Line.of().speech().feed(relay.SendDigits("42")).hear()
    line.utterance("my account number")
    assert "tokensPlayed:42" in line.app and line.app[-1] == "prompt:my account number@en-US"
    assert not line.of_kind(ev.ClearPlayback)


def test_a_play_of_loop_zero_is_queued_a_thousand_times_and_cut_like_speech() -> None:
    line = Line.of().feed(relay.Play(source="https://media.example/hold.wav", loop=relay.PLAY_LOOP_MAX))
    assert [a.repeat for a in line.of_kind(ev.QueueAudio)] == [relay.PLAY_LOOP_MAX]
    line.hear(1).speech()
    assert line.app[-2:] == ["interrupt:|0", "agentSpeaking:off"]  # a play has no text


# Every row of the behaviour table (tests/test_relay_behaviours.py), by its section and the start of its
# behaviour: the test here that proves the conversation's part of it, or where the rest is decided.
CODEC = "not the conversation's: the codecs and the call's sockets (tests/test_call.py, test_relay.py)"
AUDIO = "not the conversation's: audio the pacer and the speaker make (tests/test_relay_behaviours.py)"
ROWS = {
    ("1.2 setup", "sent once"): CODEC, ("1.2 setup", "Twilio's field set"): CODEC,
    ("1.2 setup", "setup is the first"): CODEC,
    ("1.2 prompt", "speech becomes one prompt"):
        "test_an_utterance_becomes_one_final_prompt_in_the_recognition_language",
    ("1.2 prompt", "partials off by default"):
        "test_partials_are_growing_prefixes_never_repeated_and_never_after_their_final",
    ("1.2 prompt", "lang is the recognition language"): "test_a_language_message_switches_voice_and_recognition",
    ("1.2 prompt", "no confidence field"): CODEC,
    ("1.2 dtmf", "one frame per keypress"): "test_keys_arrive_in_order_and_need_dtmf_detection",
    ("1.2 dtmf", "needs dtmfDetection"): "test_keys_arrive_in_order_and_need_dtmf_detection",
    ("1.2 dtmf", "keys in quick succession"): "test_keys_arrive_in_order_and_need_dtmf_detection",
    ("1.2 dtmf", "delivered during the welcome greeting"): "test_keys_during_the_welcome_greeting",
    ("1.2 dtmf", "under interruptible any a key"): "test_a_key_barge_in_is_reported_and_the_key_delivered",
    ("1.2 dtmf", "DTMF never appears"): "n/a (tests/test_relay_behaviours.py)",
    ("1.2 interrupt", "utteranceUntilInterrupt/durationUntilInterruptMs"):
        "test_a_barge_in_reports_what_was_heard_and_purges_the_cycle",
    ("1.2 interrupt", "utteranceUntilInterrupt can be empty"): "test_an_interrupt_before_anything_was_heard_is_empty",
    ("1.2 interrupt", "a barge-in purges everything"):
        "test_text_of_a_cut_cycle_still_queued_for_the_speaker_is_dropped",
    ("1.2 interrupt", "frame order"): "test_a_barge_in_reports_what_was_heard_and_purges_the_cycle",
    ("1.2 error", "every invalid app frame"): CODEC,
    ("1.2 info", "nothing unless subscribed"): "test_no_info_unless_subscribed",
    ("1.2 info", "subscribed by events"): CODEC,
    ("1.2 info", "agentSpeaking brackets"): "test_a_reply_is_bracketed_by_agent_speaking_and_reported_chunk_by_chunk",
    ("1.2 info", "clientSpeaking on/off"): "test_an_utterance_becomes_one_final_prompt_in_the_recognition_language",
    ("1.2 info", "sendDigits playback is reported"): "test_play_and_digits_are_cycles_of_their_own_behind_open_text",
    ("1.2 info", "roundTripDelayMs"): "n/a (tests/test_relay_behaviours.py)",
    ("1.2 configUpdated", "confirms"): "n/a (tests/test_relay_behaviours.py)",
    ("1.3 validation", "10 consecutive"): CODEC,
    ("1.3 text", "token:null"): CODEC,
    ("1.3 text", "an empty token with last:true"): "test_an_empty_last_token_closes_the_cycle",
    ("1.3 text", "tokens are not trimmed"): "test_tokens_are_not_trimmed_and_speech_starts_before_last",
    ("1.3 text", "speech starts before last:true"): "test_tokens_are_not_trimmed_and_speech_starts_before_last",
    ("1.3 text", "lang: the voice"): "test_a_tokens_lang_is_its_voice_and_an_undeclared_one_an_error_once",
    ("1.3 text", "interruptible:false per message"): "test_a_messages_own_interruptible_overrides_the_session",
    ("1.3 text", "interruptible:true per message"): "test_a_messages_own_interruptible_overrides_the_session",
    ("1.3 text", "preemptible per message"): "test_preemption",
    ("1.3 text", "SSML passthrough"): "n/a (tests/test_relay_behaviours.py)",
    ("1.3 play", "played as its own talk cycle"): "test_play_and_digits_are_cycles_of_their_own_behind_open_text",
    ("1.3 play", "loop 0 plays 1000 times"): "test_a_play_of_loop_zero_is_queued_a_thousand_times_and_cut_like_speech",
    ("1.3 play", "source must be an http(s) URL"): CODEC,
    ("1.3 play", "a source that cannot be played"): "test_a_play_that_fails_is_an_error_and_the_queue_goes_on",
    ("1.3 play", "interruptible per play"): "test_a_play_of_loop_zero_is_queued_a_thousand_times_and_cut_like_speech",
    ("1.3 play", "preemptible per play"): "test_preemption",
    ("1.3 play", "fetched over HTTP"): "not the conversation's: relay_bridge/net (tests/test_play_sources.py)",
    ("1.3 sendDigits", "same queue as text"): "test_play_and_digits_are_cycles_of_their_own_behind_open_text",
    ("1.3 sendDigits", "text still open is flushed"): "test_play_and_digits_are_cycles_of_their_own_behind_open_text",
    ("1.3 sendDigits", "sent while the caller talks"):
        "test_digits_sent_while_the_caller_talks_go_out_at_once_and_the_speech_is_still_a_prompt",
    ("1.3 sendDigits", "digits not 0-9"): CODEC,
    ("1.3 sendDigits", "a speech barge-in cuts the tones"): "test_interruptible_matrix",
    ("1.3 sendDigits", "a key barge-in cuts the tones"): "test_a_key_cuts_digits_and_what_was_queued_behind_them",
    ("1.3 language", "ttsLanguage/transcriptionLanguage"): "test_a_language_message_switches_voice_and_recognition",
    ("1.3 language", "a switch in the middle"): "test_a_switch_mid_reply_keeps_the_old_voice_for_text_sent_before_it",
    ("1.3 end", "closes the app socket"): "test_end_and_stop_end_the_call_with_their_reasons",
    ("1.3 end", "session-ended callback"): "not the conversation's: relay_bridge/net (tests/test_handoff.py)",
    ("1.3 end", "after a hangup"): "test_end_and_stop_end_the_call_with_their_reasons",
    ("1.3 Oct 2026", "config and hints"): "n/a (tests/test_relay_behaviours.py)",
    ("1.4 interruptible", "none/dtmf/speech/any"): "test_interruptible_matrix",
    ("1.4 interruptible", "dtmf: speech does not cut"): "test_interruptible_matrix",
    ("1.4 interruptible", "welcomeGreetingInterruptible"):
        "test_the_greeting_is_spoken_first_with_its_own_interruptibility",
    ("1.4 interruptible", "the flag of the message being heard"): "test_the_flag_of_the_message_being_heard_decides",
    ("1.4 preemptible", "a new text/play cuts"): "test_preemption",
    ("1.4 preemptible", "a preemptible new message queues"): "test_preemption",
    ("1.4 preemptible", "nothing left to cut"): "test_preemption_after_the_output_finished_clears_nothing",
    ("1.4 sensitivity", "interruptSensitivity"): "test_sustained_speech_only_cuts_once_it_is_sustained",
    ("1.4 report", "reportInputDuringAgentSpeech for speech"):
        "test_speech_over_agent_speech_that_does_not_cut_is_reported_as_configured",
    ("1.4 report", "reportInputDuringAgentSpeech for keys"):
        "test_keys_over_agent_speech_that_do_not_cut_are_reported_as_configured",
    ("1.4 ignoreBackchannel", "short acknowledgements"): "n/a (tests/test_relay_behaviours.py)",
    ("4.6 setup", "from connected + start"): CODEC,
    ("4.6 interrupt", "clear + marks"): "test_cleared_marks_report_nothing",
    ("4.6 interrupt", "cleared marks that come back"): "test_cleared_marks_report_nothing",
    ("4.6 tokensPlayed", "from mark echoes"): "test_a_reply_is_bracketed_by_agent_speaking_and_reported_chunk_by_chunk",
    ("4.6 preemptible", "clear, then the new audio"): "test_preemption",
    ("4.6 sendDigits", "in-band tones"): AUDIO,
    ("4.6 play", "decoded to 8 kHz"): AUDIO,
    ("4.6 end", "close the socket"): "test_end_and_stop_end_the_call_with_their_reasons",
    ("4.6 errors", "10-bad-frames rule"): CODEC,
}


def test_every_row_of_the_behaviour_table_is_placed() -> None:
    from tests.test_relay_behaviours import BEHAVIOURS

    placed = {}
    for row in BEHAVIOURS:
        found = [v for (section, start), v in ROWS.items()
                 if row.section == section and row.behaviour.startswith(start)]
        assert len(found) == 1, (row.section, row.behaviour)
        placed[row.behaviour] = found[0]
    assert len(placed) == len(ROWS)
    missing = [name for name in placed.values() if name.startswith("test_") and name not in globals()]
    assert missing == []
