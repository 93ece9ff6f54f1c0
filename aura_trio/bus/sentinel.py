"""The Sentinel locator: the current primary, as the sentinels name it.

Asked at every (re)connect of every connection (see :data:`address.Locator`): each
sentinel in turn, the one that answered last first, is asked
`SENTINEL get-master-addr-by-name <master>` on a short connection of its own; the
first answer wins. The address it names gets the template's credentials, db and
TLS settings, and must be a primary when connected to (`ROLE`, see
:func:`dial.dial`): a sentinel that still names a dead or demoted primary costs
one failed attempt, and the connection tries again (with backoff) until the
sentinels have promoted a replica.

Sentinels are reached in plain TCP without AUTH (their own password and TLS are
not supported yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import trio

from .address import Locator, RedisAddress
from .dial import BROKEN, describe_error, dial, exchange
from .errors import ReplyError, TransportError


class NoPrimaryError(TransportError):
    """No sentinel could name the primary."""


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def sentinel_locator(
    sentinels: Sequence[tuple[str, int]],
    master: str,
    *,
    template: RedisAddress,
    timeout: float = 0.5,  # of the locator, per sentinel
) -> Locator:
    """A locator asking `sentinels` for the primary named `master`.

    `template`: what the primary's address keeps (password, db, TLS, client name);
    its host and port are ignored. `timeout`: the bound of asking one sentinel.

    The locator raises :class:`NoPrimaryError` (a StoreUnavailable) saying what
    each sentinel answered, when none names a primary.
    """
    if not sentinels:
        raise ValueError("at least one sentinel is needed")
    order = [SentinelAddress(host, port) for host, port in sentinels]

    async def locate() -> RedisAddress:
        failures = []
        for sentinel in list(order):
            try:
                with trio.fail_after(timeout):
                    host, port = await _ask(sentinel, master)
            except trio.TooSlowError:
                failures.append(f"{sentinel}: no answer within {timeout:g} s")
                continue
            except TransportError as error:
                failures.append(f"{sentinel}: {error}")
                continue
            if order[0] != sentinel:  # ask the one that answers first next time
                order.remove(sentinel)
                order.insert(0, sentinel)
            return template.primary_at(host, port)
        raise NoPrimaryError(f"no sentinel names a primary {master!r}: {'; '.join(failures)}")

    return locate


async def _ask(sentinel: SentinelAddress, master: str) -> tuple[str, int]:
    stream, parser = await dial(RedisAddress(host=sentinel.host, port=sentinel.port))
    try:
        command = ("SENTINEL", "get-master-addr-by-name", master)
        [reply] = await exchange(stream, parser, [command], str(sentinel))
    except BROKEN as error:
        raise TransportError(f"broke: {describe_error(error)}") from None
    finally:
        await trio.aclose_forcefully(stream)
    if isinstance(reply, ReplyError):
        raise TransportError(f"refused: {reply.message}")
    if reply is None:
        raise TransportError(f"does not monitor {master!r}")
    host, port = reply
    return host.decode(), int(port)
