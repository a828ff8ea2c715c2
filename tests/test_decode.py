"""Decoding play media: common formats to mono int16 at 8 kHz, with a duration cap and clear errors."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from bridge.audio.decode import DecodeError, decode_audio, encode_audio


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


def peak_hz(samples: NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "flac"])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_formats_decode_to_8khz_mono(fmt: str, rate: int) -> None:
    data = encode_audio(tone(440, 0.5, rate), rate, fmt)
    out = decode_audio(data, max_duration_s=5)
    assert out.dtype == np.int16 and out.ndim == 1
    assert abs(out.size - 4000) <= 200  # codec padding and resampler edges
    assert abs(peak_hz(out) - 440) < 20
    rms = float(np.sqrt(np.mean(out[400:-400].astype(np.float64) ** 2)))
    assert 0.3 * 32767 / np.sqrt(2) * 0.8 < rms < 0.3 * 32767 / np.sqrt(2) * 1.2


def test_8khz_pcm_wav_is_exact() -> None:
    samples = np.random.default_rng(7).integers(-32768, 32767, 1234, dtype=np.int16)
    assert np.array_equal(decode_audio(encode_audio(samples, 8000, "wav"), max_duration_s=1), samples)


def test_stereo_is_mixed_down() -> None:
    left, right = tone(300, 0.25, 8000), tone(1000, 0.25, 8000)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.stack([left, right], axis=1).tobytes())
    out = decode_audio(buffer.getvalue(), max_duration_s=1)
    assert out.size == left.size
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    freqs = np.fft.rfftfreq(out.size, 1 / 8000)
    strong = set(freqs[spectrum > spectrum.max() / 2].round())
    assert strong == {300.0, 1000.0}


def test_duration_cap() -> None:
    data = encode_audio(tone(440, 2.0, 8000), 8000, "wav")
    assert decode_audio(data, max_duration_s=2.0).size == 16000
    with pytest.raises(DecodeError, match=r"longer than the limit of 1\.5 s"):
        decode_audio(data, max_duration_s=1.5)


def png() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 4, 4, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((4, 4, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "empty file"),
    (b"<html><body>Not found</body></html>" * 20, "cannot decode"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode"),
    (b"\x00" * 4096, "cannot decode"),
    (png(), "no audio stream"),
])
def test_undecodable_input(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_audio(data, max_duration_s=10)


def test_encode_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        encode_audio(tone(440, 0.1, 8000), 8000, "aiff")
