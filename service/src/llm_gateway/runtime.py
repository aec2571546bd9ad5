"""What a gateway process runs on, built once from its configuration and shared by every front
door (the gRPC server, the HTTP doors, the batch runner): the gateway core with its providers,
catalog and observers (the access log, the usage ledger), the one pooled upstream HTTP client, and
who each gateway key is."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from llm_gateway.access_log import AccessLog
from llm_gateway.batches.book import BatchBook
from llm_gateway.batches.runner import BatchRunner
from llm_gateway.batches.store import open_batch_store
from llm_gateway.budgets.keeper import BudgetKeeper
from llm_gateway.budgets.store import open_budget_store
from llm_gateway.budgets.webhooks import WebhookSender
from llm_gateway.cache import MemoryCache, RedisCache, ResponseCache
from llm_gateway.catalog import Catalog
from llm_gateway.config.schema import ApiKeyConfig, GatewayConfig
from llm_gateway.edge import Drain
from llm_gateway.fleet import SCRIPTS, RedisState, SharedCircuit, shared_limiters
from llm_gateway.gateway import Gateway
from llm_gateway.gateway.guard import ProviderGuard, key_limiter
from llm_gateway.gateway.limits import local_limiter
from llm_gateway.gateway.record import ANONYMOUS, CallObserver, CallRecord, Principal
from llm_gateway.gateway.subscriptions import SubscriptionMeter, plans_from_config
from llm_gateway.ledger import Ledger
from llm_gateway.metrics import Metrics, Sampler
from llm_gateway.providers import Provider, build_providers, enabled_providers
from llm_gateway.providers.http import create_http_client
from llm_gateway.router import Router
from llm_gateway.tracing import Tracing

_log = logging.getLogger("llm_gateway")


@dataclass(frozen=True)
class Principals:
    """Gateway keys by the SHA-256 of the key, and who each is. Plaintext keys are not kept."""

    digests: Mapping[bytes, str]  # digest -> key name
    keys: Mapping[str, Principal]  # key name -> who it is

    @property
    def enabled(self) -> bool:
        """Whether callers must present a key (no keys configured: authentication is off)."""
        return bool(self.digests)

    def of(self, key_name: str) -> Principal:
        """Who a call is from, by the name of the key it presented ("" for none or a wrong one)."""
        if not self.enabled:
            return ANONYMOUS
        return self.keys.get(key_name) or Principal(key_name, admin=False)

    @classmethod
    def from_config(cls, keys: Sequence[ApiKeyConfig]) -> Principals:
        digests = {}
        for key in keys:
            if key.sha256 is not None:
                digests[bytes.fromhex(key.sha256)] = key.name
            elif key.key is not None:
                digests[hashlib.sha256(key.key.get_secret_value().encode()).digest()] = key.name
        principals = {
            k.name: Principal(k.name, k.role == "admin", frozenset(k.models), frozenset(k.providers))
            for k in keys
        }
        return cls(digests, principals)


@dataclass
class Runtime:
    config: GatewayConfig
    gateway: Gateway
    catalog: Catalog
    providers: dict[str, Provider]
    http: aiohttp.ClientSession
    principals: Principals
    ledger: Ledger | None
    budgets: BudgetKeeper | None = None
    metrics: Metrics | None = None
    sampler: Sampler | None = None  # started with the runtime when there are metrics
    tracing: Tracing | None = None
    fleet: RedisState | None = None  # the state shared with other replicas (fleet.redis_url)
    batches: BatchRunner | None = None  # runs batches' items (with a ledger only)
    # What the doors do with batches (refusing every request without a ledger).
    batch_book: BatchBook = field(default_factory=lambda: BatchBook(None, ()))
    # The calls in flight on every door of this process, drained together at shutdown.
    drain: Drain = field(default_factory=Drain)

    async def start(self) -> None:
        """Starts what runs beside the calls (the ledger's writer, budget settlements, webhooks)."""
        if self.fleet is not None:
            await self.fleet.start(SCRIPTS)
        if self.ledger is not None:
            await self.ledger.start()
        if self.budgets is not None:
            await self.budgets.start()
        if self.gateway.subscriptions is not None:
            await self.gateway.subscriptions.refresh()
        if self.batches is not None:
            self.batches.start()
        if self.metrics is not None and self.sampler is None:
            self.sampler = Sampler(self.metrics, self.gateway, self.ledger, self.budgets, self.fleet)
            self.sampler.start()

    async def aclose(self) -> None:
        """After every door has stopped: settles the budgets and writes out the ledger, then releases
        the providers and the upstream connections."""
        if self.batches is not None:  # items under way finish, or run again once their leases end
            await self.batches.close()
            await self.batches.store.close()
        if self.sampler is not None:
            await self.sampler.close()
        if self.tracing is not None:  # after the doors: the last calls' spans are ended
            await asyncio.to_thread(self.tracing.shutdown)
        if self.gateway.subscriptions is not None:  # before the store it counts in closes
            await self.gateway.subscriptions.close()
        if self.budgets is not None:
            await self.budgets.close()
        if self.ledger is not None:
            await self.ledger.close()
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.close()
        if self.fleet is not None:
            await self.fleet.close()


class _Chats:
    """Passes on the records of chat calls only: estimates and listings are not usage."""

    def __init__(self, observer: CallObserver) -> None:
        self._observer = observer

    def call_ended(self, record: CallRecord) -> None:
        if record.is_chat:
            self._observer.call_ended(record)


def build_runtime(config: GatewayConfig, observers: Sequence[CallObserver] = ()) -> Runtime:
    """The runtime for `config`, with the access log (if configured) and `observers` told of every
    call. Must be called with the event loop running (the HTTP client belongs to it)."""
    enabled = enabled_providers(config)
    http = create_http_client()
    providers = build_providers(enabled, http)
    catalog = Catalog(config, enabled)
    router = Router(catalog, config.aliases, config.routing.auto, list(config.providers), config.groups)
    fleet = RedisState(config.fleet) if config.fleet.redis_url is not None else None
    limiter_of = local_limiter if fleet is None else shared_limiters(fleet, config.fleet.limits_when_down)
    share = config.batches.provider_share
    guards = {name: ProviderGuard.from_config(name, p, limiter_of, share) for name, p in enabled.items()}
    if fleet is not None:  # each provider's circuit shared with the other replicas
        for name, guard in guards.items():
            settings = enabled[name].circuit_breaker
            circuit = SharedCircuit(
                fleet,
                name,
                settings.failure_threshold,
                settings.reset_timeout,
                config.fleet.breakers_when_down,
            )
            circuit.watch(guard.breaker.follow)
            guard.breaker.shared = circuit
    key_limiters = {
        k.name: key_limiter(k.name, k.rate_limit, limiter_of) for k in config.auth.keys if k.rate_limit
    }
    told: list[CallObserver] = []
    if config.logging.access_log:
        told.append(AccessLog(logging.getLogger("llm_gateway.access")))
    ledger = Ledger.from_config(config.ledger)
    budgets = None
    if ledger is not None:
        told.append(_Chats(ledger))
        budgets = _budget_keeper(config, ledger, http)
        told.append(_Chats(budgets))
        ledger.queries.plan_periods = budgets.store.plan_periods  # the subscription periods' fees
    metrics = None
    if config.metrics.enabled:
        metrics = Metrics(catalog.is_listed, list(config.providers), [k.name for k in config.auth.keys])
        told.append(metrics)
    tracing = Tracing.from_config(config)
    if tracing is not None:
        told.append(tracing)
    told.extend(observers)
    cache = None
    if config.cache.enabled:  # with mode "off", calls may still turn it on for themselves
        store = RedisCache(fleet) if fleet is not None and config.cache.backend == "redis" else None
        cache = ResponseCache(config.cache, store or MemoryCache(config.cache.max_bytes))
    plans = plans_from_config(config)
    meter = SubscriptionMeter(plans, None if budgets is None else budgets.store) if plans else None
    gateway = Gateway(
        router,
        catalog,
        providers,
        guards,
        key_limiters,
        told,
        budgets,
        cache,
        config.routing,
        config.tasks,
        meter,
    )
    principals = Principals.from_config(config.auth.keys)
    batches = None
    if ledger is not None:
        batch_store = open_batch_store(
            ledger.url, timeout=config.ledger.write_timeout, pool_size=config.ledger.pool_size
        )
        runs = config.batches
        batches = BatchRunner(
            batch_store,
            gateway,
            list(config.providers),
            principals.of,
            poll_interval=runs.poll_interval,
            lease=runs.lease,
            pause=runs.budget_pause,
            most_at_once=runs.max_running,
            upstream_poll=runs.upstream_poll,
            batch_price=runs.batch_price,
        )
    if not principals.enabled:
        _log.warning("authentication is off: no API keys are configured (auth.keys)")
    gateway.tracing = tracing
    return Runtime(
        config,
        gateway,
        catalog,
        providers,
        http,
        principals,
        ledger,
        budgets,
        metrics,
        tracing=tracing,
        fleet=fleet,
        batches=batches,
        batch_book=BatchBook(batches, [w.name for w in config.webhooks if "batch_completed" in w.events]),
    )


def _budget_keeper(config: GatewayConfig, ledger: Ledger, http: aiohttp.ClientSession) -> BudgetKeeper:
    """Budgets, key quotas and alert webhooks, kept in the ledger's database."""
    store = open_budget_store(
        ledger.url, timeout=config.ledger.write_timeout, pool_size=config.ledger.pool_size
    )
    # Cost alerts and batch completions wait in the same outbox.
    webhooks = list(config.webhooks)
    sender = WebhookSender(store, webhooks, http) if webhooks else None
    alerted = [w.name for w in webhooks if "cost_alert" in w.events]
    return BudgetKeeper(config.budgets, config.auth.keys, store, alerted, sender)
