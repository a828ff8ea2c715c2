"""An example ConversationRelay app: a scripted agent, written against the ConversationRelay protocol
exactly as an app for Twilio's hosted service would be.

It greets the caller, answers each final prompt with what it heard, reacts to keypresses, and
streams every reply token by token (``token_interval_s`` apart, like an LLM) ending with
``last: true``. On ``interrupt`` it stops its own token stream, as Twilio advises apps to do.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from relay_bridge.protocols import relay
from relay_bridge.protocols.fields import FrameError
from relay_bridge.sim.timeline import Timeline

TOKEN_RE = re.compile(r"\s*\S+")


def tokens(text: str) -> list[str]:
    """Split a reply into LLM-like tokens: words with their leading space."""
    return TOKEN_RE.findall(text)


@dataclass
class AgentScript:
    greeting: str = "Hello! Thanks for calling the relay bridge demo. Say something, or press a key."
    answer: Callable[[str, int], str] = field(
        default=lambda heard, turn: f"I heard: {heard}")  # (prompt text, prompt number) -> reply
    on_key: Callable[[str], str] = field(default=lambda digit: f"You pressed {digit}.")
    end_after_key: str = ""  # a key after whose reply the app sends ``end``
    digits_after_key: str = ""  # DTMF the app sends (``sendDigits``) after its reply to a key
    handoff_data: str = '{"reason": "caller pressed the end key"}'


@dataclass
class AgentSession:
    setup: relay.Setup | None = None
    prompts: list[relay.Prompt] = field(default_factory=list)
    partials: list[relay.Prompt] = field(default_factory=list)  # prompts with last: false
    interrupts: list[relay.Interrupt] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    infos: list[relay.Info] = field(default_factory=list)
    received: list[str] = field(default_factory=list)  # message types in arrival order
    replies_started: list[float] = field(default_factory=list)  # clock time of each reply's first token
    prompt_times: list[float] = field(default_factory=list)  # clock time each final prompt arrived
    partial_times: list[float] = field(default_factory=list)  # and each partial one
    closed: trio.Event = field(default_factory=trio.Event)


class ScriptedAgent:
    def __init__(self, timeline: Timeline, script: AgentScript | None = None, *,
                 token_interval_s: float = 0.01) -> None:
        self.timeline = timeline
        self.script = script or AgentScript()
        self.token_interval_s = token_interval_s
        self.sessions: list[AgentSession] = []

    async def serve(self, host: str = "127.0.0.1", port: int = 0,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self.handle, host, port, None)
            task_status.started(server.port)

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        session = AgentSession()
        self.sessions.append(session)
        try:
            await self._converse(ws, session)
        finally:
            session.closed.set()
            self.timeline.add("app", "socket closed")

    async def _converse(self, ws: WebSocketConnection, session: AgentSession) -> None:
        reply_scope: list[trio.CancelScope] = []

        async def speak(text: str, end_after: bool = False, digits: str = "") -> None:
            for scope in reply_scope:
                scope.cancel()
            reply_scope.clear()
            scope = trio.CancelScope()
            reply_scope.append(scope)
            nursery.start_soon(self._stream_reply, ws, session, text, end_after, digits, scope)

        async with trio.open_nursery() as nursery:
            while True:
                try:
                    raw = await ws.get_message()
                except ConnectionClosed:
                    nursery.cancel_scope.cancel()
                    return
                try:
                    msg = relay.parse_relay_message(raw)
                except FrameError as exc:
                    self.timeline.add("app", "bad frame", str(exc))
                    continue
                session.received.append(type(msg).__name__ if not isinstance(msg, relay.Info)
                                        else f"{msg.name}={msg.value}")
                match msg:
                    case relay.Setup():
                        session.setup = msg
                        self.timeline.add("app", "<- setup",
                                          f"session {msg.session_id[:10]}… call {msg.call_sid[:10]}…")
                        await speak(self.script.greeting)
                    case relay.Prompt(last=True):
                        session.prompts.append(msg)
                        session.prompt_times.append(
                            self.timeline.add("app", "<- prompt", repr(msg.voice_prompt), prompt=msg.voice_prompt))
                        await speak(self.script.answer(msg.voice_prompt, len(session.prompts)))
                    case relay.Prompt():
                        session.partials.append(msg)
                        session.partial_times.append(self.timeline.add("app", "<- partial", repr(msg.voice_prompt)))
                    case relay.DtmfDigit():
                        session.digits.append(msg.digit)
                        self.timeline.add("app", "<- dtmf", msg.digit)
                        await speak(self.script.on_key(msg.digit), end_after=msg.digit == self.script.end_after_key,
                                    digits=self.script.digits_after_key)
                    case relay.Interrupt():
                        session.interrupts.append(msg)
                        for scope in reply_scope:
                            scope.cancel()
                        self.timeline.add("app", "<- interrupt", f"heard {msg.utterance_until_interrupt!r} "
                                          f"({msg.duration_until_interrupt_ms:.0f} ms)")
                    case relay.Error():
                        session.errors.append(msg.description)
                        self.timeline.add("app", "<- error", msg.description)
                    case relay.Info():
                        session.infos.append(msg)
                        self.timeline.add("app", "<- info", f"{msg.name}={msg.value}", name=msg.name, value=msg.value)

    async def _stream_reply(self, ws: WebSocketConnection, session: AgentSession, text: str, end_after: bool,
                            digits: str, scope: trio.CancelScope) -> None:
        # The bridge may end the call (the caller hung up) while a reply is still streaming.
        with scope, contextlib.suppress(ConnectionClosed):
            session.replies_started.append(self.timeline.add("app", "-> text", repr(text)))
            for tok in tokens(text):
                await ws.send_message(relay.text(tok))
                await trio.sleep(self.token_interval_s)
            await ws.send_message(relay.text("", last=True))
            if digits:
                self.timeline.add("app", "-> sendDigits", digits)
                await ws.send_message(relay.send_digits(digits))
            if end_after:
                await trio.sleep(0.5)
                self.timeline.add("app", "-> end", self.script.handoff_data)
                await ws.send_message(relay.end(self.script.handoff_data))
