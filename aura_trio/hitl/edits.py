"""Edited arguments: what a person may change before approving, as a JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..errors import ValidationError


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, if it is a valid JSON Schema (draft 2020-12); else ValueError.

    Checking a schema against the meta-schema costs ~1.5 ms, more than the rest of
    opening a request: each distinct schema is checked once.
    """
    problem = schema_problem(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise ValueError(f"not a valid JSON Schema for editable arguments: {problem}")
    return schema


@lru_cache(maxsize=4096)
def schema_problem(schema_text: str) -> str | None:
    try:
        Draft202012Validator.check_schema(json.loads(schema_text))
    except SchemaError as error:
        return str(error.message)
    return None


def check_edited_args(
    schema: dict[str, Any] | None, args: dict[str, Any], proposed: dict[str, Any] | None
) -> None:
    """Raise :class:`ValidationError` unless `args` are an allowed edit of `proposed`.

    `schema`: None when the agent declared nothing editable. A top-level property
    marked `"readOnly": true` (JSON Schema's own keyword for "managed by the owner")
    must keep its proposed value.
    """
    if schema is None:
        raise ValidationError("the arguments of this action cannot be edited")
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, rule in properties.items():
            if isinstance(rule, dict) and rule.get("readOnly") is True:
                if args.get(name) != (proposed or {}).get(name):
                    raise ValidationError(f"edited arguments refused: {name} cannot be edited")
    errors = sorted(Draft202012Validator(schema).iter_errors(args), key=lambda e: list(e.path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "args"
        raise ValidationError(f"edited arguments refused: {where}: {errors[0].message}")
