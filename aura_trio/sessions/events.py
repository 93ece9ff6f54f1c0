"""The event catalogue (docs/contract.md#event-catalogue): functions returning `(type, data)`."""

from __future__ import annotations

import time
from typing import Any, Literal

Event = tuple[str, dict[str, Any]]

ThoughtType = Literal["analysis", "planning", "reasoning", "decision", "reflection"]
StepStatus = Literal["pending", "in_progress", "completed", "failed", "skipped"]
ToolStatus = Literal["pending", "running", "success", "failed", "cancelled"]
ErrorType = Literal[
    "RejectionError",
    "TimeoutError",
    "ValidationError",
    "InternalError",
    "ServerShutdown",
    "Cancelled",
]


def now() -> int:
    return int(time.time())


def start(session_id: str) -> Event:
    return "start", {
        "type": "start",
        "message": "Agent started",
        "sessionId": session_id,
        "timestamp": now(),
    }


def thought(thought_type: ThoughtType, content: str) -> Event:
    return "thought", {
        "type": "thought",
        "data": {"thoughtType": thought_type, "content": content},
    }


def plan_step(step_id: str, description: str, status: StepStatus, confidence: float) -> Event:
    return "plan_step", {
        "type": "plan_step",
        "data": {
            "stepId": step_id,
            "description": description,
            "status": status,
            "confidence": confidence,
        },
    }


def plan_step_update(step_id: str, status: StepStatus, progress: float) -> Event:
    return "plan_step_update", {
        "type": "plan_step_update",
        "data": {"stepId": step_id, "status": status, "progress": progress},
    }


def tool_execution(
    tool_name: str,
    tool_args: dict[str, Any],
    status: ToolStatus,
    *,
    result: Any = None,
    error: str | None = None,
    requires_approval: bool = False,
) -> Event:
    return "tool_execution", {
        "type": "tool_execution",
        "data": {
            "toolName": tool_name,
            "toolArgs": tool_args,
            "status": status,
            "result": result,
            "error": error,
            "requiresApproval": requires_approval,
        },
    }


def hitl(
    request_id: str,
    session_id: str,
    action_type: str,
    message: str,
    context: dict[str, Any],
    expires_at: int,
) -> Event:
    return "hitl", {
        "type": "hitl",
        "data": {
            "requestId": request_id,
            "sessionId": session_id,
            "actionType": action_type,
            "message": message,
            "context": context,
            "requiresApproval": True,
            "expiresAt": expires_at,
        },
    }


def content(text: str, *, chunk: bool = False) -> Event:
    return "content", {"type": "content", "data": {"content": text, "chunk": chunk}}


def end(status: Literal["completed", "failed"]) -> Event:
    return "end", {
        "type": "end",
        "message": "Agent finished",
        "status": status,
        "timestamp": now(),
    }


def error(error_type: ErrorType, error: str, message: str) -> Event:
    return "error", {"type": "error", "error": error, "errorType": error_type, "message": message}


def failed(message: str, error: str, request_id: str, session_id: str) -> Event:
    return "failed", {
        "type": "failed",
        "message": message,
        "error": error,
        "errorType": "TimeoutError",
        "requestId": request_id,
        "sessionId": session_id,
        "timestamp": now(),
    }
