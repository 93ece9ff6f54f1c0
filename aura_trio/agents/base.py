"""What an agent is, and what a session offers it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..sessions.events import Event


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What the caller asked for (docs/contract.md#stream-request), as the agent sees it."""

    prompt: str
    context: dict[str, Any] = field(default_factory=dict)
    thread_id: str | None = None


class AgentContext(Protocol):
    """The session, as an agent sees it."""

    session_id: str
    user_id: str
    tenant_id: str | None
    request: StreamRequest

    async def emit(self, event: Event) -> None:
        """Send one event to the client; waits while the client is slow to read."""

    async def request_approval(
        self,
        action_type: str,
        tool_args: dict[str, Any],
        message: str,
        context: dict[str, Any],
        *,
        editable: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Ask a person to approve `action_type` with `tool_args`; returns the
        arguments approved once it is: `tool_args`, or a person's edit of them.

        `editable`: a JSON Schema the edited arguments must satisfy (None: they
        cannot be edited). Emits `tool_execution` (pending) and `hitl` after the
        request is stored. A rejection or a timeout ends the session: this call
        then never returns (the agent is unwound).
        """


class Agent(Protocol):
    """Produces a session's events between `start` and its ending."""

    async def run(self, ctx: AgentContext) -> None: ...
