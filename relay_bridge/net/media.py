"""Audio for the app's ``play`` messages: fetched over HTTP, decoded to 8 kHz, cached per process.

Apps tend to play the same few files (hold music, a chime, a recorded prompt) on every call, so
decoded audio is kept in one LRU cache shared by all calls, bounded by its total size in bytes.
Concurrent requests for the same URL share one fetch: the first caller loads it and the others
wait for its result. A play can be cancelled while it loads (barge-in); the loader's cancellation
is its own, so a waiter then takes over the load instead of inheriting a cancellation. Failures
are not cached: the next ``play`` of that URL tries again.

Entries live for the process and ignore HTTP cache headers: a changed file at the same URL is
fetched again only once it has been evicted (or under a new URL, e.g. with a version query).

Decoding runs in a worker thread, which cannot be killed, so its limits are enforced inside the
decode loop: ``decode_audio`` asks before every packet whether to stop. The answer is yes once
``decode_timeout_ms`` of wall-clock time has passed (a crafted file can keep FFmpeg busy), and the
question raises trio's ``Cancelled`` once the play was cancelled and the thread abandoned (a
barge-in), so an abandoned decode gives its slot in the decode limiter back at its next packet
instead of running to the end of the file.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import trio
from numpy.typing import NDArray

from relay_bridge.audio.decode import DecodeError, DecodeStopped, decode_audio
from relay_bridge.net.http import FetchPolicy, HttpError, http_get
from relay_bridge.settings import PlaySettings

DECODE_THREADS = 2  # decodes at once across all calls; each is short but CPU-bound

Samples = NDArray[np.int16]


class MediaError(Exception):
    """A ``play`` source could not be fetched or decoded; the message names the URL and the cause."""


@dataclass(frozen=True)
class MediaCacheStatistics:
    entries: int
    bytes: int
    hits: int
    misses: int  # loads started (each fetches once, however many callers wait for it)
    evictions: int


class _Load:
    """One load in progress: its waiters are woken when it succeeds, fails or is abandoned."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.samples: Samples | None = None
        self.error: MediaError | None = None


class MediaCache:
    """Decoded audio by URL, least recently used evicted first once ``max_bytes`` is exceeded."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Samples] = OrderedDict()
        self._bytes = 0
        self._loads: dict[str, _Load] = {}
        self._hits = self._misses = self._evictions = 0
        self.decode_limiter = trio.CapacityLimiter(DECODE_THREADS)

    def get(self, url: str) -> Samples | None:
        samples = self._entries.get(url)
        if samples is not None:
            self._entries.move_to_end(url)
        return samples

    def put(self, url: str, samples: Samples) -> None:
        """Keep ``samples`` (made read-only: every call shares them); too large for the cache: not kept."""
        samples.flags.writeable = False
        if url in self._entries:
            self._bytes -= self._entries.pop(url).nbytes
        if samples.nbytes > self.max_bytes:
            return
        self._entries[url] = samples
        self._bytes += samples.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
            self._evictions += 1

    async def get_or_load(self, url: str, load: Callable[[], Awaitable[Samples]]) -> Samples:
        """The cached audio for ``url``, or ``load()``'s result, loading it once for concurrent callers."""
        while True:
            samples = self.get(url)
            if samples is not None:
                self._hits += 1
                return samples
            pending = self._loads.get(url)
            if pending is None:
                break
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.samples is not None:
                self._hits += 1
                return pending.samples
            # The loader was cancelled: go round again, and maybe become the loader.
        self._misses += 1
        mine = self._loads[url] = _Load()
        try:
            samples = await load()
            self.put(url, samples)
            mine.samples = samples
            return samples
        except MediaError as exc:
            mine.error = exc
            raise
        finally:
            del self._loads[url]
            mine.done.set()

    def statistics(self) -> MediaCacheStatistics:
        return MediaCacheStatistics(len(self._entries), self._bytes, self._hits, self._misses, self._evictions)


def fetch_policy(settings: PlaySettings) -> FetchPolicy:
    return FetchPolicy(max_bytes=settings.max_bytes, timeout_s=settings.timeout_ms / 1000,
                       allowed_hosts=settings.allowed_hosts, allow_private=settings.allow_private)


def shown_url(url: str) -> str:
    """``url`` as it may appear in a message: as is when printable, else escaped (e.g. a lone surrogate).

    The message goes to the log and to the app, and an unencodable character there would fail the
    log handler or the app's socket instead of reporting the problem.
    """
    return url if url.isprintable() else ascii(url)


MediaLoader = Callable[[str], Awaitable[NDArray[np.int16]]]  # a URL to its audio at 8 kHz


async def load_media(url: str, settings: PlaySettings, cache: MediaCache, *,
                     policy: FetchPolicy | None = None,
                     clock: Callable[[], float] = time.monotonic) -> Samples:
    """The audio at ``url`` as read-only mono int16 at 8 kHz, from ``cache`` or fetched and decoded.

    Raises ``MediaError``. ``policy`` overrides the one built from ``settings`` (tests use it for a
    private trust store); ``clock`` times the decode (read in the worker thread, so not trio's).
    """
    policy = policy or fetch_policy(settings)
    source = shown_url(url)

    async def load() -> Samples:
        try:
            response = await http_get(url, policy)
        except HttpError as exc:
            raise MediaError(f"play source {source}: {exc}") from None
        body = response.body

        def decode() -> Samples:
            deadline = clock() + settings.decode_timeout_ms / 1000  # from when a decode slot is free

            def should_stop() -> bool:
                trio.from_thread.check_cancelled()  # abandoned by a barge-in: end here (raises Cancelled)
                return clock() > deadline

            return decode_audio(body, max_duration_s=settings.max_duration_s, should_stop=should_stop)

        try:
            return await trio.to_thread.run_sync(decode, limiter=cache.decode_limiter,
                                                 abandon_on_cancel=True)  # a barge-in need not wait for it
        except DecodeStopped:
            raise MediaError(f"play source {source}: decoding took longer than the limit of "
                             f"{settings.decode_timeout_ms} ms") from None
        except DecodeError as exc:
            raise MediaError(f"play source {source}: {exc}") from None

    return await cache.get_or_load(url, load)
