"""``make demo``: a complete simulated phone call on loopback with the real models.

The caller speaks real recorded human speech (bundled clips), talks over the agent once (barge-in)
and presses a key; the example app greets, answers what it heard, and reacts to the key by saying
so and dialling digits with ``sendDigits`` (in-band DTMF, which the caller decodes). The call asks
for partial prompts (``partialPrompts``), so the app sees the transcript grow while the caller speaks. A live
timeline is printed, then the latency of each step, and the call is written as a stereo WAV
(left: the caller, right: what the caller heard), time-aligned.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import trio

from relay_bridge.call.engines import wait_engines_idle
from relay_bridge.config import Config
from relay_bridge.daemon import load_engines
from relay_bridge.loopback import LoopbackCall, first_after, run_loopback_call
from relay_bridge.sim.agent import AgentScript
from relay_bridge.sim.caller import SimulatedCaller, Spoken
from relay_bridge.sim.clips import bundled_clips
from relay_bridge.sim.timeline import Timeline

LONG_ANSWER = ("Let me tell you what relay bridge does. It takes the audio of your call, finds where you "
               "stop talking, and turns your words into text on this very machine. Then it speaks my "
               "replies back to you with a local voice, twenty milliseconds at a time.")


def demo_agent() -> AgentScript:
    def answer(heard: str, turn: int) -> str:
        if turn == 1:
            return f"I heard: {heard} {LONG_ANSWER}"
        return f"Sorry for talking over you. I heard: {heard} Now press any key on your phone."

    return AgentScript(answer=answer, on_key=lambda d: f"You pressed {d}. I will dial the front desk for you now.",
                       digits_after_key="1w23#")


async def demo_call(cfg: Config, engines_loader: object = None) -> tuple[LoopbackCall, list[Spoken]]:
    clips = bundled_clips()
    spoken: list[Spoken] = []

    async def script(caller: SimulatedCaller) -> None:
        await caller.wait_agent_done(quiet_s=0.5)  # the greeting
        spoken.append(await caller.say(clips["hello-world"]))
        await caller.wait_agent_audio()
        await caller.pause(2.5)  # well into the long answer...
        spoken.append(await caller.say(clips["vm-sorry"]))  # ...the caller talks over it
        await caller.wait_agent_done()
        await caller.press("5")
        await caller.wait_agent_done()
        await caller.hang_up()

    engines = load_engines(cfg)
    timeline = Timeline(out=sys.stdout)
    call = await run_loopback_call(engines, cfg, script, agent_script=demo_agent(),
                                   timeline=timeline, custom_parameters={"from": "+15550100", "to": "+15550199",
                                                                     "partialPrompts": "true"})
    return call, spoken


def latency_report(call: LoopbackCall, spoken: list[Spoken]) -> list[str]:
    lines = []
    prompts = call.timeline.times("app", "<- prompt")
    for s in spoken:
        p = first_after(prompts, s.end)
        if p is not None:
            lines.append(f"end of caller speech -> prompt at app: {(p - s.end) * 1000:6.0f} ms  ({s.clip.text!r})")
    for ms in call.token_to_audio_ms():
        lines.append(f"app's first text token -> first audio at caller: {ms:6.0f} ms")
    for ms in call.onset_to_clear_ms([s.onset for s in spoken]):
        lines.append(f"caller speech onset -> clear (barge-in): {ms:6.0f} ms")
    leads = call.caller.ear.leads_ms
    if leads:
        lines.append(f"outbound lead over real time: median {statistics.median(leads):.0f} ms, max {max(leads):.0f} ms")
    return lines


def main(cfg: Config, out_dir: Path) -> int:
    t0 = time.perf_counter()
    print("relay-bridge demo: a simulated Twilio call on loopback (real ASR and TTS, real recorded speech)\n")
    call, spoken = trio.run(demo_call, cfg)
    wait_engines_idle(10)  # recognitions abandoned when the call ended finish before the models go
    print("\nLatencies")
    for line in latency_report(call, spoken):
        print("  " + line)
    session = call.agent.sessions[0] if call.agent.sessions else None
    if session is not None:
        for i in session.interrupts:
            print(f"  interrupt reported: heard {i.utterance_until_interrupt!r} "
                  f"({i.duration_until_interrupt_ms:.0f} ms)")
        for p in session.partials:
            print(f"  partial prompt: {p.voice_prompt!r}")
    heard_digits = call.caller.heard_digits()
    print(f"  DTMF the caller heard from sendDigits: {heard_digits or '(none)'}")
    wav = out_dir / "demo-call.wav"
    call.caller.write_wav(wav)
    print(f"\nCall audio (left: caller, right: what the caller heard): {wav}")
    ok = (session is not None and len(session.prompts) >= 2 and session.partials and session.interrupts
          and session.digits
          and call.caller.ear.frames_played > 0 and heard_digits == "123#")
    print(f"Demo {'finished' if ok else 'FAILED'} in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
