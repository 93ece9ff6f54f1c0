"""How a session ends, and the last events each ending sends (docs/contract.md#endings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import events

Kind = Literal["completed", "rejected", "timeout", "internal", "shutdown", "cancelled"]


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a session ended. A client that went away has no ending: nothing can be sent."""

    kind: Kind
    reason: str = ""
    request_id: str = ""

    def events(self, session_id: str) -> list[events.Event]:
        if self.kind == "completed":
            return [events.end("completed")]
        if self.kind == "rejected":
            return [events.error("RejectionError", self.reason, "승인 요청이 거절되었습니다")]
        if self.kind == "timeout":
            what = "승인 대기 시간이 초과되었습니다"
            return [
                events.failed(what, "HITL approval timed out", self.request_id, session_id),
                events.error("TimeoutError", "HITL approval timed out", what),
                events.end("failed"),
            ]
        if self.kind == "shutdown":
            return [events.error("ServerShutdown", "server shutting down", "서버가 종료 중입니다")]
        if self.kind == "cancelled":
            return [events.error("Cancelled", "cancelled by the client", "사용자가 취소했습니다")]
        return [
            events.error("InternalError", "internal error", "에이전트 실행 중 오류가 발생했습니다")
        ]


COMPLETED = Ending("completed")
SHUTDOWN = Ending("shutdown")
INTERNAL = Ending("internal")
CANCELLED = Ending("cancelled")


def rejected(reason: str) -> Ending:
    return Ending("rejected", reason=reason)


def timed_out(request_id: str) -> Ending:
    return Ending("timeout", request_id=request_id)
