"""Agents: the built-in deterministic one, and the interface others implement."""

from .base import Agent, AgentContext, StreamRequest
from .builtin import BuiltinAgent, sensitive_actions

__all__ = ["Agent", "AgentContext", "BuiltinAgent", "StreamRequest", "sensitive_actions"]
