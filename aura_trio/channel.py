"""A bounded channel for one receiving task, at the cost of a few slots.

Each waiting session holds two (its subscription's inbox, its outbox of frames),
empty nearly all its life. A trio memory channel there is ~1.7 KB (its state, two
ends, their sets and deque) and a receiver waiting in it ~1 KB more; this one is
a few slots until something is queued. What the sessions use of a memory channel,
with its semantics: `send_nowait` (`trio.WouldBlock` when full), `send` (waits,
in order, when full), `receive`/`receive_nowait`/`async for` by one task at a
time, and closing the sending side (`close`, `async with`): the receiver gets
what was queued, then `trio.EndOfChannel`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Generic, TypeVar

import trio

from .one_task_slot import OneTaskSlot

T = TypeVar("T")


class Channel(OneTaskSlot, Generic[T]):
    """Up to `size` items for one receiver; an item sent while the receiver waits is
    handed to it, an item sent while the channel is full waits with its sender."""

    __slots__ = ("_closed", "_handed", "_items", "_senders", "_size")

    def __init__(self, size: int) -> None:
        super().__init__()  # the receiver's slot
        self._size = size
        self._items: list[T] | None = None
        self._handed: list[T] | None = None  # what the receiver finds as it wakes
        self._senders: dict[trio.lowlevel.Task, T] | None = None  # waiting, in order
        self._closed = False

    # --- sending ----------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self._parked is not None:
            self._handed = [item]
            self._wake()
            return
        if self._items is None:
            self._items = []
        if len(self._items) >= self._size:
            raise trio.WouldBlock
        self._items.append(item)

    async def send(self, item: T) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(item)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self._senders is None:
            self._senders = {}
        self._senders[task] = item

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._senders is not None:
                self._senders.pop(task, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if self._senders is not None and task in self._senders:  # woken by close()
            del self._senders[task]
            raise trio.ClosedResourceError("the channel was closed")

    def close(self) -> None:
        """No more items: the receiver gets what is queued, then `trio.EndOfChannel`."""
        self._closed = True
        self._wake()  # the receiver, if it waits: it finds nothing handed
        for task in self._senders or ():  # each finds itself still listed: refused
            trio.lowlevel.reschedule(task)

    async def __aenter__(self) -> Channel[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def receiver_waiting(self) -> bool:
        """The receiver waits for an item: nothing is queued, and it has taken all."""
        return self.task_waiting

    def __len__(self) -> int:
        """How many items are queued (not counting senders still waiting)."""
        return len(self._items or ())

    # --- receiving --------------------------------------------------------------

    def receive_nowait(self) -> T:
        """The oldest item; `trio.WouldBlock` when there is none, `trio.EndOfChannel`
        when there is none and the channel is closed."""
        if self._items:
            item = self._items.pop(0)
            if self._senders:  # a slot came free: the longest-waiting sender's item
                task, waiting = next(iter(self._senders.items()))
                del self._senders[task]
                self._items.append(waiting)
                trio.lowlevel.reschedule(task)
            return item
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        await self._park()
        handed, self._handed = self._handed, None
        if handed is None:  # woken by close()
            raise trio.EndOfChannel
        return handed[0]

    def __aiter__(self) -> Channel[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
