"""The sessions' channel (aura_trio/channel.py), as a trio memory channel behaves:
bounded, in order, one receiver, senders waiting in order when it is full, nothing
lost to a cancelled wait, closed cleanly."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from aura_trio.channel import Channel


def _fill(channel: Channel[int], items: range) -> list[bool]:
    sent = []
    for n in items:
        try:
            channel.send_nowait(n)
            sent.append(True)
        except trio.WouldBlock:
            sent.append(False)
    return sent


async def test_items_come_out_in_order_and_a_full_channel_refuses():
    channel = Channel[int](3)
    assert _fill(channel, range(5)) == [True, True, True, False, False]
    assert len(channel) == 3
    assert [await channel.receive(), channel.receive_nowait(), await channel.receive()] == [0, 1, 2]
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()


async def test_a_waiting_receiver_is_handed_the_item_and_later_ones_queue_behind_it():
    channel = Channel[str](2)
    got: list[str] = []

    async def receive_two() -> None:
        got.append(await channel.receive())
        got.append(await channel.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_two)
        await trio.testing.wait_all_tasks_blocked()
        channel.send_nowait("a")  # handed to the waiting receiver
        channel.send_nowait("b")  # queued, before the receiver runs again
    assert got == ["a", "b"]


async def test_senders_of_a_full_channel_wait_and_go_in_the_order_they_came():
    channel = Channel[str](1)
    channel.send_nowait("first")
    async with trio.open_nursery() as nursery:
        for name in ("second", "third"):
            nursery.start_soon(channel.send, name)
            await trio.testing.wait_all_tasks_blocked()
        got = [await channel.receive() for _ in range(3)]
    assert got == ["first", "second", "third"]


async def test_a_cancelled_wait_loses_nothing_and_sends_nothing():
    channel = Channel[str](1)
    with trio.move_on_after(0.01) as receiving:
        await channel.receive()
    assert receiving.cancelled_caught
    channel.send_nowait("kept")
    with trio.move_on_after(0.01) as sending:
        await channel.send("never")  # full: waits, then is cancelled
    assert sending.cancelled_caught
    assert channel.receive_nowait() == "kept"
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()


async def test_one_receiver_at_a_time():
    channel = Channel[int](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await channel.receive()
        nursery.cancel_scope.cancel()


async def test_closing_ends_the_receiver_after_what_was_queued_and_refuses_senders():
    channel = Channel[int](4)
    ended = []

    async def wait_for_one() -> None:
        try:
            await channel.receive()
        except trio.EndOfChannel:
            ended.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_one)
        await trio.testing.wait_all_tasks_blocked()
        channel.close()
    assert ended == [True]

    channel = Channel[int](1)
    refused = []

    async def send_late() -> None:
        try:
            await channel.send(2)
        except trio.ClosedResourceError:
            refused.append(True)

    async with channel:
        channel.send_nowait(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_late)
            await trio.testing.wait_all_tasks_blocked()
            channel.close()  # the waiting sender is refused
    assert refused == [True]
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(3)
    assert [n async for n in channel] == [1]
    with pytest.raises(trio.EndOfChannel):
        channel.receive_nowait()
