"""Prometheus metrics: an observer of calls (`gateway/record.py`) and the text a scrape gets.

With `serve --workers N` every worker writes its values to files in one directory
(prometheus-client's multiprocess mode; the supervisor sets `PROMETHEUS_MULTIPROC_DIR` for its
workers), and a scrape that reaches any worker reads them all: the process set's counts, never
one worker's.

Labels come only from configured names, so the number of series is bounded whatever callers
send: a key's configured name (never the key), a model of the catalog or `other`, a configured
provider or `other`, a documented error reason, the door and its route. No user, project, tenant,
request or call ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from llm_gateway import background
from llm_gateway.budgets.keeper import BudgetKeeper
from llm_gateway.fleet import RedisState
from llm_gateway.gateway.breaker import CircuitState
from llm_gateway.gateway.core import Gateway
from llm_gateway.gateway.record import CallRecord, CallTracker
from llm_gateway.ledger import Ledger
from llm_gateway.pricing import PricingStatus

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
_log = logging.getLogger("llm_gateway.metrics")

# Whole calls and upstream attempts: from sub-millisecond cache hits to ten-minute streams.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0,
)  # fmt: skip
# The gateway's own time in a call: tens of microseconds to a few milliseconds.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.25,
)  # fmt: skip


class Metrics:
    """The gateway's metrics, kept by one process (and shared through files with the others of a
    worker set). An observer of every call: `call_started` and `call_ended`."""

    def __init__(
        self, is_listed: Callable[[str], bool], providers: Collection[str], keys: Collection[str]
    ) -> None:
        self._is_listed = is_listed  # the catalog's: a model it lists is a label, any other `other`
        self._providers = frozenset(providers)
        self._keys = frozenset(keys)
        self._multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        if self._multiprocess:  # values in files the scrape of any worker reads
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        registry = self.registry = CollectorRegistry(auto_describe=True)
        door = ("door", "route")
        who = ("key", "provider", "model")
        self.calls = Counter(
            "llm_gateway_calls",
            "Calls that ended, by front door and route, key name, model, status and reason.",
            [*door, "operation", *who, "status", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "llm_gateway_calls_in_flight",
            "Calls being served now, by front door and route.",
            door,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.tokens = Counter(
            "llm_gateway_tokens",
            "Tokens of served calls, by type: prompt (cache reads and writes included), completion "
            "(reasoning included), cache_read, cache_write, reasoning.",
            [*who, "type"],
            registry=registry,
        )
        self.cost = Counter(
            "llm_gateway_cost_usd",
            "What calls cost, in USD, as callers were told (calls without a known price count 0).",
            who,
            registry=registry,
        )
        self.duration = Histogram(
            "llm_gateway_call_duration_seconds",
            "Calls from arrival to their last byte, by route and model.",
            ["route", "provider", "model"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.first_token = Histogram(
            "llm_gateway_time_to_first_token_seconds",
            "Streams: from arrival to the first token sent.",
            ["provider", "model"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.upstream = Histogram(
            "llm_gateway_upstream_duration_seconds",
            "Upstream attempts, from request to last byte, by provider, model and outcome.",
            ["provider", "model", "outcome"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.overhead = Histogram(
            "llm_gateway_overhead_seconds",
            "The gateway's own time in a served call: its duration less the upstream's.",
            ["route"],
            registry=registry,
            buckets=OVERHEAD_BUCKETS,
        )
        self.retries = Counter(
            "llm_gateway_retries",
            "Attempts that repeated the previous attempt's model.",
            ["provider", "model"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "llm_gateway_fallbacks",
            "Calls served by another model than the first one tried.",
            ["provider", "model"],
            registry=registry,
        )

        # What each worker samples every second (`Sampler`), rather than counting on the call path.
        self.circuit = Gauge(
            "llm_gateway_circuit_state",
            "Each provider's circuit: 0 closed, 1 half-open (a probe may go), 2 open; the worst "
            "of the workers'.",
            ["provider"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        limited = ("limit", "name")
        self.limit_waits = Counter(
            "llm_gateway_rate_limit_waits",
            "Calls that waited in line for a provider's or a key's rate limit.",
            limited,
            registry=registry,
        )
        self.limit_waited = Counter(
            "llm_gateway_rate_limit_wait_seconds",
            "Seconds calls waited in line for a rate limit.",
            limited,
            registry=registry,
        )
        self.limit_refusals = Counter(
            "llm_gateway_rate_limit_refusals",
            "Calls (or candidates) a rate limit refused: no room within its max_wait.",
            limited,
            registry=registry,
        )
        self.ledger_queue = Gauge(
            "llm_gateway_ledger_queue_depth",
            "Call records waiting to be written to the usage ledger.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ledger_dropped = Counter(
            "llm_gateway_ledger_dropped_records",
            "Call records the ledger could not keep (its queue was full while the database and the "
            "spool both failed).",
            registry=registry,
        )
        self.fleet_failures = Counter(
            "llm_gateway_fleet_store_failures",
            "Calls to the fleet's shared store (Redis) that failed or timed out, by feature; each "
            "fell back or was refused by the feature's policy (docs/deployment.md).",
            ["feature"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "llm_gateway_cache_lookups",
            "Lookups in the response cache by calls that read it, by result (hit or miss).",
            ["result"],
            registry=registry,
        )
        self.cache_savings = Counter(
            "llm_gateway_cache_savings_usd",
            "What the calls answered from the response cache would have cost, in USD.",
            registry=registry,
        )
        self.budget_store_down = Counter(
            "llm_gateway_budget_store_down_calls",
            "Calls a budget or quota covered while the budget store could not be reached, by what "
            "budgets.when_store_down made of them: allowed (within the local allowance) or refused.",
            ["outcome"],
            registry=registry,
        )
        self.budget_remaining = Gauge(
            "llm_gateway_budget_remaining_usd",
            "What each budget has left in its current period (spent and reserved taken off).",
            ["budget"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.budget_limit = Gauge(
            "llm_gateway_budget_limit_usd",
            "Each budget's limit for its period.",
            ["budget"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )

    # -- the observer ------------------------------------------------------------------------

    def call_started(self, tracker: CallTracker) -> None:
        self._child(self.in_flight, tracker.door, tracker.route).inc()

    def call_ended(self, record: CallRecord) -> None:
        child = self._child
        child(self.in_flight, record.door, record.route).dec()
        provider, model = self._provider(record.provider), self._model(record.model)
        key = record.principal.key if record.principal.key in self._keys else ""
        door, route = record.door, record.route
        child(
            self.calls, door, route, record.operation, key, provider, model, record.status, record.reason
        ).inc()
        if not record.is_chat or record.dry_run:
            return
        # A provider batch's item waited hours in the provider's queue: counted, not timed.
        timed = not record.deferred
        if timed:
            child(self.duration, route, provider, model).observe(record.duration)
        previous = None
        for attempt in record.attempts:
            attempt_provider, attempt_model = self._provider(attempt.provider), self._model(attempt.model)
            outcome = "OK" if attempt.code == "OK" else attempt.reason or attempt.code
            if timed:
                child(self.upstream, attempt_provider, attempt_model, outcome).observe(attempt.latency)
            if previous is not None and previous.model == attempt.model:
                child(self.retries, attempt_provider, attempt_model).inc()
            previous = attempt
        if record.fallback_used:
            child(self.fallbacks, provider, model).inc()
        usage, cost, latency = record.usage, record.cost, record.latency
        if usage is not None:
            for kind, count in (
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if count:
                    child(self.tokens, key, provider, model, kind).inc(count)
        if cost is not None and cost.status is not PricingStatus.UNKNOWN:
            child(self.cost, key, provider, model).inc(float(cost.total))
        if latency is not None and record.status == "OK" and timed:
            child(self.overhead, route).observe(latency.gateway_overhead)
            if latency.time_to_first_token is not None:
                child(self.first_token, provider, model).observe(latency.time_to_first_token)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client's own lookup takes a lock and
        converts every label on each call (the labels are bounded, so is this)."""
        found = self._children.get((id(metric), labels))
        if found is None:
            found = self._children[(id(metric), labels)] = metric.labels(*labels)
        return found

    # -- the scrape --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text of every worker's values (this process's alone when it is the only
        one)."""
        if not self._multiprocess:
            return generate_latest(self.registry)
        gathered = CollectorRegistry()
        MultiProcessCollector(gathered)  # type: ignore[no-untyped-call]
        return generate_latest(gathered)

    def _model(self, model: str) -> str:
        if not model:
            return ""
        return model if self._is_listed(model) else OTHER

    def _provider(self, provider: str) -> str:
        if not provider:
            return ""
        return provider if provider in self._providers else OTHER


@contextlib.contextmanager
def worker_set_metrics(enabled: bool) -> Iterator[None]:
    """For the supervisor of a worker set: a fresh directory for its workers' metric files, named
    in the environment they inherit, and removed when the set stops. One the operator set is used
    as it is (it must be emptied between runs)."""
    if not enabled or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """A worker of the set is gone: its share of the live gauges (calls in flight) goes with it;
    its counters stay, as Prometheus expects of counters."""
    if os.environ.get(MULTIPROCESS_ENV):
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


_CIRCUIT = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Sampler:
    """Every `interval` seconds, copies into the metrics what this worker keeps itself: circuit
    states, rate-limit waits and refusals, the ledger's queue and losses, and (every
    `budget_every` samples, from the database) what each budget has left."""

    def __init__(
        self,
        metrics: Metrics,
        gateway: Gateway,
        ledger: Ledger | None,
        budgets: BudgetKeeper | None,
        fleet: RedisState | None = None,
        *,
        interval: float = 1.0,
        budget_every: int = 5,
    ) -> None:
        self._metrics, self._gateway, self._ledger, self._budgets = metrics, gateway, ledger, budgets
        self._interval, self._budget_every = interval, budget_every
        self._seen: dict[tuple[str, str], tuple[int, float, int]] = {}
        self._dropped = 0
        self._fleet = fleet
        self._fleet_failures: dict[str, int] = {}
        self._budget_store_down: dict[str, int] = {}
        self._cache_seen = (0, 0, Decimal(0))  # hits, misses, saved
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-sampler")

    async def close(self) -> None:
        task, self._task = self._task, None
        await background.stop(task)

    async def _run(self) -> None:
        ticks = 0
        while True:
            try:
                self.sample()
                if self._budgets is not None and ticks % self._budget_every == 0:
                    await self.sample_budgets()
            except Exception:  # a database that is down: the next tick tries again
                _log.warning({"event": "metrics_sample_failed"}, exc_info=True)
            ticks += 1
            await asyncio.sleep(self._interval)

    def sample(self) -> None:
        m = self._metrics
        for provider, breaker in self._gateway.breakers.items():
            m.circuit.labels(provider).set(_CIRCUIT[breaker.state])
        for kind, name, limiter in self._gateway.rate_limiters():
            waits, waited, refusals = self._seen.get((kind, name), (0, 0.0, 0))
            if limiter.waits > waits:
                m.limit_waits.labels(kind, name).inc(limiter.waits - waits)
                m.limit_waited.labels(kind, name).inc(limiter.waited - waited)
            if limiter.refusals > refusals:
                m.limit_refusals.labels(kind, name).inc(limiter.refusals - refusals)
            self._seen[(kind, name)] = (limiter.waits, limiter.waited, limiter.refusals)
        if self._ledger is not None:
            stats = self._ledger.writer.stats
            m.ledger_queue.set(stats.queued)
            if stats.dropped > self._dropped:
                m.ledger_dropped.inc(stats.dropped - self._dropped)
                self._dropped = stats.dropped
        cache = self._gateway.cache
        if cache is not None:
            hits, misses, saved = self._cache_seen
            if cache.hits > hits:
                m.cache_lookups.labels("hit").inc(cache.hits - hits)
            if cache.misses > misses:
                m.cache_lookups.labels("miss").inc(cache.misses - misses)
            if cache.saved > saved:
                m.cache_savings.inc(float(cache.saved - saved))
            self._cache_seen = (cache.hits, cache.misses, cache.saved)
        if self._budgets is not None:
            for outcome, calls in self._budgets.store_down_calls.items():
                seen = self._budget_store_down.get(outcome, 0)
                if calls > seen:
                    m.budget_store_down.labels(outcome).inc(calls - seen)
                    self._budget_store_down[outcome] = calls
        if self._fleet is not None:
            for feature, failures in self._fleet.failures.items():
                seen = self._fleet_failures.get(feature, 0)
                if failures > seen:
                    m.fleet_failures.labels(feature).inc(failures - seen)
                    self._fleet_failures[feature] = failures

    async def sample_budgets(self) -> None:
        assert self._budgets is not None
        budgets = self._budgets.budgets
        for budget, standing in zip(budgets, await self._budgets.standings(budgets), strict=True):
            self._metrics.budget_remaining.labels(budget.id).set(float(standing.remaining))
            self._metrics.budget_limit.labels(budget.id).set(float(standing.charge.limit))
