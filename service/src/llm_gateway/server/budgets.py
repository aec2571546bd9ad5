"""The BudgetService servicer: budgets created, read, changed and deleted through the API, with
where each stands now, and the alerts raised. Admin keys may write; any key may read the budgets
of its own key scope."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, TypeVar

from google.protobuf import empty_pb2, timestamp_pb2
from pydantic import ValidationError

from llm_gateway.budgets.counters import Standing
from llm_gateway.budgets.keeper import BudgetKeeper
from llm_gateway.budgets.model import Budget
from llm_gateway.budgets.periods import Period
from llm_gateway.budgets.scope import ScopeKind
from llm_gateway.budgets.store import BudgetExistsError
from llm_gateway.config.schema import BudgetLimitConfig
from llm_gateway.domain.errors import Code, FieldViolation, GatewayError, invalid_field, invalid_request
from llm_gateway.domain.principal import ANONYMOUS, Principal
from llm_gateway.pricing import format_decimal
from llm_gateway.server.boundary import ErrorBoundary
from llm_gateway.server.context import call_var
from llm_gateway.server.paging import page_position, page_size, page_token
from llmgateway.v1 import budget_service_pb2, budget_service_pb2_grpc, budgets_pb2

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

T = TypeVar("T")
_log = logging.getLogger("llm_gateway.server")
_PERIODS = {
    budgets_pb2.BUDGET_PERIOD_UNSPECIFIED: Period.MONTH,
    budgets_pb2.BUDGET_PERIOD_HOUR: Period.HOUR,
    budgets_pb2.BUDGET_PERIOD_DAY: Period.DAY,
    budgets_pb2.BUDGET_PERIOD_WEEK: Period.WEEK,
    budgets_pb2.BUDGET_PERIOD_MONTH: Period.MONTH,
    budgets_pb2.BUDGET_PERIOD_NONE: Period.NONE,
}
_PERIOD_VALUES = {period: number for number, period in _PERIODS.items() if number}
_UPDATABLE = ("scope", "limit_usd", "period", "thresholds")


class BudgetServicer(budget_service_pb2_grpc.BudgetServiceServicer):
    def __init__(self, keeper: BudgetKeeper | None) -> None:
        self._keeper = keeper  # None: the gateway keeps no ledger, so no budgets

    async def CreateBudget(  # noqa: N802 (gRPC method name)
        self, request: budget_service_pb2.CreateBudgetRequest, context: Context
    ) -> budgets_pb2.Budget:
        async with ErrorBoundary(context):
            keeper = self._admin()
            budget = _budget(request.budget, "budget.")
            existing = keeper.find(budget.id)
            if existing is not None and existing.source == "config":
                raise _read_only(budget.id)
            now = time.time()
            budget = _with_times(budget, now, now)
            try:
                await _answer(keeper.store.create_budget(budget))
            except BudgetExistsError:
                raise GatewayError(
                    f"budget {budget.id!r} exists already; change it with UpdateBudget",
                    code=Code.ALREADY_EXISTS,
                    reason="BUDGET_EXISTS",
                    metadata={"budget_id": budget.id},
                ) from None
            await _answer(keeper.refresh())
            _log.info({"event": "budget_created", "budget_id": budget.id, "scope": str(budget.scope)})
            return await self._shown(keeper, budget)

    async def GetBudget(  # noqa: N802
        self, request: budget_service_pb2.GetBudgetRequest, context: Context
    ) -> budgets_pb2.Budget:
        async with ErrorBoundary(context):
            keeper = self._enabled()
            budget = self._visible(keeper, request.id)
            return await self._shown(keeper, budget)

    async def ListBudgets(  # noqa: N802
        self, request: budget_service_pb2.ListBudgetsRequest, context: Context
    ) -> budget_service_pb2.ListBudgetsResponse:
        async with ErrorBoundary(context):
            keeper = self._enabled()
            size = page_size(request.page_size)
            offset = page_position(request.page_token, "budgets")
            principal = _principal()
            budgets = sorted((b for b in keeper.budgets if _may_read(principal, b)), key=lambda b: b.id)
            page = budgets[offset : offset + size]
            standings = await _answer(keeper.standings(page))
            end = offset + len(page)
            return budget_service_pb2.ListBudgetsResponse(
                budgets=[_message(keeper, b, s) for b, s in zip(page, standings, strict=True)],
                next_page_token=page_token(end, "budgets") if end < len(budgets) else "",
                total_size=len(budgets),
            )

    async def UpdateBudget(  # noqa: N802
        self, request: budget_service_pb2.UpdateBudgetRequest, context: Context
    ) -> budgets_pb2.Budget:
        async with ErrorBoundary(context):
            keeper = self._admin()
            current = self._found(keeper, request.budget.id)
            if current.source == "config":
                raise _read_only(current.id)
            paths = list(request.update_mask.paths) or list(_UPDATABLE)
            for i, path in enumerate(paths):
                if path not in _UPDATABLE:
                    raise invalid_field(f"update_mask.paths[{i}]", f"must be one of {', '.join(_UPDATABLE)}")
            given = request.budget
            merged = budgets_pb2.Budget(
                id=current.id,
                scope=given.scope if "scope" in paths else str(current.scope),
                limit_usd=given.limit_usd if "limit_usd" in paths else str(current.limit),
                period=given.period if "period" in paths else _PERIOD_VALUES[current.period],
                thresholds=given.thresholds
                if "thresholds" in paths
                else [str(t) for t in current.thresholds],
            )
            budget = _with_times(_budget(merged, "budget."), current.created_at, time.time())
            if not await _answer(keeper.store.update_budget(budget)):
                raise _not_found(budget.id)
            await _answer(keeper.refresh())
            _log.info({"event": "budget_updated", "budget_id": budget.id, "fields": paths})
            return await self._shown(keeper, budget)

    async def DeleteBudget(  # noqa: N802
        self, request: budget_service_pb2.DeleteBudgetRequest, context: Context
    ) -> empty_pb2.Empty:
        async with ErrorBoundary(context):
            keeper = self._admin()
            if not request.id:
                raise invalid_field("id", "must be set")
            current = self._found(keeper, request.id)
            if current.source == "config":
                raise _read_only(current.id)
            if not await _answer(keeper.store.delete_budget(current.id)):
                raise _not_found(current.id)
            await _answer(keeper.refresh())
            _log.info({"event": "budget_deleted", "budget_id": current.id})
            return empty_pb2.Empty()

    async def ListBudgetAlerts(  # noqa: N802
        self, request: budget_service_pb2.ListBudgetAlertsRequest, context: Context
    ) -> budget_service_pb2.ListBudgetAlertsResponse:
        async with ErrorBoundary(context):
            keeper = self._enabled()
            principal = _principal()
            if request.budget_id:
                self._visible(keeper, request.budget_id)
            elif not principal.admin:
                raise GatewayError(
                    "name the budget (budget_id): only an admin key lists every alert",
                    code=Code.PERMISSION_DENIED,
                    reason="ADMIN_REQUIRED",
                    metadata={"field": "budget_id"},
                )
            size = page_size(request.page_size)
            after = page_position(request.page_token, f"alerts:{request.budget_id}")
            found = await _answer(keeper.store.alerts(request.budget_id, after, size + 1))
            page = found[:size]
            return budget_service_pb2.ListBudgetAlertsResponse(
                alerts=[
                    _alert(stored.alert.id, stored.alert.created_at, stored.alert.payload) for stored in page
                ],
                next_page_token=page_token(page[-1].seq, f"alerts:{request.budget_id}")
                if len(found) > size
                else "",
            )

    # -- helpers ------------------------------------------------------------------------------

    def _enabled(self) -> BudgetKeeper:
        if self._keeper is None:
            raise GatewayError(
                "the gateway keeps no ledger, and budgets live in its database: set ledger.enabled = true",
                code=Code.FAILED_PRECONDITION,
                reason="LEDGER_DISABLED",
            )
        return self._keeper

    def _admin(self) -> BudgetKeeper:
        keeper = self._enabled()
        if not _principal().admin:
            raise GatewayError(
                "only an admin gateway key may create, change or delete budgets",
                code=Code.PERMISSION_DENIED,
                reason="ADMIN_REQUIRED",
            )
        return keeper

    def _found(self, keeper: BudgetKeeper, budget_id: str) -> Budget:
        if not budget_id:
            raise invalid_field("budget.id", "must be set")
        budget = keeper.find(budget_id)
        if budget is None:
            raise _not_found(budget_id)
        return budget

    def _visible(self, keeper: BudgetKeeper, budget_id: str) -> Budget:
        if not budget_id:
            raise invalid_field("id", "must be set")
        budget = keeper.find(budget_id)
        # Another key's budget is NOT_FOUND, not PERMISSION_DENIED: ids are not disclosed.
        if budget is None or not _may_read(_principal(), budget):
            raise _not_found(budget_id)
        return budget

    async def _shown(self, keeper: BudgetKeeper, budget: Budget) -> budgets_pb2.Budget:
        (standing,) = await _answer(keeper.standings([budget]))
        return _message(keeper, budget, standing)


def _principal() -> Principal:
    call = call_var.get()
    return call.principal if call is not None else ANONYMOUS


def _may_read(principal: Principal, budget: Budget) -> bool:
    return principal.admin or (budget.scope.kind is ScopeKind.KEY and budget.scope.value == principal.key)


def _budget(message: budgets_pb2.Budget, prefix: str) -> Budget:
    """The budget a request describes, checked as the configuration file's budgets are."""
    violations: list[FieldViolation] = []
    limit: Decimal | None = None
    try:
        limit = Decimal(message.limit_usd) if message.limit_usd else None
    except InvalidOperation:
        violations.append(
            FieldViolation(f"{prefix}limit_usd", "must be a decimal number of USD such as '250'")
        )
    if not message.limit_usd:
        violations.append(FieldViolation(f"{prefix}limit_usd", "must be set"))
    if message.period not in _PERIODS:
        violations.append(FieldViolation(f"{prefix}period", "unknown period"))
    if violations:
        raise invalid_request(violations)
    try:
        config = BudgetLimitConfig(
            id=message.id,
            scope=message.scope,
            limit_usd=limit,  # type: ignore[arg-type]
            period=_PERIODS[message.period].value,  # type: ignore[arg-type]
            thresholds=tuple(message.thresholds),  # type: ignore[arg-type]
        )
    except ValidationError as err:
        raise invalid_request(
            FieldViolation(f"{prefix}{_field(e['loc'])}", e["msg"].removeprefix("Value error, "))
            for e in err.errors()
        ) from None
    return Budget.from_config(config)


