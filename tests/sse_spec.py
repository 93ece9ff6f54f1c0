"""An SSE parser written from the WHATWG algorithm, independent of the server's framing.

Lines end in CRLF, CR or LF; a blank line dispatches; `:` starts a comment; a field
may repeat (`data` lines join with LF).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class Block:
    """The lines between two blank lines, as the spec's parser sees them."""

    comments: list[str] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)


def parse(body: str) -> list[Block]:
    blocks, current = [], Block()
    lines = _LINE_END.split(body)
    if lines and lines[-1] == "":
        lines.pop()  # the text after the final line end
    for line in lines:
        if line == "":
            if current.comments or current.fields:
                blocks.append(current)
            current = Block()
        elif line.startswith(":"):
            current.comments.append(line[1:])
        else:
            name, _, value = line.partition(":")
            current.fields.append((name, value[1:] if value.startswith(" ") else value))
    if current.comments or current.fields:
        raise AssertionError(f"stream ended inside a frame: {current}")
    return blocks
