"""Agents: the built-in deterministic one, and the interface others implement."""

from .base import Agent, AgentContext, StreamRequest
from .builtin import BuiltinAgent, sensitive_actions
from .loading import load_agent

__all__ = [
    "Agent",
    "AgentContext",
    "BuiltinAgent",
    "StreamRequest",
    "load_agent",
    "sensitive_actions",
]
