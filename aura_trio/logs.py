"""Logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time

# Only these `extra=` fields reach the output: a token or a secret can never ride along.
CONTEXT_FIELDS = ("sessionId", "requestId", "tenantId", "worker", "bind", "bytes")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _WorkerTag(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


def configure_logging(level: str, *, worker: int | None = None) -> None:
    """JSON lines on stderr at `level`; each line names the worker process, if one.

    A record skips what the JSON line never shows: its caller's file and line (a
    stack walk per record), thread, process and multiprocessing names (the logging
    HOWTO's "Optimization" switches).
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    if worker is not None:
        handler.addFilter(_WorkerTag(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
