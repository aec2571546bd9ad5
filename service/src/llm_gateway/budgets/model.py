"""Budgets, key quotas and alerts as the gateway keeps them.

A budget is a limit in USD on what the calls in its scope spend in each window of its period. A
key's quota is the same mechanism counted in requests or tokens: both reserve before a call and
settle after it (`counters.py`), so both hold across every worker. An alert is raised once per
threshold per window when a budget's settled spend crosses it, or when one call costs more than
the `cost_alert_threshold` it asked for.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from llm_gateway.budgets.counters import Charge, Spend
from llm_gateway.budgets.periods import Period, Window, window
from llm_gateway.budgets.scope import Scope, ScopeKind, parse_scope
from llm_gateway.config.schema import BudgetLimitConfig
from llm_gateway.domain.messages import Caller
from llm_gateway.pricing import format_decimal

HUNDRED = Decimal(100)
Source = Literal["config", "api"]


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    scope: Scope
    limit: Decimal  # USD
    period: Period
    thresholds: tuple[Decimal, ...] = ()  # percentages of the limit, ascending
    source: Source = "api"
    created_at: float = 0.0  # Unix time; 0 for a budget from config
    updated_at: float = 0.0

    @classmethod
    def from_config(cls, config: BudgetLimitConfig) -> Budget:
        return cls(
            config.id,
            parse_scope(config.scope),
            config.limit_usd,
            Period(config.period),
            tuple(config.thresholds),
            "config",
        )

    def charge(self, zone: ZoneInfo, now: datetime) -> Charge:
        return Charge(self.id, self.limit, window(self.period, zone, now))

    def crossed(self, spend: Spend) -> list[Decimal]:
        """The thresholds `spend` went past (from below to at or above)."""
        if not self.limit:
            return []
        return [t for t in self.thresholds if spend.before < self.limit * t / HUNDRED <= spend.after]


@dataclass(frozen=True, slots=True)
class Quota:
    """One of a key's quotas: `what` per calendar `period`."""

    key: str
    what: Literal["requests", "tokens"]
    period: Period  # minute, hour or day
    limit: int

    @property
    def id(self) -> str:
        # Never a budget id: those cannot contain ':'.
        return f"quota:{self.key}:{self.what}:{self.period.value}"


@dataclass(frozen=True, slots=True)
class Alert:
    """A raised alert: its event id (stable across webhook retries), what makes it unique (one
    per budget, window and threshold, or one per call), and its payload."""

    id: str
    dedup: str
    budget_id: str  # "" for a call's own threshold
    created_at: float
    payload: Mapping[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


def new_alert_id() -> str:
    return f"alert_{secrets.token_hex(12)}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def scope_ids(scope: Scope) -> dict[str, str]:
    """The seed documents' ids for a scope (user_id, project_id...), as a payload carries them."""
    match scope.kind:
        case ScopeKind.USER:
            return {"user_id": scope.value}
        case ScopeKind.PROJECT:
            return {"project_id": scope.value}
        case ScopeKind.TENANT:
            return {"tenant_id": scope.value}
        case ScopeKind.KEY:
            return {"key_name": scope.value}
        case ScopeKind.TAG:
            return {"tag": f"{scope.tag}={scope.value}"}
        case ScopeKind.GATEWAY:
            return {}


def budget_alert(budget: Budget, window: Window, threshold: Decimal, spent: Decimal, now: float) -> Alert:
    """The `cost_alert` of `budget` crossing `threshold` percent in `window`. Money is exact
    decimal text, as everywhere in the gateway's API."""
    payload = {
        "type": "cost_alert",
        "alert_id": "",
        "budget_id": budget.id,
        "scope": str(budget.scope),
        **scope_ids(budget.scope),
        "current_cost": format_decimal(spent),
        "threshold": format_decimal(budget.limit * threshold / HUNDRED),
        "threshold_percent": format_decimal(threshold),
        "limit": format_decimal(budget.limit),
        "currency": "USD",
        "period": budget.period.value,
        "window_start": rfc3339(window.start),
        "resets_at": rfc3339(window.end) if budget.period is not Period.NONE else None,
        "created_at": rfc3339(datetime.fromtimestamp(now, UTC)),
    }
    return _with_id(f"budget:{budget.id}:{window.start.isoformat()}:{threshold}", budget.id, now, payload)


def call_alert(
    call_id: str, caller: Caller, key: str, cost: Decimal, threshold: Decimal, now: float
) -> Alert:
    """The `cost_alert` of one call that cost more than its `cost_alert_threshold`."""
    ids = {"user_id": caller.user, "project_id": caller.project, "tenant_id": caller.tenant}
    payload = {
        "type": "cost_alert",
        "alert_id": "",
        "call_id": call_id,
        "scope": "call",
        **{name: value for name, value in ids.items() if value},
        **({"key_name": key} if key else {}),
        "current_cost": format_decimal(cost),
        "threshold": format_decimal(threshold),
        "currency": "USD",
        "period": "call",
        "created_at": rfc3339(datetime.fromtimestamp(now, UTC)),
    }
    return _with_id(f"call:{call_id}", "", now, payload)


def _with_id(dedup: str, budget_id: str, now: float, payload: dict[str, Any]) -> Alert:
    alert_id = new_alert_id()
    payload["alert_id"] = alert_id
    return Alert(alert_id, dedup, budget_id, now, payload)
