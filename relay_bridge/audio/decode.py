"""Audio files (WAV, MP3, Ogg Vorbis or Opus, FLAC, AAC) to mono 16-bit PCM at 8 kHz.

Theory of operation. A ``play`` source is chosen by the app, so these bytes are untrusted input to
FFmpeg, and FFmpeg is more than a decoder. Left to probe, it picks among hundreds of demuxers, and
some of them open further inputs by name: an ffconcat script reads files relative to the bridge's
working directory, an HLS playlist fetches its segment URLs with FFmpeg's own HTTP client (past
the address rule of ``relay_bridge/call/http.py``), and an SDP description binds UDP ports and waits for
RTP from anyone, forever. So FFmpeg never chooses: ``sniff`` recognises the container from its
first bytes, only a few plain audio containers are accepted (``FORMATS``), and the file is opened
with that demuxer named explicitly. As a second wall the open also sets ``format_whitelist`` to
that one demuxer and ``protocol_whitelist`` to a name no protocol has: the file itself is a memory
buffer and needs no protocol, and FFmpeg copies both lists into any nested context it creates
(PyAV's ``io_open`` hook is no substitute: a nested context such as concat's does not inherit it).
The audio stream's codec must then be one the container normally carries (``CODECS``). Anything
else is a ``DecodeError`` that names what the bytes look like.

The first audio stream is decoded packet by packet and FFmpeg's resampler mixes it down to mono s16
at the target rate as frames arrive, so memory stays bounded by ``max_duration_s`` of output however
large the input claims to be. Work is bounded by the caller: a crafted file can keep FFmpeg busy for
long, a thread cannot be killed, and this layer reads no clock, so ``should_stop`` (the runtime's
time budget) is asked before every packet and ends the decode with ``DecodeStopped``.
``encode_audio`` is the reverse, for tests and tools that need a file in a given format.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import av
import numpy as np
from numpy.typing import NDArray

from relay_bridge.audio.telephony import SAMPLE_RATE_HZ

# Output format -> (container, codec, sample rate the codec accepts or None for any).
ENCODINGS = {
    "wav": ("wav", "pcm_s16le", None),
    "mp3": ("mp3", "libmp3lame", None),
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", None),
    "aac": ("adts", "aac", None),
}

# What ``sniff`` accepts: FFmpeg demuxer -> the name used in messages. None of these demuxers opens
# anything but its own input. Left out on purpose: MP4/M4A (the mov demuxer follows external data
# references, "dref", when enabled, and is a large parser for one more way to wrap AAC), Matroska/WebM
# and everything else FFmpeg reads.
FORMATS = {"wav": "WAV", "mp3": "MP3", "ogg": "Ogg", "flac": "FLAC", "aac": "AAC (ADTS)"}
SUPPORTED = "WAV, MP3, Ogg Vorbis or Opus, FLAC, AAC in ADTS"

# Demuxer -> FFmpeg decoders accepted for its audio stream (PCM of any layout in WAV, "pcm_*").
CODECS = {
    "wav": frozenset({"pcm_*", "adpcm_ms", "adpcm_ima_wav", "gsm_ms"}),
    "mp3": frozenset({"mp3float", "mp3", "mp2float", "mp2", "mp1float", "mp1"}),
    "ogg": frozenset({"vorbis", "libvorbis", "opus", "libopus", "flac"}),
    "flac": frozenset({"flac"}),
    "aac": frozenset({"aac", "aac_fixed", "libfdk_aac"}),
}

# A protocol name that matches no protocol: FFmpeg documents no "none" value, but any list without
# a real protocol name refuses them all (tests/test_play_sources.py shows it does).
NO_PROTOCOLS = "none"

_ID3_HEADER = 10
_MAX_PADDING = 4096  # zero bytes tolerated between an ID3 tag and the first audio frame


class DecodeError(ValueError):
    """The bytes are not audio this bridge can decode, or the audio is too long."""


class DecodeStopped(DecodeError):
    """``should_stop`` said so before the end of the file (the caller's budget ran out)."""


def _mpeg_audio_kind(head: bytes) -> str | None:
    """"mp3" or "aac" for an MPEG audio or ADTS frame header at the start of ``head``."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0xF6 == 0xF0:  # 12-bit sync, layer 00: ADTS
        return "aac"
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, sample_rate = head[2] >> 4, (head[2] >> 2) & 3
    if version != 1 and layer != 0 and bitrate != 15 and sample_rate != 3:  # none of them reserved
        return "mp3"
    return None


def _after_id3(data: bytes) -> int:
    """The offset past any ID3v2 tags (and zero padding after them) at the start of ``data``."""
    offset = 0
    while data[offset:offset + 3] == b"ID3" and len(data) >= offset + _ID3_HEADER:
        size_bytes = data[offset + 6:offset + 10]
        if any(b & 0x80 for b in size_bytes):
            break  # not a syncsafe size: not a tag
        size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
        footer = _ID3_HEADER if data[offset + 5] & 0x10 else 0
        offset += _ID3_HEADER + size + footer
    if offset:
        end = min(len(data), offset + _MAX_PADDING)
        while offset < end and data[offset] == 0:
            offset += 1
    return offset


def _describe_text(text: bytes) -> str | None:
    """What a text-looking file is, for the formats FFmpeg would follow or people mistake for audio."""
    lower = text.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for prefix, what in ((b"#extm3u", "an M3U/HLS playlist"), (b"ffconcat version", "an ffconcat script"),
                         (b"[playlist]", "a PLS playlist"), (b"<!doctype html", "an HTML page"),
                         (b"<html", "an HTML page"), (b"%pdf", "a PDF document")):
        if lower.startswith(prefix):
            return what
    if lower.startswith(b"v=0") and lower[3:4] in (b"\r", b"\n"):
        return "an SDP session description"
    if lower.startswith((b"<?xml", b"<mpd", b"<smil")):
        if b"<mpd" in lower:
            return "a DASH manifest (MPD)"
        if b"<smil" in lower:
            return "a SMIL playlist"
        return "an XML document"
    if lower.startswith((b"http://", b"https://", b"file:", b"#")):
        return "a playlist or text file"
    return None


def sniff(data: bytes) -> tuple[str, str | None]:
    """What ``data`` looks like (for messages) and the FFmpeg demuxer to read it with (None: refused)."""
    head = data[:16]
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and len(head) >= 12:
        if head[8:12] == b"WAVE":
            return FORMATS["wav"], "wav"
        return f"a RIFF {head[8:12].decode('latin-1')!r} file", None
    if head.startswith(b"fLaC"):
        return FORMATS["flac"], "flac"
    if head.startswith(b"OggS"):
        return FORMATS["ogg"], "ogg"
    start = _after_id3(data)
    kind = _mpeg_audio_kind(data[start:start + 4])
    if kind is not None:
        return FORMATS[kind], kind
    if start and data[start:start + 4] == b"fLaC":
        return FORMATS["flac"], "flac"
    if start:
        return "an ID3 tag followed by no audio this bridge reads", None
    binary = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
              b"\x1aE\xdf\xa3": "a Matroska/WebM file", b".snd": "an AU file", b"FORM": "an AIFF file",
              b"PK\x03\x04": "a ZIP archive"}
    for magic, what in binary.items():
        if head.startswith(magic):
            return what, None
    if head[4:8] == b"ftyp":
        return "an MP4/M4A file", None
    return _describe_text(data[:256]) or "an unrecognised format", None


def _codec_allowed(demuxer: str, codec: str) -> bool:
    allowed = CODECS[demuxer]
    return codec in allowed or ("pcm_*" in allowed and codec.startswith("pcm_"))


def decode_audio(data: bytes, *, max_duration_s: float, rate: int = SAMPLE_RATE_HZ,
                 should_stop: Callable[[], bool] | None = None) -> NDArray[np.int16]:
    """Decode a whole audio file to mono int16 at ``rate``; longer than ``max_duration_s`` is an error.

    ``should_stop`` is asked before each packet; when it answers true the decode ends with
    ``DecodeStopped``.
    """
    if not data:
        raise DecodeError("empty file")
    what, demuxer = sniff(data)
    if demuxer is None:
        raise DecodeError(f"cannot decode: {what} is not a supported audio format (supported: {SUPPORTED})")
    max_samples = int(max_duration_s * rate)
    pieces: list[NDArray[np.int16]] = []
    total = 0
    options = {"format_whitelist": demuxer, "protocol_whitelist": NO_PROTOCOLS}
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer, container_options=options) as container:
            if not container.streams.audio:
                raise DecodeError(f"no audio stream in the {what} file")
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            if not _codec_allowed(demuxer, codec):
                raise DecodeError(f"cannot decode: {codec} audio in {what} is not supported")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            # demux() yields every stream's packets, so the budget is asked however many belong to
            # other streams, and ends with an empty packet per stream that drains its decoder.
            for packet in container.demux():
                if should_stop is not None and should_stop():
                    raise DecodeStopped(f"decoding stopped after {total / rate:g} s of audio")
                if packet.stream.index != stream.index:
                    continue
                for frame in stream.decode(packet):
                    total = _append(resampler.resample(frame), pieces, total, max_samples, max_duration_s)
            # None flushes the resampler's tail after the last frame.
            total = _append(resampler.resample(None), pieces, total, max_samples, max_duration_s)
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode: {exc.strerror or exc}") from None
    except ValueError as exc:  # PyAV's own checks, e.g. a stream whose format changes midway
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"cannot decode: {exc}") from None
    if not total:
        raise DecodeError("no audio in the file")
    return np.concatenate(pieces)


def _append(frames: list[av.AudioFrame], pieces: list[NDArray[np.int16]], total: int, max_samples: int,
            max_duration_s: float) -> int:
    for out in frames:
        samples = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
        total += samples.size
        if total > max_samples:
            raise DecodeError(f"longer than the limit of {max_duration_s:g} s")
        pieces.append(samples)
    return total


def encode_audio(samples: NDArray[np.int16], rate: int, fmt: str) -> bytes:
    """Encode mono int16 ``samples`` at ``rate`` as a ``fmt`` file (wav, mp3, ogg, flac, aac)."""
    if fmt not in ENCODINGS:
        raise ValueError(f"fmt must be one of {', '.join(ENCODINGS)}, got {fmt!r}")
    container_format, codec, codec_rate = ENCODINGS[fmt]
    out_rate = codec_rate or rate
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)  # an audio codec makes an audio stream
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
