"""The deterministic agent of docs/contract.md#the-built-in-agent: no model behind it."""

from __future__ import annotations

import trio

from ..sessions import events
from .base import AgentContext

# (action type, words that ask for it), in the contract's order.
_SENSITIVE = (
    ("git_merge", ("merge",)),
    ("send_email", ("email", "메일")),
    ("deploy", ("deploy", "배포")),
)
_PROMPT_EXCERPT = 200


def sensitive_actions(prompt: str) -> list[str]:
    """The actions `prompt` asks for that need a person's approval, in table order."""
    lowered = prompt.casefold()
    return [action for action, words in _SENSITIVE if any(w in lowered for w in words)]


class BuiltinAgent:
    """Echoes the prompt back word by word, after any approvals it needs.

    Args:
        delay: pause between events (AURA_EVENT_DELAY_SECONDS); 0 streams at full speed.
    """

    def __init__(self, delay: float) -> None:
        self._delay = delay

    async def _emit(self, ctx: AgentContext, event: events.Event) -> None:
        await ctx.emit(event)
        if self._delay > 0:
            await trio.sleep(self._delay)

    async def run(self, ctx: AgentContext) -> None:
        prompt = ctx.request.prompt
        actions = sensitive_actions(prompt)
        await self._emit(ctx, events.thought("analysis", "사용자 요청 분석 중..."))
        await self._emit(ctx, events.plan_step("step-1", "요청 처리", "pending", 0.8))
        await self._emit(ctx, events.plan_step_update("step-1", "in_progress", 0.1))
        await self._emit(
            ctx,
            events.tool_execution(
                "analyze_request",
                {"promptLength": len(prompt)},
                "success",
                result={"sensitiveActions": actions},
            ),
        )
        for number, action in enumerate(actions, start=1):
            args = {"requestedBy": ctx.user_id, "step": number}
            await ctx.request_approval(
                action,
                args,
                f"{action} 실행을 승인하시겠습니까?",
                {"prompt": prompt[:_PROMPT_EXCERPT], "threadId": ctx.request.thread_id},
            )
            await self._emit(
                ctx, events.tool_execution(action, args, "success", result={"approved": True})
            )
        await self._emit(ctx, events.plan_step_update("step-1", "completed", 1.0))
        for word in prompt.split():
            await self._emit(ctx, events.content(word + " ", chunk=True))
        await self._emit(ctx, events.content("작업 완료", chunk=False))
