"""What a ``play`` source may make the bridge do: decode plain audio, and nothing else.

An app chooses play sources, and FFmpeg, left to probe, follows playlists and scripts: an ffconcat
script read a file from the bridge's working directory, an HLS playlist fetched its segments from
loopback past the HTTP client's address rule, and an SDP description bound a UDP port and waited
for RTP forever. These tests show each is refused, with a message naming what the file was, that
the FFmpeg options behind the second wall take effect in the installed PyAV, and that a decode is
bounded in time and stops once abandoned. Real clock: the media comes from a real socket.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import trio

from relay_bridge.audio.decode import NO_PROTOCOLS, DecodeError, DecodeStopped, decode_audio, encode_audio
from relay_bridge.net import media
from relay_bridge.net.media import MediaCache, MediaError, load_media
from relay_bridge.protocols import relay
from relay_bridge.settings import PlaySettings
from tests import httpserver
from tests.httpserver import Received, answer, open_http_server, response
from tests.test_relay_behaviours import call, listen_to_the_end, play, played, sends

TONE = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)  # 1 s at 8 kHz
LOCAL = PlaySettings(allow_private=True)


def concat_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """An ffconcat script naming a WAV file in the working directory (a relative path, which concat's
    safe mode allows)."""
    (tmp_path / "secret.wav").write_bytes(encode_audio(TONE, 8000, "wav"))
    monkeypatch.chdir(tmp_path)
    return b"ffconcat version 1.0\nfile secret.wav\n"


def hls_playlist(srv: httpserver.TestServer) -> bytes:
    return (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n"
            f"{srv.url('/internal/segment.ts')}\n#EXT-X-ENDLIST\n").encode()


SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=media\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 45678 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def opens(data: bytes, demuxer: str, options: dict[str, str]) -> Callable[[], int]:
    """Open ``data`` with ``demuxer`` forced and count its packets (to run in a thread)."""

    def run() -> int:
        with av.open(io.BytesIO(data), "r", format=demuxer, container_options=options) as container:
            return len(list(container.demux()))

    return run


# -- formats FFmpeg would follow are refused before FFmpeg sees them ----------------------------------


def test_an_ffconcat_script_cannot_read_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = concat_script(tmp_path, monkeypatch)
    with pytest.raises(DecodeError, match="cannot decode: an ffconcat script is not a supported audio format"):
        decode_audio(script, max_duration_s=10)


async def test_an_hls_playlist_fetches_nothing() -> None:
    async with open_http_server(answer(response(404))) as srv:
        with trio.fail_after(20), pytest.raises(DecodeError, match="an M3U/HLS playlist is not a supported"):
            await trio.to_thread.run_sync(lambda: decode_audio(hls_playlist(srv), max_duration_s=10))
    assert srv.requests == []


async def test_an_sdp_description_opens_no_port() -> None:
    # FFmpeg's SDP demuxer would listen on UDP 45678 for RTP, and wait forever: hence the thread and
    # the timeout, so that a regression fails instead of hanging.
    with trio.fail_after(20), pytest.raises(DecodeError, match="an SDP session description is not a supported"):
        await trio.to_thread.run_sync(lambda: decode_audio(SDP, max_duration_s=10), abandon_on_cancel=True)


async def test_a_refused_format_is_an_error_frame_to_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = concat_script(tmp_path, monkeypatch)
    async with open_http_server(answer(response(200, script, [("Content-Type", "audio/wav")]))) as srv:
        with trio.fail_after(20):
            result, log = await call(sends(play(srv.url("/hold.wav")), relay.text("Still here.", last=True)),
                                     listen_to_the_end(), play__allow_private=True)
    [error] = log.of("error")
    assert error["description"].startswith(f"Cannot play {srv.url('/hold.wav')}: ")
    assert "an ffconcat script is not a supported audio format" in error["description"]
    assert played(result) == ["Still here."]
    assert result.caller.ear.frames_played * 20 <= len("Still here.") * 40 + 20  # none of secret.wav


# -- the second wall: the options every open sets take effect in this PyAV ----------------------------


async def test_no_protocol_stops_a_forced_hls_demuxer_from_fetching() -> None:
    if "hls" not in av.formats_available:
        pytest.skip("this FFmpeg has no HLS demuxer")
    async with open_http_server(answer(response(404))) as srv:
        playlist = hls_playlist(srv)
        with trio.fail_after(20), pytest.raises(av.FFmpegError):
            await trio.to_thread.run_sync(opens(playlist, "hls", {"protocol_whitelist": NO_PROTOCOLS}))
        assert srv.requests == []
        # Without it, the same open fetches from loopback: the test can see a fetch.
        with trio.fail_after(20), pytest.raises(av.FFmpegError):
            await trio.to_thread.run_sync(opens(playlist, "hls", {}))
        assert [r.target for r in srv.requests] == ["/internal/segment.ts"]


def test_no_protocol_stops_a_forced_concat_demuxer_from_reading_files(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    script = concat_script(tmp_path, monkeypatch)
    with pytest.raises(av.FFmpegError):
        opens(script, "concat", {"protocol_whitelist": NO_PROTOCOLS})()
    with pytest.raises(av.FFmpegError):
        opens(script, "concat", {"format_whitelist": "wav"})()
    assert opens(script, "concat", {})() > 0  # without them it reads secret.wav


# -- decode time ---------------------------------------------------------------------------------------


async def test_a_decode_that_outlasts_its_budget_is_refused() -> None:
    wav = encode_audio(np.tile(TONE, 3), 8000, "wav")  # a dozen packets
    ticks = itertools.count()
    settings = PlaySettings(allow_private=True, decode_timeout_ms=5000)
    async with open_http_server(answer(response(200, wav))) as srv:
        with trio.fail_after(20), pytest.raises(MediaError) as exc:
            # Each reading of this clock is a second later: the sixth packet is past the deadline.
            await load_media(srv.url("/slow.wav"), settings, MediaCache(settings.cache_bytes),
                             clock=lambda: float(next(ticks)))
        assert str(exc.value) == f"play source {srv.url('/slow.wav')}: decoding took longer than the limit of 5000 ms"
        with trio.fail_after(20):  # the same file with time standing still
            samples = await load_media(srv.url("/slow.wav"), settings, MediaCache(settings.cache_bytes),
                                       clock=lambda: 0.0)
    assert samples.size == 3 * 8000


async def test_an_abandoned_decode_stops_and_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    started, ended = threading.Event(), threading.Event()
    outcome: list[str] = []

    def endless_decode(data: bytes, *, max_duration_s: float, should_stop: Callable[[], bool]) -> np.ndarray:
        started.set()
        try:
            while not should_stop():
                time.sleep(0.001)  # a file that keeps FFmpeg busy
            outcome.append("budget")
            raise DecodeStopped("stopped")
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        finally:
            ended.set()

    monkeypatch.setattr(media, "decode_audio", endless_decode)
    cache = MediaCache(LOCAL.cache_bytes)
    cache.decode_limiter.total_tokens = 1  # one decode slot, held by the thread until it ends
    async with open_http_server(answer(response(200, encode_audio(TONE, 8000, "wav")))) as srv:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load_media, srv.url("/a.wav"), LOCAL, cache)
                await trio.to_thread.run_sync(started.wait, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()  # a barge-in: the play is abandoned mid-decode
            async with cache.decode_limiter:  # the next decode gets the slot (it would wait forever before)
                pass
    assert ended.is_set() and outcome == ["Cancelled"]


# -- URLs ------------------------------------------------------------------------------------------------


async def test_a_lone_surrogate_in_a_play_url_is_a_media_error_that_says_so() -> None:
    url = "https://media.example/hold\ud800.wav"
    with pytest.raises(MediaError) as exc:
        await load_media(url, PlaySettings(), MediaCache(1000))
    escaped = "'https://media.example/hold\\ud800.wav'"
    assert str(exc.value) == (f"play source {escaped}: invalid URL {escaped}: it contains a lone surrogate "
                              f"(U+D800 at position 26), which cannot be encoded")
    str(exc.value).encode("utf-8")  # loggable, and sendable to the app


async def test_every_accepted_format_plays_from_http() -> None:
    bodies = {f"/a.{fmt}": encode_audio(TONE, 8000, fmt) for fmt in ("wav", "mp3", "ogg", "flac", "aac")}

    async def serve(request: Received, stream: trio.abc.Stream) -> None:
        await stream.send_all(response(200, bodies[request.target]))

    cache = MediaCache(LOCAL.cache_bytes)
    async with open_http_server(serve) as srv:
        for path in bodies:
            with trio.fail_after(20):
                samples = await load_media(srv.url(path), LOCAL, cache)
            assert 7800 <= samples.size <= 8000 + 2048, path  # AAC: priming, and whole 1024-sample frames
