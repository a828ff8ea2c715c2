"""The opening of a provider's media stream: which provider it is, and its ``start``."""

from __future__ import annotations

import logging

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from relay_bridge.call.record import WARNINGS_PER_KIND
from relay_bridge.protocols import media_streams as ms
from relay_bridge.protocols.fields import FrameError, parse_object
from relay_bridge.protocols.printable import printable
from relay_bridge.protocols.provider import ProviderCodec, ProviderSniffer, StartEvent

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def _is_start(raw: str | bytes) -> bool:
    try:
        return parse_object(raw).get("event") == "start"
    except FrameError:
        return False


async def open_call(provider_ws: WebSocketConnection,
                    timeout_s: float = START_TIMEOUT_S) -> tuple[ProviderCodec, StartEvent | None]:
    """Read the stream's opening frames; return the provider's codec and the ``start`` (None if it never came)."""
    sniffer = ProviderSniffer()
    ignored = 0
    with trio.move_on_after(timeout_s):
        while True:
            try:
                raw = await provider_ws.get_message()
            except ConnectionClosed:
                return sniffer.codec or ms.MediaStreamsBridge(), None
            for event in sniffer.feed(raw):
                if isinstance(event, StartEvent):
                    assert sniffer.codec is not None
                    logger.info("%s stream %s started", sniffer.provider, printable(event.stream_sid, 64))
                    return sniffer.codec, event
                if isinstance(event, ms.InvalidFrame) and _is_start(raw):
                    # A stream the bridge cannot serve (e.g. a codec it does not speak): no later frame fixes it.
                    logger.error("refused the stream's 'start': %s; closing the stream", event.reason)
                    return sniffer.codec or ms.MediaStreamsBridge(), None
                if not isinstance(event, ms.Connected):
                    ignored += 1
                    if ignored <= WARNINGS_PER_KIND:  # a peer cannot flood the log before its start either
                        logger.warning("ignored before 'start': %s", event.reason if isinstance(event, ms.InvalidFrame)
                                       else type(event).__name__)
    logger.warning("no 'start' within %.1f s (%d frame(s) ignored); closing the stream", timeout_s, ignored)
    return sniffer.codec or ms.MediaStreamsBridge(), None
