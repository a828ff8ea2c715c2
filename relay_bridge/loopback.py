"""A whole call on loopback: the real server, the example app and the simulated caller, in one trio run.

Shared by the demo, the end-to-end tests and the benchmarks. All three parts use real TCP
WebSockets on 127.0.0.1; the engines are whatever the caller of this module passes in.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from relay_bridge.call.engines import SpeechEngines
from relay_bridge.call.record import CallStats
from relay_bridge.config import Config
from relay_bridge.server import MediaStreamsServer, serve_media_streams
from relay_bridge.sim.agent import AgentScript, ScriptedAgent
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.timeline import Timeline

CALL_END_TIMEOUT_S = 5.0
REPLY_WINDOW_S = 5.0  # audio later than this after a reply's first token is not that reply's
BARGE_IN_WINDOW_S = 2.0  # a clear later than this after an onset was not caused by it


@dataclass
class LoopbackCall:
    caller: SimulatedCaller
    agent: ScriptedAgent
    server: MediaStreamsServer
    timeline: Timeline

    @property
    def stats(self) -> CallStats:
        return self.server.finished[0]

    def token_to_audio_ms(self) -> list[float]:
        """For each app reply: its first text token to the first agent audio at the caller."""
        starts = [t for session in self.agent.sessions for t in session.replies_started]
        return [(a - t) * 1000 for t in starts
                if (a := first_after(self.caller.ear.media_arrivals, t)) is not None and a - t < REPLY_WINDOW_S]

    def onset_to_clear_ms(self, onsets: list[float]) -> list[float]:
        """For each onset of caller speech over the agent: the time until the caller got ``clear``."""
        return [(c - o) * 1000 for o in onsets
                if (c := first_after(self.caller.ear.clears, o)) is not None and c - o < BARGE_IN_WINDOW_S]


async def run_loopback_call(engines: SpeechEngines, cfg: Config,
                            script: Callable[[SimulatedCaller], Awaitable[None]], *,
                            agent_script: AgentScript | None = None, timeline: Timeline | None = None,
                            token_interval_s: float = 0.01,
                            custom_parameters: dict[str, str] | None = None) -> LoopbackCall:
    timeline = timeline or Timeline()
    agent = ScriptedAgent(timeline, agent_script, token_interval_s=token_interval_s)
    async with trio.open_nursery() as nursery:
        app_port = await nursery.start(agent.serve, "127.0.0.1", 0)
        # The simulated caller presents no credentials: this loopback server lets it in explicitly (and so
        # takes none from the config, which would make every stream present some).
        settings = dataclasses.replace(cfg.server, allow_unauthenticated=True, twilio_auth_token="",
                                       telnyx_stream_token="")
        if not settings.app_url:
            settings = dataclasses.replace(settings, app_url=f"ws://127.0.0.1:{app_port}")
        server = MediaStreamsServer(settings, cfg.call, engines)
        server.keep_stats = True
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        shutdown = trio.Event()
        await nursery.start(serve_media_streams, server, listeners, shutdown)
        port = listeners[0].socket.getsockname()[1]
        caller = SimulatedCaller(f"ws://127.0.0.1:{port}/media", timeline, custom_parameters=custom_parameters)
        await caller.run(script)
        with trio.move_on_after(CALL_END_TIMEOUT_S):
            await server.wait_idle()
        shutdown.set()
        nursery.cancel_scope.cancel()
    return LoopbackCall(caller=caller, agent=agent, server=server, timeline=timeline)


def first_after(times: list[float], t: float) -> float | None:
    """The first of the sorted ``times`` at or after ``t``."""
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None
