"""Play media: fetch, decode and a shared LRU cache with one load per URL however many calls ask.

Loads decode in a worker thread, which looks idle to trio's autojump clock, so these tests run on
the real clock with a generous ``fail_after``.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from relay_bridge.audio.decode import encode_audio
from relay_bridge.net.media import MediaCache, MediaError, load_media
from relay_bridge.settings import PlaySettings
from tests.httpserver import Received, answer, open_http_server, response

LOCAL = PlaySettings(allow_private=True, max_bytes=100_000, timeout_ms=10_000, max_duration_s=5)
SAMPLES = np.random.default_rng(3).integers(-20000, 20000, 800, dtype=np.int16)  # 0.1 s at 8 kHz
WAV = encode_audio(SAMPLES, 8000, "wav")


def array(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int16)


# -- the cache on its own -------------------------------------------------------------------


def test_lru_by_total_bytes() -> None:
    cache = MediaCache(max_bytes=3000)
    cache.put("a", array(500))  # 1000 bytes each
    cache.put("b", array(500))
    cache.put("c", array(500))
    assert cache.get("a") is not None  # now b is the least recently used
    cache.put("d", array(500))
    assert [url for url in "abcd" if cache.get(url) is not None] == ["a", "c", "d"]
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 3000, 1)


def test_one_large_entry_evicts_several() -> None:
    cache = MediaCache(max_bytes=3000)
    for url in "abc":
        cache.put(url, array(500))
    cache.put("big", array(900))
    assert [url for url in ("a", "b", "c", "big") if cache.get(url) is not None] == ["c", "big"]
    assert (cache.statistics().bytes, cache.statistics().evictions) == (2800, 2)


def test_entries_larger_than_the_cache_are_not_kept() -> None:
    cache = MediaCache(max_bytes=1000)
    cache.put("a", array(100))
    cache.put("huge", array(501))
    assert cache.get("huge") is None
    assert cache.get("a") is not None


def test_replacing_an_entry_keeps_the_byte_count() -> None:
    cache = MediaCache(max_bytes=1000)
    cache.put("a", array(100))
    cache.put("a", array(300))
    assert cache.statistics().bytes == 600


def test_zero_bytes_disables_caching() -> None:
    cache = MediaCache(max_bytes=0)
    cache.put("a", array(1))
    assert cache.get("a") is None


def test_cached_audio_is_read_only() -> None:
    cache = MediaCache(max_bytes=1000)
    samples = array(10)
    cache.put("a", samples)
    with pytest.raises(ValueError, match="read-only"):
        samples[0] = 1


# -- load_media over HTTP -------------------------------------------------------------------


async def test_fetch_decode_and_cache() -> None:
    cache = MediaCache(LOCAL.cache_bytes)
    async with open_http_server(answer(response(200, WAV, [("Content-Type", "audio/wav")]))) as srv:
        with trio.fail_after(20):
            first = await load_media(srv.url("/hold.wav"), LOCAL, cache)
            second = await load_media(srv.url("/hold.wav"), LOCAL, cache)
    assert np.array_equal(first, SAMPLES)
    assert second is first
    assert not first.flags.writeable
    assert len(srv.requests) == 1
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (1, 1, 1, SAMPLES.nbytes)


async def test_concurrent_requests_share_one_fetch() -> None:
    release = trio.Event()

    async def slow(req: Received, stream: trio.abc.Stream) -> None:
        await release.wait()
        await stream.send_all(response(200, WAV))

    cache = MediaCache(LOCAL.cache_bytes)
    results: list[np.ndarray] = []

    async def play(url: str) -> None:
        results.append(await load_media(url, LOCAL, cache))

    async with open_http_server(slow) as srv:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(play, srv.url("/chime.wav"))
                await srv.wait_for_requests(1)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
    assert len(srv.requests) == 1
    assert len(results) == 5 and all(r is results[0] for r in results)
    assert cache.statistics().misses == 1


async def test_a_cancelled_loader_hands_the_load_to_a_waiter() -> None:
    release = trio.Event()

    async def first_hangs(req: Received, stream: trio.abc.Stream) -> None:
        if len(srv.requests) == 1:
            await trio.sleep_forever()
        await release.wait()
        await stream.send_all(response(200, WAV))

    cache = MediaCache(LOCAL.cache_bytes)
    got: list[np.ndarray] = []

    async def waiter(url: str) -> None:
        got.append(await load_media(url, LOCAL, cache))

    barge_in = trio.CancelScope()

    async def loader(url: str) -> None:
        with barge_in:
            await load_media(url, LOCAL, cache)

    async with open_http_server(first_hangs) as srv:
        url = srv.url("/x.wav")
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loader, url)
                await srv.wait_for_requests(1)
                nursery.start_soon(waiter, url)
                await trio.testing.wait_all_tasks_blocked()  # the waiter is waiting for the loader
                barge_in.cancel()
                release.set()
    assert barge_in.cancelled_caught
    assert len(srv.requests) == 2
    assert len(got) == 1 and np.array_equal(got[0], SAMPLES)
    assert cache.statistics().misses == 2


async def test_failures_are_shared_by_waiters_and_not_cached() -> None:
    release = trio.Event()

    async def missing(req: Received, stream: trio.abc.Stream) -> None:
        await release.wait()
        await stream.send_all(response(404, b"gone", reason="Not Found"))

    cache = MediaCache(LOCAL.cache_bytes)
    errors: list[str] = []

    async def play(url: str) -> None:
        try:
            await load_media(url, LOCAL, cache)
        except MediaError as exc:
            errors.append(str(exc))

    async with open_http_server(missing) as srv:
        url = srv.url("/gone.wav")
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(play, url)
                await srv.wait_for_requests(1)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
            assert errors == [f"play source {url}: HTTP 404 Not Found from {url}"] * 3
            assert len(srv.requests) == 1
            await play(url)  # tried again, not answered from a cached failure
    assert len(srv.requests) == 2


async def test_undecodable_media_names_the_url() -> None:
    cache = MediaCache(LOCAL.cache_bytes)
    async with open_http_server(answer(response(200, b"<html>login required</html>" * 10))) as srv:
        with trio.fail_after(20), pytest.raises(MediaError, match=r"play source http://.*/a\.mp3: cannot decode"):
            await load_media(srv.url("/a.mp3"), LOCAL, cache)
    assert cache.statistics().entries == 0


async def test_too_long_media_is_refused() -> None:
    long_wav = encode_audio(np.zeros(8000 * 3, dtype=np.int16), 8000, "wav")
    settings = PlaySettings(allow_private=True, max_duration_s=2)
    async with open_http_server(answer(response(200, long_wav))) as srv:
        with trio.fail_after(20), pytest.raises(MediaError, match="longer than the limit of 2 s"):
            await load_media(srv.url("/long.wav"), settings, MediaCache(settings.cache_bytes))


async def test_settings_limits_apply() -> None:
    settings = PlaySettings(allow_private=True, max_bytes=len(WAV) - 1)
    async with open_http_server(answer(response(200, WAV))) as srv:
        with trio.fail_after(20), pytest.raises(MediaError, match="over the limit"):
            await load_media(srv.url("/a.wav"), settings, MediaCache(settings.cache_bytes))


async def test_private_sources_are_refused_by_default() -> None:
    with pytest.raises(MediaError) as exc:
        await load_media("http://10.0.0.5/x.wav", PlaySettings(), MediaCache(1000))
    assert str(exc.value) == "play source http://10.0.0.5/x.wav: refused: 10.0.0.5 is a private address"


async def test_allowed_hosts_apply() -> None:
    settings = PlaySettings(allowed_hosts=("media.example.com",))
    with pytest.raises(MediaError, match=r"host cdn\.example\.org is not in the allowed hosts"):
        await load_media("https://cdn.example.org/x.wav", settings, MediaCache(1000))
