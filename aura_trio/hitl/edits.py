"""Edited arguments: what a person may change before approving, as a JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..errors import ValidationError

# Schemas found valid, by their canonical JSON. Checking one against the draft
# 2020-12 meta-schema costs ~1.6 ms of CPU (jsonschema resolves the meta-schema's
# dynamic references on every check): it was 30 % of a round trip's server CPU
# when every request checked its schema. An agent asks with a handful of schemas
# (the built-in one: one per action, user and step), so almost every check is a hit.
_REMEMBERED_SCHEMAS = 1024


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, if it is a valid JSON Schema (draft 2020-12); else ValueError.

    What is checked is the schema as it will be stored, its JSON: two schemas with
    the same JSON are the same schema, and a valid one is checked only once.
    """
    try:
        canonical = json.dumps(schema, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"not a valid JSON Schema for editable arguments: {error}") from None
    _check_canonical(canonical)
    return schema


@lru_cache(maxsize=_REMEMBERED_SCHEMAS)
def _check_canonical(canonical: str) -> None:
    # Raising is not cached: an invalid schema is checked (and refused) every time.
    try:
        Draft202012Validator.check_schema(json.loads(canonical))
    except SchemaError as error:
        raise ValueError(
            f"not a valid JSON Schema for editable arguments: {error.message}"
        ) from None


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
