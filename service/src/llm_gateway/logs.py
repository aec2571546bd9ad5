"""Structured JSON logs on stdout: one object per line, access log lines included."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from opentelemetry import trace

from llm_gateway import json_codec

_STANDARD = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._fields = fields or {}  # on every line, e.g. the worker process's index

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            **self._fields,
        }
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["msg"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # tracing is on and the line is written during a call
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json_codec.text(entry)


def configure_logging(level: str, fields: dict[str, Any] | None = None) -> None:
    # The access log writes a line per call: skip what no line uses (the Logging HOWTO's
    # "Optimization" table): caller frame lookup, thread and process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's client logs nothing per request; keep its internals quiet below warnings anyway.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
