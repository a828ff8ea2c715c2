"""Audio files (WAV, MP3, OGG, FLAC and whatever else FFmpeg reads) to mono 16-bit PCM at 8 kHz.

Decoding goes through PyAV: the container is probed from the bytes, the first audio stream is
decoded, and FFmpeg's resampler mixes it down to mono s16 at the target rate as frames arrive, so
memory stays bounded by ``max_duration_s`` of output however large the input claims to be.
``encode_audio`` is the reverse, for tests and tools that need a file in a given format.
"""

from __future__ import annotations

import io

import av
import numpy as np
from numpy.typing import NDArray

TELEPHONY_RATE = 8000

# Output format -> (container, codec, sample rate the codec accepts or None for any).
ENCODINGS = {
    "wav": ("wav", "pcm_s16le", None),
    "mp3": ("mp3", "libmp3lame", None),
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", None),
}


class DecodeError(ValueError):
    """The bytes are not audio this bridge can decode, or the audio is too long."""


def decode_audio(data: bytes, *, max_duration_s: float, rate: int = TELEPHONY_RATE) -> NDArray[np.int16]:
    """Decode a whole audio file to mono int16 at ``rate``; longer than ``max_duration_s`` is an error."""
    if not data:
        raise DecodeError("empty file")
    max_samples = int(max_duration_s * rate)
    chunks: list[NDArray[np.int16]] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise DecodeError(f"no audio stream (format {container.format.name})")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            frames = container.decode(stream)
            while True:
                frame = next(frames, None)
                # None flushes the resampler's tail after the last frame.
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    total += samples.size
                    if total > max_samples:
                        raise DecodeError(f"longer than the limit of {max_duration_s:g} s")
                    chunks.append(samples)
                if frame is None:
                    break
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode: {exc.strerror or exc}") from None
    except ValueError as exc:  # PyAV's own checks, e.g. a stream whose format changes midway
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"cannot decode: {exc}") from None
    if not total:
        raise DecodeError("no audio in the file")
    return np.concatenate(chunks)


def encode_audio(samples: NDArray[np.int16], rate: int, fmt: str) -> bytes:
    """Encode mono int16 ``samples`` at ``rate`` as a ``fmt`` file (wav, mp3, ogg, flac)."""
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
