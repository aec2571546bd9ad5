"""The JSON log line: its timestamp (to the millisecond, UTC), level, logger, the process's fields,
a dict message's keys, and `extra=` attributes."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

from llm_gateway.logs import JsonFormatter


def record(created: float, msg: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "llm_gateway.access", "levelname": "INFO", "msg": msg, **extra})
    made.created, made.msecs = created, (created - int(created)) * 1000
    return made


def test_a_line_carries_its_own_time_fields_message_and_extras() -> None:
    formatter = JsonFormatter({"worker": 1})
    first = json.loads(
        formatter.format(record(1_764_770_400.125, {"event": "access", "cost": Decimal("0.5")}))
    )
    assert first == {
        "ts": "2025-12-03T14:00:00.125Z",
        "level": "info",
        "logger": "llm_gateway.access",
        "worker": 1,
        "event": "access",
        "cost": "0.5",
    }
    # The next second, and a plain message with an extra attribute.
    second = json.loads(
        formatter.format(record(1_764_770_401.999, "hello %s", args=("you",), upstream="openai"))
    )
    assert second["ts"] == "2025-12-03T14:00:01.999Z"
    assert second["msg"] == "hello you"
    assert second["upstream"] == "openai"
    # Back within an earlier second (records from other threads may arrive late).
    assert json.loads(formatter.format(record(1_764_770_400.5, "x")))["ts"] == "2025-12-03T14:00:00.500Z"
