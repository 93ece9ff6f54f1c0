"""Request and response models: they validate the input and generate `/openapi.json`."""

from __future__ import annotations

import re
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from .. import errors

MAX_PROMPT_CHARS = 16000
MAX_REASON_CHARS = 2000

T = TypeVar("T")


class StreamQuery(BaseModel):
    """`GET /aura/test/stream` query string."""

    message: StrictStr = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="The prompt",
        json_schema_extra={"required": True},  # quart-schema reads it per parameter
    )


class StreamBody(BaseModel):
    """`POST /aura/test/stream` body."""

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    context: dict[str, Any] | None = Field(
        default=None, description="url, path, title, activeApp, itemId, metadata…"
    )
    thread_id: StrictStr | None = None


class ApproveBody(BaseModel):
    """Optional body of approve; `userId` must be the caller's own."""

    userId: StrictStr | None = None
    args: dict[str, Any] | None = Field(
        default=None,
        description="the arguments approved instead of the proposed ones (when editable)",
    )


class RejectBody(BaseModel):
    """Optional body of reject; `userId` must be the caller's own."""

    userId: StrictStr | None = None
    reason: StrictStr | None = Field(default=None, max_length=MAX_REASON_CHARS)


class PageQuery(BaseModel):
    """`limit` and `cursor` of a paged list."""

    limit: int = Field(default=50, ge=1, le=200)
    cursor: StrictStr | None = Field(default=None, min_length=1, max_length=200)


class Page(BaseModel):
    items: list[dict[str, Any]]
    nextCursor: str | None


class EventStream(BaseModel):
    """`text/event-stream`: `: connected`, then `id`/`event`/`data` frames (one-line JSON),
    `: heartbeat` comments when idle, and exactly one `data: [DONE]` at the end."""


class HitlRequestRecord(BaseModel):
    """A stored HITL request (`hitl:request:{requestId}`)."""

    model_config = ConfigDict(extra="allow")

    requestId: str
    sessionId: str
    actionType: str
    message: str
    context: dict[str, Any]
    status: Literal["pending", "approved", "rejected", "timeout", "cancelled"]
    userId: str
    tenantId: str | None
    createdAt: int
    expiresAt: int


class HitlSignalRecord(BaseModel):
    """A stored signal (`hitl:signal:{sessionId}`), as the Java side publishes it."""

    model_config = ConfigDict(extra="allow")

    type: Literal["approval", "rejection"]
    requestId: str
    status: Literal["approved", "rejected"]
    reason: str | None = None
    timestamp: int | None = None


class DecisionResult(BaseModel):
    requestId: str
    sessionId: str
    status: Literal["approved", "rejected"]
    reason: str | None = None


class HealthStatus(BaseModel):
    status: str
    redis: str | None = None


class Success(BaseModel, Generic[T]):
    """The Java side's success envelope."""

    status: Literal["SUCCESS"]
    message: str
    data: T
    success: Literal[True]
    timestamp: str


class Failure(BaseModel):
    """The Java side's error envelope."""

    status: Literal["ERROR"]
    message: str
    errorCode: str
    data: None
    success: Literal[False]
    timestamp: str


M = TypeVar("M", bound=BaseModel)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(data: Any) -> Any:
    """`data` with each lone surrogate replaced by U+FFFD: same shape, same lengths."""
    if isinstance(data, str):
        return _LONE_SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_surrogates(v) for v in data]
    return data


def parse(model: type[M], data: object) -> M:
    """Validate `data` against `model`, or raise the API's 400 with what was wrong.

    JSON may escape lone surrogates (`"\\ud800"`); pydantic cannot hold them, so a copy
    without them is validated and the caller's own values are kept: they go back out
    escaped the same way.
    """
    clean = _without_surrogates(data)
    try:
        model_object = model.model_validate(clean)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
        )
        raise errors.ValidationError(problems) from None
    if clean == data or not isinstance(data, dict):
        return model_object
    return model_object.model_copy(
        update={name: data[name] for name in model_object.model_fields_set if name in data}
    )
