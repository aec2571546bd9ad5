"""The JSON access log: one line per call, whatever door it came through, as an observer of
finished calls (`gateway/record.py`). Never a secret: keys appear only by their configured name."""

from __future__ import annotations

import logging
from typing import Any

from llm_gateway.gateway.record import CallRecord
from llm_gateway.pricing import PricingStatus, format_decimal


class AccessLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def call_ended(self, record: CallRecord) -> None:
        entry: dict[str, Any] = {
            "event": "access",
            "method": record.operation,
            "status": record.status,
            "duration_ms": round(record.duration * 1000, 3),
            "request_id": record.request_id,
        }
        if record.reason:
            entry["reason"] = record.reason
        if record.principal.key:
            entry["api_key"] = record.principal.key
        if record.model:
            entry["model"] = record.model
            entry["provider"] = record.provider
        if record.task_type:
            entry["task_type"] = record.task_type
        usage, cost = record.usage, record.cost
        if usage is not None and cost is not None:
            entry["prompt_tokens"] = usage.prompt_tokens
            entry["completion_tokens"] = usage.completion_tokens
            entry["cost"] = "" if cost.status is PricingStatus.UNKNOWN else format_decimal(cost.total)
            entry["cost_status"] = cost.status.value
            entry["usage_estimated"] = usage.estimated
        caller = record.caller
        for field in ("user", "project", "tenant", "tracking_id"):
            value = getattr(caller, field)
            if value:
                entry[field] = value
        self._logger.info(entry)