def _field(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else ""
    if name == "limit_usd":
        return name
    if len(loc) > 1 and isinstance(loc[1], int):
        return f"{name}[{loc[1]}]"
    return name


def _with_times(budget: Budget, created: float, updated: float) -> Budget:
    return Budget(
        budget.id, budget.scope, budget.limit, budget.period, budget.thresholds, "api", created, updated
    )


def _message(keeper: BudgetKeeper, budget: Budget, standing: Standing) -> budgets_pb2.Budget:
    window = standing.charge.window
    message = budgets_pb2.Budget(
        id=budget.id,
        scope=str(budget.scope),
        limit_usd=format_decimal(budget.limit),
        period=_PERIOD_VALUES[budget.period],
        thresholds=[format_decimal(t) for t in budget.thresholds],
        spent_usd=format_decimal(standing.spent),
        reserved_usd=format_decimal(standing.reserved),
        remaining_usd=format_decimal(standing.remaining),
        source=budgets_pb2.BUDGET_SOURCE_CONFIG
        if budget.source == "config"
        else budgets_pb2.BUDGET_SOURCE_API,
        time_zone=keeper.config.time_zone,
    )
    if budget.period is not Period.NONE:
        message.window_start.CopyFrom(_timestamp(window.start))
        message.resets_at.CopyFrom(_timestamp(window.end))
    if budget.source == "api":
        message.create_time.CopyFrom(_timestamp(datetime.fromtimestamp(budget.created_at, UTC)))
        message.update_time.CopyFrom(_timestamp(datetime.fromtimestamp(budget.updated_at, UTC)))
    return message


def _alert(alert_id: str, created_at: float, payload: Mapping[str, object]) -> budgets_pb2.BudgetAlert:
    def text(name: str) -> str:
        value = payload.get(name)
        return "" if value is None else str(value)

    message = budgets_pb2.BudgetAlert(
        id=alert_id,
        budget_id=text("budget_id"),
        scope=text("scope"),
        current_cost_usd=text("current_cost"),
        threshold_usd=text("threshold"),
        threshold_percent=text("threshold_percent"),
        limit_usd=text("limit"),
        period=text("period"),
        call_id=text("call_id"),
        payload_json=json.dumps(payload, sort_keys=True),
    )
    message.create_time.CopyFrom(_timestamp(datetime.fromtimestamp(created_at, UTC)))
    return message


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _not_found(budget_id: str) -> GatewayError:
    return GatewayError(
        f"no budget {budget_id!r}",
        code=Code.NOT_FOUND,
        reason="BUDGET_NOT_FOUND",
        metadata={"budget_id": budget_id},
    )


def _read_only(budget_id: str) -> GatewayError:
    return GatewayError(
        f"budget {budget_id!r} is defined in the configuration file; change it there",
        code=Code.FAILED_PRECONDITION,
        reason="BUDGET_READ_ONLY",
        metadata={"budget_id": budget_id},
    )


async def _answer(work: Awaitable[T]) -> T:
    """The store's answer; a database that cannot answer is UNAVAILABLE (details to the log)."""
    try:
        return await work
    except (GatewayError, BudgetExistsError):
        raise
    except Exception as exc:
        _log.warning({"event": "budget_store_error", "error": type(exc).__name__, "detail": str(exc)[:200]})
        raise GatewayError(
            "the budget store cannot be reached now; retry shortly",
            code=Code.UNAVAILABLE,
            reason="BUDGET_STORE_UNAVAILABLE",
        ) from None
