"""The deterministic agent of docs/contract.md#the-built-in-agent: no model behind it."""

from __future__ import annotations

from typing import Any

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

# What each action proposes beyond who asked and which step, and what of it a
# person may edit before approving (a JSON Schema for that part).
_PROPOSALS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "git_merge": ({"strategy": "merge"}, {"enum": ["merge", "squash", "rebase"]}),
    "send_email": (
        {"recipients": ["team@example.com"]},
        {
            "type": "array",
            "items": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$", "maxLength": 254},
            "minItems": 1,
            "maxItems": 20,
        },
    ),
    "deploy": ({"environment": "staging"}, {"enum": ["staging", "production"]}),
}


def proposal(action: str, user_id: str, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments the built-in agent proposes for `action`, and the JSON Schema of
    the edits it accepts: who asked and which step are read-only."""
    extra, _ = _PROPOSALS[action]
    return {"requestedBy": user_id, "step": step, **extra}, _EDITABLE[action]


def _editable(action: str) -> dict[str, Any]:
    extra, editable = _PROPOSALS[action]
    (name,) = extra
    return {
        "type": "object",
        "properties": {
            "requestedBy": {"type": "string", "readOnly": True},
            "step": {"type": "integer", "readOnly": True},
            name: editable,
        },
        "required": ["requestedBy", "step", name],
        "additionalProperties": False,
    }


# One schema per action, the same for every user: checked once (see hitl/edits.py).
_EDITABLE = {action: _editable(action) for action in _PROPOSALS}


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
            proposed, editable = proposal(action, ctx.user_id, number)
            approved = await ctx.request_approval(
                action,
                proposed,
                f"{action} 실행을 승인하시겠습니까?",
                {"prompt": prompt[:_PROMPT_EXCERPT], "threadId": ctx.request.thread_id},
                editable=editable,
            )
            # The tool runs with what the person approved (maybe their edit).
            await self._emit(
                ctx, events.tool_execution(action, approved, "success", result={"approved": True})
            )
        await self._emit(ctx, events.plan_step_update("step-1", "completed", 1.0))
        for word in prompt.split():
            await self._emit(ctx, events.content(word + " ", chunk=True))
        await self._emit(ctx, events.content("작업 완료", chunk=False))
