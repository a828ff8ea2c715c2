"""Languages: the [[languages]] config, per-call language parameters, and engines per language."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import trio

from relay_bridge.call.engines import LanguageEngines, Recognised, SpeechEngines, UnknownLanguage
from relay_bridge.config import MULTILINGUAL_MODEL, ConfigError, LanguageConfig, ModelChoice, load, replace
from relay_bridge.engines.base import Transcript, match_language
from relay_bridge.engines.fake import FakeSynthesizer, FakeTranscriber
from relay_bridge.engines.whisper import hint_prompt, join_hints
from relay_bridge.settings import SessionSettings, session_for_call

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "relay-bridge.toml"
SPANISH = [{"code": "en-US"}, {"code": "es-ES", "voice": "/voices/es_ES-davefx-medium.onnx"}]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- configuration ---------------------------------------------------------------------------------------------------

def test_the_default_declares_english_only() -> None:
    cfg = load()
    assert cfg.languages == (LanguageConfig("en-US"),)
    assert cfg.speech_model(cfg.languages[0]) == ModelChoice("tiny.en", key="asr.model")
    assert cfg.voice(cfg.languages[0]) == ModelChoice("en_US-joe-medium", key="tts.voice")


def test_the_documented_spanish_example_loads(tmp_path: Path) -> None:
    """The commented example in the shipped config is valid as written."""
    text = SHIPPED.read_text(encoding="utf-8")
    block = text[text.index("# Example: English and Spanish"):text.index("# A call then starts")]
    example = "\n".join(line.removeprefix("#").removeprefix("   ") for line in block.splitlines()[1:])
    cfg = load(write(tmp_path, example))
    assert [x.code for x in cfg.languages] == ["en-US", "es-ES", "multi"]
    en, es, multi = cfg.languages
    assert cfg.speech_model(en) == ModelChoice("tiny.en", key="asr.model")
    assert cfg.speech_model(es) == ModelChoice(MULTILINGUAL_MODEL, key="languages[1].speech_model")
    assert cfg.speech_model(multi) == ModelChoice(MULTILINGUAL_MODEL, key="languages[2].speech_model")
    assert cfg.voice(es) == ModelChoice(es.voice, es.voice, "languages[1].voice")  # a path, used as is
    assert cfg.voice(multi) == cfg.voice(en) == ModelChoice("en_US-joe-medium", key="tts.voice")


def test_a_language_table_in_a_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[session]\nlanguage = "es-MX"\n\n[[languages]]\ncode = "es-MX"\n'
                               'voice = "es_MX-claude-high"\nspeech_model = "./models/whisper-small"\n'))
    (es,) = cfg.languages
    assert cfg.session.language == "es-MX"
    # a name, resolved like tts.voice
    assert cfg.voice(es) == ModelChoice("es_MX-claude-high", key="languages[0].voice")
    assert cfg.speech_model(es) == ModelChoice("./models/whisper-small", "./models/whisper-small",
                                               "languages[0].speech_model")


def test_english_languages_inherit_the_asr_section() -> None:
    cfg = load(asr__model="base.en", asr__model_dir="/srv/whisper", languages=[{"code": "en-GB"}],
               session__language="en-GB")
    assert cfg.speech_model(cfg.languages[0]) == ModelChoice("base.en", "/srv/whisper", "asr.model_dir")


@pytest.mark.parametrize(("languages", "session", "needle"), [
    ([{"code": "en-US"}], {"language": "es-ES"}, "session.language 'es-ES' is not one of the declared languages"),
    ([{"code": "en-US"}], {"tts_language": "fr-FR"}, "session.tts_language 'fr-FR'"),
    ([{"code": "en-US"}], {"transcription_language": "multi"}, "session.transcription_language 'multi'"),
    ([{"code": "en-US"}, {"code": "EN-us"}], {}, "languages[1].code 'EN-us' is declared twice"),
    ([{"code": "english"}], {}, "languages[0].code must be a BCP-47 language tag"),
    ([{"code": "en_US"}], {}, "languages[0].code must be a BCP-47"),
    ([{"code": ""}], {}, "languages[0].code"),
    ([{"code": "en-US"}, {"code": "es-ES", "speech_model": "tiny.en"}], {},
     "languages[1].speech_model: 'tiny.en' recognises only English"),
    ([{"code": "en-US"}, {"code": "multi", "speech_model": "small.en"}], {}, "languages[1].speech_model"),
    ([], {}, "languages must declare at least one language"),
    ([{"code": "en-US", "voise": "x"}], {}, "unknown key 'languages[0].voise'"),
    ([{"code": "en-US", "voice": 3}], {}, "languages[0].voice: expected a string"),
    ("en-US", {}, "languages: expected an array of tables"),
    ([["en-US"]], {}, "languages: expected an array of tables"),
])
def test_invalid_languages_are_refused_naming_the_key(languages: object, session: dict[str, str],
                                                      needle: str) -> None:
    overrides = {f"session__{k}": v for k, v in session.items()}
    with pytest.raises(ConfigError) as exc:
        load(languages=languages, **overrides)
    assert needle in str(exc.value)


def test_english_only_models_are_refused_for_other_languages_when_inherited() -> None:
    # [asr] model only serves English languages, so a Spanish one gets the multilingual default...
    cfg = load(asr__model="small.en", languages=SPANISH)
    assert cfg.speech_model(cfg.languages[1]) == ModelChoice(MULTILINGUAL_MODEL, key="languages[1].speech_model")
    # ...and a path is trusted: the config cannot tell what a folder holds.
    load(languages=[{"code": "en-US"}, {"code": "es-ES", "speech_model": "/srv/tiny.en"}])


def test_language_codes_are_matched_without_regard_to_case() -> None:
    cfg = load(languages=SPANISH, session__language="ES-es", session__tts_language="en-us")
    assert cfg.language("es-es") is cfg.languages[1]
    with pytest.raises(KeyError):
        cfg.language("fr-FR")


def test_replace_validates_the_languages() -> None:
    with pytest.raises(ConfigError, match=re.escape("session.language 'de-DE'")):
        replace(load(), session__language="de-DE")
    cfg = replace(load(), session__language="de-DE", languages=(LanguageConfig("de-DE"),))
    assert cfg.session.language == "de-DE"


def test_the_shipped_config_declares_the_default_languages() -> None:
    data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    assert data["languages"] == [{"code": "en-US", "voice": "", "speech_model": "", "backchannels": []}]


# --- per call --------------------------------------------------------------------------------------------------------

DECLARED = ("en-US", "es-ES", "multi")


@pytest.mark.parametrize(("code", "expected"), [
    ("en-US", "en-US"), ("EN-us", "en-US"), ("es", "es-ES"), ("en", "en-US"), ("multi", "multi"),
    ("es-MX", None), ("fr", None), ("", None), ("mul", None),
])
def test_match_language(code: str, expected: str | None) -> None:
    assert match_language(code, DECLARED) == expected


def test_match_language_does_not_find_multi_by_a_subtag() -> None:
    assert match_language("mu", ("multi",)) is None
    assert match_language("en", ("multi", "en-GB")) == "en-GB"


@pytest.mark.parametrize(("params", "expected"), [
    ({"language": "es-es"}, SessionSettings(language="es-ES")),
    ({"language": "es"}, SessionSettings(language="es-ES")),
    ({"ttsLanguage": "es-ES"}, SessionSettings(tts_language="es-ES")),
    ({"transcriptionLanguage": "multi"}, SessionSettings(transcription_language="multi")),
    ({"hints": "Zoë, relay-bridge"}, SessionSettings(hints="Zoë, relay-bridge")),
])
def test_language_parameters(params: dict[str, str], expected: SessionSettings) -> None:
    assert session_for_call(SessionSettings(), params, DECLARED) == (expected, [])


@pytest.mark.parametrize("name", ["language", "ttsLanguage", "transcriptionLanguage"])
def test_an_undeclared_language_parameter_is_refused(name: str) -> None:
    settings, problems = session_for_call(SessionSettings(), {name: "fr-FR", "interruptible": "speech"}, DECLARED)
    assert settings == SessionSettings(interruptible="speech")
    assert len(problems) == 1
    assert problems[0].startswith(f"{name} 'fr-FR' is not a declared language (en-US, es-ES, multi); using ")


def test_language_precedence_within_the_session() -> None:
    s = SessionSettings(language="es-ES")
    assert (s.speech_language, s.recognition_language) == ("es-ES", "es-ES")
    s = SessionSettings(language="es-ES", tts_language="en-US", transcription_language="multi")
    assert (s.speech_language, s.recognition_language) == ("en-US", "multi")


# --- engines ---------------------------------------------------------------------------------------------------------

def speech(seconds: float) -> np.ndarray:  # type: ignore[type-arg]
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)


def three_languages() -> tuple[SpeechEngines, FakeTranscriber, FakeTranscriber, FakeSynthesizer, FakeSynthesizer]:
    en_asr, base_asr = FakeTranscriber(), FakeTranscriber(detects="es")
    en_voice, es_voice = FakeSynthesizer(), FakeSynthesizer(frequency_hz=660)
    engines = SpeechEngines(en_asr, en_voice, language="en-US", more_languages=(
        LanguageEngines("es-ES", base_asr, es_voice), LanguageEngines("multi", base_asr, en_voice)))
    return engines, en_asr, base_asr, en_voice, es_voice


def test_engines_list_and_find_the_declared_languages() -> None:
    engines = three_languages()[0]
    assert engines.languages == ("en-US", "es-ES", "multi")
    assert engines.declares("es-es") and engines.declares("es") and engines.declares("multi")
    assert not engines.declares("fr-FR") and not engines.declares("")
    assert engines.engines_for("").code == "en-US"  # "" is the default language
    with pytest.raises(UnknownLanguage, match=r"'fr-FR' is not declared \(declared: en-US, es-ES, multi\)"):
        engines.engines_for("fr-FR")


def test_one_language_engines_as_before() -> None:
    engines = SpeechEngines(FakeTranscriber(), FakeSynthesizer())
    assert engines.languages == ("en-US",)


def test_a_language_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        SpeechEngines(FakeTranscriber(), FakeSynthesizer(), more_languages=(
            LanguageEngines("EN-US", FakeTranscriber(), FakeSynthesizer()),))


async def test_recognition_uses_the_model_of_the_language() -> None:
    engines, en_asr, base_asr, _, _ = three_languages()
    with trio.fail_after(30):  # worker threads: the real clock
        en = await engines.recognise(speech(1.0), 8000, "en-US")
        es = await engines.recognise(speech(1.0), 8000, "es-ES", hints="Zoë, contraseña")
        multi = await engines.recognise(speech(0.5), 8000, "multi")
        reduced = await engines.recognise(speech(0.5), 8000, "es")  # a caller that passes Whisper's form
        default = await engines.transcribe(speech(0.5), 8000)
    assert en == Recognised("1.0 seconds of speech", "en-US")
    assert es == Recognised("(es) 1.0 seconds of speech", "es-ES")
    assert multi == Recognised("(es) 0.5 seconds of speech", "es")  # the detected primary tag
    assert reduced == Recognised("(es) 0.5 seconds of speech", "es-ES")
    assert default == "0.5 seconds of speech"
    assert en_asr.languages == ["en", "en"]
    assert base_asr.languages == ["es", "", "es"]  # "" asks the model to detect the language
    assert base_asr.hints == ["Zoë, contraseña", "", ""]


async def test_synthesis_uses_the_voice_of_the_language() -> None:
    engines, _, _, en_voice, es_voice = three_languages()
    with trio.fail_after(30):
        hello = await engines.synthesize("Hello.", 8000)
        hola = await engines.synthesize("Hola.", 8000, language="es-ES")
        multi = await engines.synthesize("Hi.", 8000, language="multi")
    assert en_voice.texts == ["Hello.", "Hi."] and es_voice.texts == ["Hola."]
    assert len(hello) > 0 and len(hola) > 0 and len(multi) > 0
    # Each voice is recognisable by its tone: the dominant frequency of the 8 kHz audio.
    peak = [np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x) for x in (hello, hola)]
    assert abs(peak[0] - 440) < 20 and abs(peak[1] - 660) < 20


async def test_an_undeclared_language_fails_before_any_work() -> None:
    engines, en_asr, base_asr, en_voice, es_voice = three_languages()
    with pytest.raises(UnknownLanguage):
        await engines.recognise(speech(0.5), 8000, "fr-FR")
    with pytest.raises(UnknownLanguage):
        await engines.synthesize("Bonjour.", 8000, language="fr-FR")
    assert en_asr.calls == base_asr.calls == [] and en_voice.texts == es_voice.texts == []


def test_the_fake_transcriber_marks_other_languages() -> None:
    fake = FakeTranscriber(script=("hola", ""))
    audio = np.zeros(160, dtype=np.float32)
    assert fake.transcribe(audio, "es") == Transcript("(es) hola", "es")
    assert fake.transcribe(audio, "es") == Transcript("", "es")  # nothing said stays empty
    assert FakeTranscriber().transcribe(audio, "") == Transcript("0.0 seconds of speech", "en")


@pytest.mark.parametrize(("parts", "expected"), [
    (("", ""), ""),
    (("Acme", ""), "Acme"),
    (("Acme, Zoë", "Zoë,  relay-bridge ,"), "Acme, Zoë, relay-bridge"),
])
def test_join_hints(parts: tuple[str, str], expected: str) -> None:
    assert join_hints(*parts) == expected


@pytest.mark.parametrize(("parts", "expected"), [
    (("", ""), ""),
    (("Acme", "Zoë"), "Acme, Zoë."),  # closed, so Whisper does not continue it (see hint_prompt)
    (("", "Is it Acme?"), "Is it Acme?"),
])
def test_hint_prompt(parts: tuple[str, str], expected: str) -> None:
    assert hint_prompt(*parts) == expected
