"""One Redis connection, multiplexed and pipelined, in RESP2.

Callers hand :meth:`Connection.call` a packed command and wait for its reply. A
writer task sends whatever was queued during one scheduler pass with one
`send_all`; a reader task feeds what arrives to a `hiredis.Reader` and completes
the pending slots strictly in order (a FIFO: Redis answers in the order it reads).
A watchdog presumes the connection dead when the oldest outstanding reply is
overdue and no byte arrives while the reader gets its chance: the connection is
closed and every caller waiting on it fails at once with :class:`TransportError`.
(A process too busy to read for a while is not a dead Redis.)

Cancellation never puts the connection out of step with the server (the bug of
redis-py's CVE-2023-28858/28859): a caller cancelled before its command was
written withdraws it and it is never sent; once written, its slot stays in the FIFO,
marked abandoned, and its reply is read and dropped. A written slot is never
removed before its reply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import hiredis
import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from .address import RedisAddress
from .dial import BROKEN, MORE, RECEIVE_SIZE, describe_error, dial
from .errors import TransportError, unwrapped

# Slot states. A QUEUED slot is in `_unsent`; a SENT or DROPPED one in `_inflight`
# (or DROPPED in `_unsent`: withdrawn, the writer skips it).
_QUEUED, _SENT, _DONE, _DROPPED = range(4)


@dataclass(slots=True)
class Stats:
    """Counters of one client's connections, for tests and metrics (read, don't write)."""

    commands: int = 0  # requests queued (a transaction counts once)
    writes: int = 0  # send_all calls
    reads: int = 0  # receive_some calls that returned bytes
    withdrawn: int = 0  # cancelled before written: never sent
    abandoned: int = 0  # cancelled after written: the reply was read and dropped
    connects: int = 0  # sessions opened
    connect_failures: int = 0
    drops: int = 0  # open connections that broke or were presumed dead
    overdue: int = 0  # of which presumed dead: the oldest reply was overdue


class _Slot:
    __slots__ = ("deadline", "expected", "packed", "replies", "state", "task")

    def __init__(self, packed: bytes, expected: int, task: Task) -> None:
        self.packed = packed
        self.expected = expected
        self.replies: list[Any] = []
        self.task = task
        self.deadline = 0.0
        self.state = _QUEUED


class Connection:
    """A connection whose commands many tasks share; run by :meth:`serve`.

    `reply_timeout`: how long a written command may wait for its reply before the
    connection is presumed dead.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        parser: hiredis.Reader,
        *,
        where: str,
        reply_timeout: float,
        stats: Stats | None = None,
    ) -> None:
        self.where = where
        self.error: str | None = None
        self.opened_at = trio.current_time()
        self._stream = stream
        self._parser = parser
        self.reply_timeout = reply_timeout
        self._stats = stats if stats is not None else Stats()
        self._last_read = trio.current_time()
        self._unsent: list[_Slot] = []
        self._inflight: deque[_Slot] = deque()
        self._parked_writer: Task | None = None
        self._sending = False
        self._scope = trio.CancelScope()

    @property
    def pending(self) -> int:
        """Commands queued or awaiting their reply (withdrawn ones may still count)."""
        return len(self._unsent) + len(self._inflight)

    @property
    def gathering(self) -> bool:
        """Commands are queued for a write that has not started: joining them costs
        no write of its own."""
        return bool(self._unsent) and not self._sending

    async def call(self, packed: bytes, expected: int = 1) -> Any:
        """Send `packed` (holding `expected` commands) and return its reply.

        With `expected` > 1 the replies come as one list, in order; the commands are
        written contiguously, nothing of another caller between them. Error replies
        are returned as :class:`ReplyError` values, not raised.

        Raises:
            TransportError: the connection broke or is presumed dead.
        """
        if self.error is not None:
            raise TransportError(self.error)
        slot = _Slot(packed, expected, current_task())
        self._unsent.append(slot)
        self._stats.commands += 1
        writer = self._parked_writer
        if writer is not None:
            self._parked_writer = None
            reschedule(writer)

        def abort(_: Any) -> Abort:
            if slot.state == _QUEUED:
                slot.state = _DROPPED
                self._stats.withdrawn += 1
            elif slot.state == _SENT:
                slot.state = _DROPPED
                self._stats.abandoned += 1
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)

    def close(self, reason: str) -> None:
        """Close the connection: every waiting caller fails with TransportError(reason)."""
        if self.error is None:
            self.error = reason
        self._scope.cancel()
        self._fail_all()

    def _break(self, reason: str) -> None:
        if self.error is None:
            self._stats.drops += 1
        self.close(reason)

    async def serve(self) -> None:
        """Run the reader, the writer and the watchdog until the connection breaks or
        is closed; then every caller still waiting on it has failed."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._read_loop)
                    nursery.start_soon(self._guard, self._write_loop)
                    nursery.start_soon(self._guard, self._watch)
        finally:
            if self.error is None:
                self.error = f"connection to {self.where} closed"
            self._fail_all()
            await trio.aclose_forcefully(self._stream)

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except TransportError as error:
            self._break(str(error))
        except BROKEN as error:
            self._break(f"connection to {self.where} broke: {describe_error(error)}")

    def _fail_all(self) -> None:
        reason = self.error or "connection closed"
        unsent, self._unsent = self._unsent, []
        inflight = list(self._inflight)
        self._inflight.clear()
        for slot in (*inflight, *unsent):
            if slot.state in (_QUEUED, _SENT):
                slot.state = _DONE
                reschedule(slot.task, outcome.Error(TransportError(reason)))

    async def _write_loop(self) -> None:
        send_all = self._stream.send_all
        inflight = self._inflight
        stats = self._stats
        while True:
            if not self._unsent:
                await self._park_writer()
                continue
            batch, self._unsent = self._unsent, []
            deadline = trio.current_time() + self.reply_timeout
            chunks = []
            for slot in batch:
                if slot.state == _QUEUED:
                    # Written from here on: the slot stays in the FIFO until its reply.
                    slot.state = _SENT
                    slot.deadline = deadline
                    inflight.append(slot)
                    chunks.append(slot.packed)
            if chunks:
                stats.writes += 1
                self._sending = True
                await send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                self._sending = False

    async def _park_writer(self) -> None:
        self._parked_writer = current_task()

        def abort(_: Any) -> Abort:
            self._parked_writer = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    async def _read_loop(self) -> None:
        receive_some = self._stream.receive_some
        feed = self._parser.feed
        gets = self._parser.gets
        inflight = self._inflight
        stats = self._stats
        while True:
            data = await receive_some(RECEIVE_SIZE)
            if not data:
                raise TransportError(f"{self.where} closed the connection")
            stats.reads += 1
            self._last_read = trio.current_time()
            feed(data)  # type: ignore[arg-type]  # any buffer will do; the stub says bytes
            while (reply := gets()) is not MORE:
                if not inflight:
                    raise TransportError(f"a reply from {self.where} that nobody asked for")
                slot = inflight[0]
                if slot.expected > 1:
                    slot.replies.append(reply)
                    if len(slot.replies) < slot.expected:
                        continue
                    reply = slot.replies
                inflight.popleft()
                if slot.state == _SENT:
                    slot.state = _DONE
                    reschedule(slot.task, outcome.Value(reply))
                # else abandoned by a cancelled caller: the reply is dropped.

    async def _watch(self) -> None:
        inflight = self._inflight
        idle = min(self.reply_timeout, 1.0) / 2
        while True:
            if not inflight:
                await trio.sleep(idle)
                continue
            head = inflight[0]
            if trio.current_time() < head.deadline:
                await trio.sleep_until(head.deadline)
                continue
            # Overdue: but a process too busy to run its reader for a while (thousands
            # of sessions ending at once) is not a dead Redis. Dead means no byte came
            # for a whole timeout, and none while the reader had two more chances.
            for _ in range(2):
                await trio.lowlevel.checkpoint()
            if not inflight or inflight[0] is not head:
                continue
            silent_until = self._last_read + self.reply_timeout
            if trio.current_time() >= silent_until:
                self._stats.overdue += 1
                raise TransportError(
                    f"no reply from {self.where} within {self.reply_timeout:g} s: presumed dead"
                )
            await trio.sleep_until(silent_until)


@asynccontextmanager
async def serving(connection: Connection) -> AsyncIterator[Connection]:
    """Serve `connection` in a nursery of its own; close it on leaving."""
    with unwrapped():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.serve)
            try:
                yield connection
            finally:
                connection.close(f"connection to {connection.where} closed by its owner")


@asynccontextmanager
async def open_connection(
    address: RedisAddress, *, reply_timeout: float = 3.0, stats: Stats | None = None
) -> AsyncIterator[Connection]:
    """A connection of its own to `address`, served until leaving.

    Opening it is unbounded: put it in a cancel scope.

    Raises:
        TransportError: it could not be opened.
    """
    stream, parser = await dial(address)
    connection = Connection(
        stream, parser, where=address.describe(), reply_timeout=reply_timeout, stats=stats
    )
    async with serving(connection):
        yield connection
