"""An agent for property tests (loaded with AURA_AGENT=tests.echo_agent:EchoAgent)."""

from __future__ import annotations

from aura_trio.agents import AgentContext
from aura_trio.sessions import events
from aura_trio.settings import Settings


class EchoAgent:
    """Sends the prompt back in one `content` event, and the context as tool arguments."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run(self, ctx: AgentContext) -> None:
        context = {
            k: v for k, v in ctx.request.context.items() if k not in ("source", "caller_type")
        }
        await ctx.emit(events.tool_execution("echo", context, "success"))
        await ctx.emit(events.content(ctx.request.prompt))
