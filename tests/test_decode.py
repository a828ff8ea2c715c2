"""Decoding play media: the accepted formats to mono int16 at 8 kHz, with a duration cap, a stop hook and clear errors.

What FFmpeg would do with playlists, concat scripts and SDP, and why they are refused: tests/test_play_sources.py.
"""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from relay_bridge.audio.decode import DecodeError, DecodeStopped, decode_audio, encode_audio, sniff


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
    (png(), "cannot decode: a PNG image is not a supported audio format"),
])
def test_undecodable_input(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_audio(data, max_duration_s=10)


def test_encode_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        encode_audio(tone(440, 0.1, 8000), 8000, "aiff")


def test_aac_in_adts_decodes() -> None:
    out = decode_audio(encode_audio(tone(440, 0.5, 16000), 16000, "aac"), max_duration_s=5)
    assert 4000 <= out.size <= 4000 + 1024  # plus the encoder's priming, which ADTS cannot say to skip
    assert abs(peak_hz(out) - 440) < 20


def test_a_codec_the_container_does_not_normally_carry_is_refused() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as container:
        stream = container.add_stream("g722", rate=16000, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(tone(440, 0.2, 16000).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(DecodeError, match="cannot decode: g722 audio in WAV is not supported"):
        decode_audio(buffer.getvalue(), max_duration_s=5)


def id3(payload: bytes) -> bytes:
    size = len(payload)
    return b"ID3\x04\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F)) + payload


@pytest.mark.parametrize(("data", "what", "demuxer"), [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV", "wav"),
    (b"RF64\xff\xff\xff\xffWAVEds64", "WAV", "wav"),
    (b"RIFF\x24\x00\x00\x00AVI LIST", "a RIFF 'AVI ' file", None),
    (b"fLaC\x00\x00\x00\x22", "FLAC", "flac"),
    (b"OggS\x00\x02" + bytes(20), "Ogg", "ogg"),
    (b"\xff\xfb\x90\x64" + bytes(8), "MP3", "mp3"),
    (id3(b"TIT2" + bytes(30)) + b"\xff\xfb\x90\x64", "MP3", "mp3"),
    (id3(bytes(10)) + bytes(100) + b"\xff\xf1\x50\x80", "AAC (ADTS)", "aac"),  # ID3 padding skipped
    (b"\xff\xf1\x50\x80\x01\x7f\xfc", "AAC (ADTS)", "aac"),
    (id3(bytes(10)) + b"fLaC", "FLAC", "flac"),
    (id3(bytes(10)) + b"<html>", "an ID3 tag followed by no audio this bridge reads", None),
    (b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1/a.ts\n", "an M3U/HLS playlist", None),
    (b"\xef\xbb\xbf  #EXTM3U\n", "an M3U/HLS playlist", None),
    (b"ffconcat version 1.0\nfile a.wav\n", "an ffconcat script", None),
    (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n", "an SDP session description", None),
    (b"[playlist]\nFile1=http://x/a.mp3\n", "a PLS playlist", None),
    (b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">', "a DASH manifest (MPD)", None),
    (b"<smil><body/></smil>", "a SMIL playlist", None),
    (b"http://127.0.0.1/a.wav\n", "a playlist or text file", None),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "an MP4/M4A file", None),
    (b"\x1a\x45\xdf\xa3\x01\x00", "a Matroska/WebM file", None),
    (b"FORM\x00\x00\x00\x10AIFF", "an AIFF file", None),
    (b"\xff\xd8\xff\xe0", "a JPEG image", None),
    (b"\xff\xff\xff\xff", "an unrecognised format", None),  # a reserved MPEG version and layer
    (bytes(64), "an unrecognised format", None),
])
def test_sniff(data: bytes, what: str, demuxer: str | None) -> None:
    assert sniff(data) == (what, demuxer)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "flac", "aac"])
def test_should_stop_is_asked_before_every_packet(fmt: str) -> None:
    data = encode_audio(tone(440, 1.0, 8000), 8000, fmt)
    with av.open(io.BytesIO(data), "r") as container:
        packets = len(list(container.demux()))  # the empty packets that flush each stream included
    asked: list[int] = []

    def never() -> bool:
        asked.append(1)
        return False

    assert decode_audio(data, max_duration_s=5, should_stop=never).size >= 8000
    assert len(asked) == packets

    def after_three() -> bool:
        asked.append(1)
        return len(asked) > packets + 3

    with pytest.raises(DecodeStopped, match=r"decoding stopped after [\d.]+ s of audio"):
        decode_audio(data, max_duration_s=5, should_stop=after_three)
    assert len(asked) == packets + 4
