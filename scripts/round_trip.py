#!/usr/bin/env python3
"""One approval round trip against a running aura-trio, with nothing but the stdlib.

    python3 scripts/round_trip.py http://127.0.0.1:9000 --token "$TOKEN" --tenant t1
    python3 scripts/round_trip.py http://localhost:8080/api --token "$TOKEN" --tenant t1

The second form goes through the Gateway (`/api` is its prefix). Opens a stream whose
prompt asks for a merge, reads up to the `hitl` event, approves that request on a
second connection, and reads on to `end` and `data: [DONE]`. Prints one line per
frame and a summary; exits 1 when anything is not as the contract says.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from typing import Any
from urllib.parse import quote, urlsplit

PROMPT = "please merge PR 42 into main"


class RoundTripError(Exception):
    """The server answered, but not as docs/contract.md says."""


def _connect(base: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(base)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    default = 443 if parts.scheme == "https" else 80
    return cls(parts.hostname or "127.0.0.1", parts.port or default, timeout=timeout), parts.path


def _frames(response: http.client.HTTPResponse) -> Any:
    """Yield (arrival seconds, lines of one frame) as each frame's blank line arrives."""
    lines: list[str] = []
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\n")
        if line:
            lines.append(line)
            continue
        yield time.monotonic(), lines
        lines = []


def round_trip(base: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    stream, prefix = _connect(base, timeout)
    stream.request(
        "GET",
        f"{prefix}/aura/test/stream?message={quote(PROMPT)}",
        headers={**headers, "Accept": "text/event-stream"},
    )
    response = stream.getresponse()
    if response.status != 200:
        raise RoundTripError(f"stream answered {response.status}: {response.read()[:500]!r}")
    content_type = response.getheader("Content-Type", "")
    if not content_type.startswith("text/event-stream"):
        raise RoundTripError(f"stream Content-Type is {content_type!r}")

    events: list[tuple[int, str, dict[str, Any]]] = []
    comments: list[str] = []
    done = False
    approved = None
    for _, lines in _frames(response):
        if done:
            raise RoundTripError(f"a frame after [DONE]: {lines}")
        fields = dict(line.split(": ", 1) for line in lines if not line.startswith(":"))
        comments += [line[1:].strip() for line in lines if line.startswith(":")]
        if fields == {"data": "[DONE]"}:
            done = True
            print("data: [DONE]", flush=True)
            continue
        if "event" not in fields:
            print(": " + " | ".join(comments[-1:]), flush=True)
            continue
        data = json.loads(fields["data"])
        events.append((int(fields["id"]), fields["event"], data))
        print(f"id: {fields['id']}  event: {fields['event']}", flush=True)
        if fields["event"] == "hitl":
            approved = _approve(base, headers, data["data"]["requestId"], timeout)
    stream.close()

    if not comments or comments[0] != "connected":
        raise RoundTripError(f"the stream did not open with ': connected' ({comments[:1]})")
    if not done:
        raise RoundTripError("the stream ended without data: [DONE]")
    if approved is None:
        raise RoundTripError("no hitl event was sent")
    ids = [event_id for event_id, _, _ in events]
    if ids != list(range(1, len(ids) + 1)):
        raise RoundTripError(f"ids are not 1, 2, 3...: {ids}")
    kind, last = events[-1][1], events[-1][2]
    if kind != "end" or last.get("status") != "completed":
        raise RoundTripError(f"the stream ended with {kind} {last}")
    return {
        "events": len(events),
        "requestId": approved,
        "seconds": round(time.monotonic() - started, 2),
    }


def _approve(base: str, headers: dict[str, str], request_id: str, timeout: float) -> str:
    connection, prefix = _connect(base, timeout)
    try:
        connection.request(
            "POST",
            f"{prefix}/aura/hitl/approve/{request_id}",
            body=b"{}",
            headers={**headers, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RoundTripError(f"approve answered {response.status}: {body[:500]!r}")
    print(f"POST /aura/hitl/approve/{request_id} -> {response.status}", flush=True)
    return request_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="e.g. http://127.0.0.1:9000, or the Gateway's .../api")
    parser.add_argument("--token", required=True, help="a JWT (aura-trio token --sub ... )")
    parser.add_argument("--tenant", help="sent as X-Tenant-ID (must match the token)")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout, seconds")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.token}"}
    if args.tenant:
        headers["X-Tenant-ID"] = args.tenant
    try:
        summary = round_trip(args.base.rstrip("/"), headers, args.timeout)
    except (RoundTripError, OSError, ValueError, KeyError) as error:
        print(f"round trip FAILED: {error}", file=sys.stderr)
        return 1
    print("round trip OK: " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
