"""The call's queues: events in arrival order with each peer held back, inbound audio dropping the oldest."""

from __future__ import annotations

import trio
import trio.lowlevel

from relay_bridge.call.inbox import FrameQueue, Inbox


async def test_events_come_out_in_arrival_order_whoever_sent_them(autojump_clock: object) -> None:
    inbox: Inbox[str] = Inbox()
    await inbox.put("app", "text before the barge-in")
    inbox.put_nowait("speech sustained")
    await inbox.put("provider", "mark echo")
    assert [await inbox.get() for _ in range(3)] == ["text before the barge-in", "speech sustained", "mark echo"]


async def test_a_flooding_peer_waits_and_the_others_do_not(autojump_clock: object) -> None:
    inbox: Inbox[str] = Inbox(peer_max=2)
    await inbox.put("app", "a1")
    await inbox.put("app", "a2")
    blocked = []

    async def third() -> None:
        await inbox.put("app", "a3")
        blocked.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.sleep(1)
        assert blocked == []  # the app's reader waits: its socket is held back
        await inbox.put("provider", "key")  # the provider's events still get in
        inbox.put_nowait("own")
        assert await inbox.get() == "a1"
        await trio.lowlevel.checkpoint()
    assert blocked and inbox.waiting("app") == 2
    assert [await inbox.get() for _ in range(4)] == ["a2", "key", "own", "a3"]


async def test_inbound_audio_drops_the_oldest_frames_and_counts_them() -> None:
    frames = FrameQueue(3)
    for i in range(5):
        frames.put_nowait(bytes([i]))
    assert frames.dropped == 2
    assert [await frames.get() for _ in range(3)] == [b"\x02", b"\x03", b"\x04"]


async def test_each_frame_keeps_when_it_arrived(autojump_clock: object) -> None:
    """A hearing stage that lags still dates the audio by its arrival (the end-of-speech figure)."""
    frames = FrameQueue(3)
    frames.put_nowait(b"a")
    arrived = trio.current_time()
    await trio.sleep(1.5)
    frames.put_nowait(b"b")
    assert await frames.get() == b"a" and frames.arrived_at == arrived
    assert await frames.get() == b"b" and frames.arrived_at == arrived + 1.5
