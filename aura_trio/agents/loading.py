"""Choosing the agent: the built-in one, or `AURA_AGENT=module:callable`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..settings import ConfigError
from .base import Agent
from .builtin import BuiltinAgent

if TYPE_CHECKING:
    from ..settings import Settings


def load_agent(settings: Settings) -> Agent:
    """The agent named by `settings.agent` (called with the settings), else the built-in one.

    Raises:
        ConfigError: the name does not resolve to a callable that returns an agent.
    """
    if settings.agent is None:
        return BuiltinAgent(settings.event_delay_seconds)
    module_name, _, attribute = settings.agent.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        agent = factory(settings)
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ConfigError(f"AURA_AGENT={settings.agent!r}: {error}") from None
    if not callable(getattr(agent, "run", None)):
        raise ConfigError(f"AURA_AGENT={settings.agent!r} did not return an agent with run(ctx)")
    return agent  # type: ignore[no-any-return]
