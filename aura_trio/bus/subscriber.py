"""The process's one pattern subscription, as a Trio task on a connection of its own.

Redis drops the messages published while a subscription is down, so the caller is
told of every (re)subscription (`on_subscribed`: re-read the stored state then) and
of every failure (`on_lost`). An idle subscription is checked with `PING` once it
has heard nothing for `ping_interval` seconds; no answer within `ping_timeout`
counts as lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hiredis
import trio

from aura_trio.errors import StoreUnavailable

from .address import AddressLike, as_locator
from .dial import BROKEN, MORE, RECEIVE_SIZE, Backoff, describe_error, dial_located, pack
from .errors import ReplyError, TransportError, unwrapped

_PING = pack(("PING",))
# A subscription that stayed up this long subscribes again at once when it is lost.
_STABLE_SECONDS = 1.0


async def serve_subscriber(
    address: AddressLike,
    pattern: str | bytes,
    *,
    on_message: Callable[[bytes, bytes], object],
    on_subscribed: Callable[[], object],
    on_lost: Callable[[str], object],
    connect_timeout: float = 3.0,
    ping_interval: float = 1.0,
    ping_timeout: float = 3.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`PSUBSCRIBE pattern` and hand over every message, until cancelled.

    `on_message(channel, payload)` is called for each `pmessage`, `on_subscribed()`
    on each subscription confirmation (the first one and after every
    reconnection), `on_lost(error)` when the subscription drops and when an
    attempt to (re)connect fails; attempts go on with backoff (50 ms doubling to
    2 s; at once after a subscription that had lasted a second). The callbacks are
    synchronous and run in this task; what they raise ends it.

    `task_status.started()` is called at the first subscription confirmation: with
    Redis down, `nursery.start(serve_subscriber, ...)` waits until Redis is back.
    Use `start_soon` and `on_subscribed`/`on_lost` to serve without Redis.
    """
    locator = as_locator(address)
    started = False
    backoff = Backoff()

    def subscribed() -> None:
        nonlocal started
        on_subscribed()
        if not started:
            started = True
            task_status.started()

    while True:
        try:
            with trio.fail_after(connect_timeout):
                _, stream, parser = await dial_located(locator)
        except trio.TooSlowError:
            on_lost(f"no Redis connection within {connect_timeout:g} s")
            await trio.sleep(backoff.next())
            continue
        except StoreUnavailable as error:
            on_lost(str(error))
            await trio.sleep(backoff.next())
            continue
        opened_at = trio.current_time()
        try:
            lost = await _listen(
                stream,
                parser,
                pattern,
                on_message=on_message,
                on_subscribed=subscribed,
                keep_alive=partial(_keep_alive, stream, ping_interval, ping_timeout),
            )
        finally:
            await trio.aclose_forcefully(stream)
        on_lost(lost)
        if trio.current_time() - opened_at >= _STABLE_SECONDS:
            backoff.reset()
        else:
            await trio.sleep(backoff.next())


class _Heard:
    """When the subscription's connection last received bytes."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = trio.current_time()


async def _listen(
    stream: trio.abc.Stream,
    parser: hiredis.Reader,
    pattern: str | bytes,
    *,
    on_message: Callable[[bytes, bytes], object],
    on_subscribed: Callable[[], object],
    keep_alive: Callable[[_Heard], Awaitable[None]],
) -> str:
    """Subscribe and dispatch until the connection breaks; return why it did."""
    heard = _Heard()
    failures: list[str] = []

    async def read() -> None:
        await stream.send_all(pack(("PSUBSCRIBE", pattern)))
        # Only now: one task sends at a time.
        nursery.start_soon(guarded, partial(keep_alive, heard), nursery.cancel_scope)
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise TransportError("Redis closed the subscription's connection")
            heard.at = trio.current_time()
            parser.feed(data)  # type: ignore[arg-type]  # any buffer will do
            while (reply := parser.gets()) is not MORE:
                _dispatch(reply, on_message, on_subscribed)

    async def guarded(loop: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            await loop()
        except TransportError as error:
            failures.append(str(error))
        except BROKEN as error:
            failures.append(f"subscription broke: {describe_error(error)}")
        scope.cancel()

    with unwrapped():  # what a callback raises leaves as itself
        async with trio.open_nursery() as nursery:
            await guarded(read, nursery.cancel_scope)
    return failures[0]


def _dispatch(
    reply: Any,
    on_message: Callable[[bytes, bytes], object],
    on_subscribed: Callable[[], object],
) -> None:
    if isinstance(reply, ReplyError):
        raise TransportError(f"Redis refused the subscription: {reply.message}")
    kind = reply[0]
    if kind == b"pmessage":
        on_message(reply[2], reply[3])
    elif kind == b"psubscribe":
        on_subscribed()
    # else b"pong": the keep-alive's answer, already counted as heard.


async def _keep_alive(
    stream: trio.abc.Stream, ping_interval: float, ping_timeout: float, heard: _Heard
) -> None:
    while True:
        await trio.sleep(ping_interval)
        if trio.current_time() - heard.at < ping_interval:
            continue
        sent_at = trio.current_time()
        await stream.send_all(_PING)
        await trio.sleep(ping_timeout)
        if heard.at < sent_at:
            raise TransportError(f"no answer to PING within {ping_timeout:g} s: presumed dead")
