"""aura-trio: agent sessions streamed over SSE, paused for a person's approval via Redis."""

from .agents import Agent, AgentContext, BuiltinAgent, StreamRequest
from .app import create_app, state_of
from .auth import Principal, authenticate, mint_token
from .http.runner import serve_app, serve_until_signal
from .settings import ConfigError, Settings

__all__ = [
    "Agent",
    "AgentContext",
    "BuiltinAgent",
    "ConfigError",
    "Principal",
    "Settings",
    "StreamRequest",
    "authenticate",
    "create_app",
    "mint_token",
    "serve_app",
    "serve_until_signal",
    "state_of",
]
